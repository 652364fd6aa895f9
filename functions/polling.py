"""Timer: follow every fine-tuning job that is not finished yet."""
import logging

import azure.functions as func

from shared.app.bootstrap import get_deps
from shared.stages.polling import poll_tick

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%POLL_SCHEDULE%", run_on_startup=False, use_monitor=True)
def polling(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("poll tick is past due; running it now")
    poll_tick(get_deps())
