"""Service Bus trigger: evaluate a trained model against the base model on held-out data."""
import azure.functions as func
from azurefunctions.extensions.bindings import servicebus

bp = func.Blueprint()


@bp.service_bus_queue_trigger(arg_name="message", queue_name="%EVALUATE_QUEUE%",
                              connection="ServiceBusConnection", auto_complete_messages=False)
def evaluation(message: servicebus.ServiceBusReceivedMessage, actions: servicebus.ServiceBusMessageActions) -> None:
    from shared.app.bootstrap import get_deps  # at the first message, not when the app loads (cold start)
    from shared.app.settlement import settle
    from shared.stages.evaluation import handle_evaluate
    settle(message, actions, lambda event, request: handle_evaluate(request, get_deps()),
           accepts="ftops.stage.evaluate")
