"""Timer: a real chat completion to every active deployment, well inside Azure's 15-day inactivity limit."""
import azure.functions as func

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%KEEPALIVE_SCHEDULE%", run_on_startup=False, use_monitor=True)
def keepalive(timer: func.TimerRequest) -> None:
    from shared.app.bootstrap import get_deps  # at the first tick, not when the app loads (cold start)
    from shared.stages.keepalive import keepalive_tick
    keepalive_tick(get_deps())
