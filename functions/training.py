"""Service Bus trigger: create the fine-tuning job on the hub for an accepted run."""
import azure.functions as func
from azurefunctions.extensions.bindings import servicebus

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="message", queue_name="%TRAIN_QUEUE%", connection="ServiceBusConnection",
                              auto_complete_messages=False)
def training(message: servicebus.ServiceBusReceivedMessage, actions: servicebus.ServiceBusMessageActions) -> None:
    from shared.app.bootstrap import get_deps  # at the first message, not when the app loads (cold start)
    from shared.app.settlement import settle
    from shared.stages.training import handle_train
    settle(message, actions, lambda event, request: handle_train(request, get_deps()), accepts="ftops.stage.train")
