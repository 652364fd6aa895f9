"""The dev host's NCRONTAB parser (no I/O: runs with the unit tests)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from local.devhost.cron import CronError, Schedule

T0 = datetime(2025, 3, 14, 10, 29, 58, 500000, tzinfo=UTC)   # a Friday


@pytest.mark.parametrize(("expression", "expected"), [
    ("*/2 * * * * *", datetime(2025, 3, 14, 10, 30, 0, tzinfo=UTC)),
    ("*/5 * * * * *", datetime(2025, 3, 14, 10, 30, 0, tzinfo=UTC)),
    ("0 */5 * * * *", datetime(2025, 3, 14, 10, 30, 0, tzinfo=UTC)),
    ("30 29 10 * * *", datetime(2025, 3, 15, 10, 29, 30, tzinfo=UTC)),       # today's already passed
    ("0 0 9-17 * * Mon-Fri", datetime(2025, 3, 14, 11, 0, 0, tzinfo=UTC)),
    ("0 0 0 * * 0", datetime(2025, 3, 16, 0, 0, 0, tzinfo=UTC)),               # Sunday
    ("0 0 0 * * 7", datetime(2025, 3, 16, 0, 0, 0, tzinfo=UTC)),               # 7 is Sunday too
    ("0 0 12 1 jan,jul *", datetime(2025, 7, 1, 12, 0, 0, tzinfo=UTC)),
    ("15,45 * * * * *", datetime(2025, 3, 14, 10, 30, 15, tzinfo=UTC)),
    ("0 0 0 29 2 *", datetime(2028, 2, 29, 0, 0, 0, tzinfo=UTC)),              # the next leap day
])
def test_next_occurrence(expression: str, expected: datetime) -> None:
    assert Schedule.parse(expression).next_after(T0) == expected


def test_occurrences_step_through_a_schedule() -> None:
    s = Schedule.parse("*/20 * * * * *")
    t, seen = T0, []
    for _ in range(4):
        t = s.next_after(t)
        seen.append(t.strftime("%H:%M:%S"))
    assert seen == ["10:30:00", "10:30:20", "10:30:40", "10:31:00"]


@pytest.mark.parametrize(("expression", "fragment"), [
    ("*/2 * * * *", "6 fields"),
    ("61 * * * * *", "second field"),
    ("* * 5-2 * * *", "hour field"),
    ("* * * * foo *", "month field"),
    ("*/0 * * * * *", "step"),
])
def test_bad_schedules_name_the_field(expression: str, fragment: str) -> None:
    with pytest.raises(CronError, match=fragment):
        Schedule.parse(expression)


def test_a_schedule_that_never_fires_says_so() -> None:
    with pytest.raises(CronError, match="no occurrence"):
        Schedule.parse("0 0 0 30 2 *").next_after(T0)
