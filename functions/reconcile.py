"""Timer: start the drops whose BlobCreated event never arrived, report runs whose drop vanished."""
import azure.functions as func

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%RECONCILE_SCHEDULE%", run_on_startup=False, use_monitor=True)
def reconcile(timer: func.TimerRequest) -> None:
    from shared.app.bootstrap import get_deps  # at the first tick, not when the app loads (cold start)
    from shared.stages.reconcile import reconcile_tick
    reconcile_tick(get_deps())
