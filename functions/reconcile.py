"""Timer: start the drops whose BlobCreated event never arrived, report runs whose drop vanished."""
import azure.functions as func

from shared.app.bootstrap import get_deps
from shared.stages.reconcile import reconcile_tick

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%RECONCILE_SCHEDULE%", run_on_startup=False, use_monitor=True)
def reconcile(timer: func.TimerRequest) -> None:
    reconcile_tick(get_deps())
