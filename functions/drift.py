"""Timer: the drift watch — what each environment serves, re-scored on its held-out data (off unless an
environment's harvest policy sets `drift_examples`)."""
import azure.functions as func

from shared.app.bootstrap import get_deps
from shared.stages.drift import handle_drift_tick

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%DRIFT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def drift(timer: func.TimerRequest) -> None:
    handle_drift_tick(get_deps())
