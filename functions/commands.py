"""Service Bus trigger: commands from other systems (train, cancel, pause, resume, retrain); operator actions
(approve, reject, rollback, retire) are dead-lettered here: they go through the operator API."""
import azure.functions as func
from azurefunctions.extensions.bindings import servicebus

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="message", queue_name="%COMMANDS_QUEUE%",
                              connection="ServiceBusConnection", auto_complete_messages=False)
def commands(message: servicebus.ServiceBusReceivedMessage, actions: servicebus.ServiceBusMessageActions) -> None:
    from shared.app.bootstrap import get_deps  # at the first message, not when the app loads (cold start)
    from shared.app.settlement import settle
    from shared.stages.commands import handle_command
    settle(message, actions, lambda event, command: handle_command(event, command, get_deps()),
           accepts="ftops.command.")
