"""Timer: follow every fine-tuning job that is not finished yet."""
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%POLL_SCHEDULE%", run_on_startup=False, use_monitor=True)
def polling(timer: func.TimerRequest) -> None:
    from shared.app.bootstrap import get_deps  # at the first tick, not when the app loads (cold start)
    from shared.stages.polling import poll_tick
    if timer.past_due:
        log.info("poll tick is past due; running it now")
    poll_tick(get_deps())
