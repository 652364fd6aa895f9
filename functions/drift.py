"""Timer: the drift watch — what each environment serves, re-scored on its held-out data and on fresh
production exchanges (off unless an environment's harvest policy sets `drift_examples`)."""
import azure.functions as func

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%DRIFT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def drift(timer: func.TimerRequest) -> None:
    from shared.app.bootstrap import get_deps  # at the first tick, not when the app loads (cold start)
    from shared.stages.drift import handle_drift_tick
    handle_drift_tick(get_deps())
