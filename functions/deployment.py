"""Service Bus trigger: deploy a run's model to every spoke of one environment."""
import azure.functions as func
from azurefunctions.extensions.bindings import servicebus

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="message", queue_name="%DEPLOY_QUEUE%", connection="ServiceBusConnection",
                              auto_complete_messages=False)
def deployment(message: servicebus.ServiceBusReceivedMessage, actions: servicebus.ServiceBusMessageActions) -> None:
    from shared.app.bootstrap import get_deps  # at the first message, not when the app loads (cold start)
    from shared.app.settlement import settle
    from shared.stages.deployment import handle_deploy
    settle(message, actions, lambda event, request: handle_deploy(request, get_deps()), accepts="ftops.stage.deploy")
