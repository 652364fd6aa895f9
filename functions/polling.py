"""Timer: follow every fine-tuning job that is not finished yet. Queue: poll one job now (a hub webhook said
it ended; functions/webhooks.py), with the same per-job code."""
import logging
from typing import Any

import azure.functions as func
from azurefunctions.extensions.bindings import servicebus

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%POLL_SCHEDULE%", run_on_startup=False, use_monitor=True)
def polling(timer: func.TimerRequest) -> None:
    from shared.app.bootstrap import get_deps  # at the first tick, not when the app loads (cold start)
    from shared.stages.polling import poll_tick
    if timer.past_due:
        log.info("poll tick is past due; running it now")
    poll_tick(get_deps())


@bp.service_bus_queue_trigger(arg_name="message", queue_name="%POLL_QUEUE%", connection="ServiceBusConnection",
                              auto_complete_messages=False)
def poll_job(message: servicebus.ServiceBusReceivedMessage, actions: servicebus.ServiceBusMessageActions) -> None:
    from shared.app.bootstrap import get_deps
    from shared.app.settlement import settle
    from shared.stages.polling import handle_poll

    def poll_one(event: Any, request: Any) -> None:   # settle parsed it: an ftops.stage.poll PollRequest
        handle_poll(request, get_deps())
    settle(message, actions, poll_one, accepts="ftops.stage.poll")
