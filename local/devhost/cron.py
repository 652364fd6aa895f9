"""NCRONTAB schedules: the parser lives in shared.run.ncrontab (the keep-alive checks its own schedule with it)."""
from shared.run.ncrontab import CronError, Schedule

__all__ = ["CronError", "Schedule"]
