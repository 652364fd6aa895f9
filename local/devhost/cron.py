"""NCRONTAB schedules: the parser lives in shared.ncrontab (the keep-alive checks its own schedule with it)."""
from shared.ncrontab import CronError, Schedule

__all__ = ["CronError", "Schedule"]
