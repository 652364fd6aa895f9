"""The smallest app with the same functions and bindings as ftops (every trigger, route, setting and binding
extension), each doing nothing: what `import function_app` costs before any of our code. `make bench`
(benchmarks/coldstart.py) times ftops's import against this one; tests/unit/test_function_app.py holds the
two apps' bindings equal, so a trigger added to ftops and not here fails a test."""
import logging

import azure.functions as func
from azurefunctions.extensions.bindings import blob, servicebus

logging.getLogger("azure").setLevel(logging.WARNING)
app = func.FunctionApp()
ANONYMOUS = func.AuthLevel.ANONYMOUS


@app.blob_trigger(arg_name="client", path="%DATASETS_CONTAINER%/{name}", connection="DatasetStorage",
                  source=func.BlobSource.EVENT_GRID)
def intake(client: blob.BlobClient) -> None:
    pass


def _queue(name: str, setting: str) -> None:
    def handler(message: servicebus.ServiceBusReceivedMessage, actions: servicebus.ServiceBusMessageActions) -> None:
        pass
    handler.__name__ = name
    app.service_bus_queue_trigger(arg_name="message", queue_name=f"%{setting}%", connection="ServiceBusConnection",
                                  auto_complete_messages=False)(handler)


for _name, _setting in (("training", "TRAIN_QUEUE"), ("evaluation", "EVALUATE_QUEUE"), ("deployment", "DEPLOY_QUEUE"),
                        ("commands", "COMMANDS_QUEUE"), ("poll_job", "POLL_QUEUE")):
    _queue(_name, _setting)


def _timer(name: str, setting: str) -> None:
    def handler(timer: func.TimerRequest) -> None:
        pass
    handler.__name__ = name
    app.timer_trigger(arg_name="timer", schedule=f"%{setting}%", run_on_startup=False, use_monitor=True)(handler)


_timer("polling", "POLL_SCHEDULE")
_timer("keepalive", "KEEPALIVE_SCHEDULE")
_timer("harvest", "HARVEST_SCHEDULE")
_timer("drift", "DRIFT_SCHEDULE")
_timer("outbox", "OUTBOX_SCHEDULE")
_timer("reconcile", "RECONCILE_SCHEDULE")


def _http(name: str, route: str, methods: list[str]) -> None:
    def handler(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("")
    handler.__name__ = name
    app.route(route=route, methods=methods, auth_level=ANONYMOUS)(handler)


for _name, _route, _methods in (
        ("operator_list_runs", "runs", ["GET"]), ("operator_start_run", "runs", ["POST"]),
        ("operator_get_run", "runs/{run_id}", ["GET"]),
        ("operator_list_deployments", "deployments", ["GET"]),
        ("operator_history", "history/{environment}", ["GET"]),
        ("operator_run_command", "runs/{run_id}/{action}", ["POST"]),
        ("operator_environment_command", "environments/{environment}/{action}", ["POST"]),
        ("console_runs", "console", ["GET"]), ("console_sign_in", "console/signin", ["GET", "POST"]),
        ("console_sign_in_entra", "console/signin/entra", ["GET"]),
        ("console_sign_in_callback", "console/signin/callback", ["GET"]),
        ("console_sign_out", "console/signout", ["POST"]), ("console_deployments", "console/deployments", ["GET"]),
        ("console_asset", "console/assets/{name}", ["GET"]), ("console_run", "console/runs/{run_id}", ["GET"]),
        ("console_report", "console/runs/{run_id}/reports/{name}", ["GET"]),
        ("console_act", "console/runs/{run_id}/{action}", ["POST"]),
        ("console_rollback", "console/environments/{environment}/rollback", ["POST"]),
        ("hub_webhook", "hub/webhooks", ["POST"])):
    _http(_name, _route, _methods)
