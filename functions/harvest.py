"""Timer: the flywheel's harvest — production exchanges of each environment with a harvest policy become the
next run folder in the datasets container (off unless an environment configures it)."""
import azure.functions as func

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%HARVEST_SCHEDULE%", run_on_startup=False, use_monitor=True)
def harvest(timer: func.TimerRequest) -> None:
    from shared.app.bootstrap import get_deps  # at the first tick, not when the app loads (cold start)
    from shared.stages.harvest import handle_harvest_tick
    handle_harvest_tick(get_deps())
