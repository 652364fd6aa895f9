"""NCRONTAB schedules as the Functions timer trigger reads them: six fields with seconds, always UTC.

`{second} {minute} {hour} {day} {month} {day-of-week}`; each field takes `*`, `*/n`, `a-b`, `a-b/n`,
numbers and comma lists (months and weekdays also by three-letter name). Like NCrontab, day and weekday
must both match (an AND, unlike classic cron's OR) — with `*` in one of them that is the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, low, high, aliases)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}), ("minute", 0, 59, {}), ("hour", 0, 23, {}),
    ("day", 1, 31, {}), ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _DAYS),
)


class CronError(ValueError):
    """The schedule cannot be parsed; the message names the schedule and the field at fault."""


@dataclass(frozen=True)
class Schedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]   # 0 = Sunday (7 is folded into 0)

    @staticmethod
    def parse(expression: str) -> Schedule:
        parts = expression.split()
        if len(parts) != 6:
            raise CronError(f"schedule {expression!r}: NCRONTAB needs 6 fields (with seconds), got {len(parts)}")
        sets = [_parse_field(expression, text, *spec) for text, spec in zip(parts, _FIELDS)]
        weekdays = frozenset(d % 7 for d in sets[5])
        seconds, minutes, hours, days, months = sets[:5]
        return Schedule(expression, seconds, minutes, hours, days, months, weekdays)

    def matches(self, t: datetime) -> bool:
        return (t.second in self.seconds and t.minute in self.minutes and t.hour in self.hours
                and t.day in self.days and t.month in self.months and t.isoweekday() % 7 in self.weekdays)

    def next_after(self, t: datetime) -> datetime:
        """The first occurrence strictly after `t` (whole seconds). Jumps by the coarsest field that does
        not match, so a yearly schedule takes a few hundred steps, not millions."""
        t = t.replace(microsecond=0) + timedelta(seconds=1)
        limit = t + timedelta(days=366 * 5)     # e.g. "0 0 0 30 2 *" never happens: say so, don't spin
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            elif t.day not in self.days or t.isoweekday() % 7 not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise CronError(f"schedule {self.expression!r} has no occurrence in the next five years")


def _parse_field(expression: str, text: str, name: str, low: int, high: int, aliases: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        try:
            values.update(_parse_item(item, low, high, aliases))
        except ValueError as exc:
            raise CronError(f"schedule {expression!r}: {name} field {text!r}: {exc}") from None
    return frozenset(values)


def _parse_item(item: str, low: int, high: int, aliases: dict[str, int]) -> range:
    base, _, step_text = item.partition("/")
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ValueError("step must be at least 1")
    if base == "*":
        start, end = low, high
    elif "-" in base:
        a, b = base.split("-", 1)
        start, end = _value(a, aliases), _value(b, aliases)
    else:
        start = _value(base, aliases)
        end = high if step_text else start     # "5/10" means from 5 every 10, as in cron
    if not (low <= start <= high and low <= end <= high) or start > end:
        raise ValueError(f"{item!r} is outside {low}-{high}")
    return range(start, end + 1, step)


def _value(text: str, aliases: dict[str, int]) -> int:
    key = text.strip().lower()
    if key in aliases:
        return aliases[key]
    if not key.isdigit():
        raise ValueError(f"{text!r} is not a number")
    return int(key)
