"""Timer: send what crashes left in the outbox (shared.store.outbox.sweep), on its own schedule: a hung hub
holding the poll tick never holds a run's messages back."""
import azure.functions as func

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%OUTBOX_SCHEDULE%", run_on_startup=False, use_monitor=True)
def outbox(timer: func.TimerRequest) -> None:
    from shared.app.bootstrap import get_deps  # at the first tick, not when the app loads (cold start)
    from shared.store.outbox import sweep
    sweep(get_deps())
