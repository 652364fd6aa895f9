"""Keep-alive's margin before Azure's 15-day limit: a schedule that waits too long between ticks, and a
deployment whose last ping is older than the margin (the timer was down), are said out loud."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fakes import FixedClock, make_deps

from shared.stages.keepalive import longest_gap, schedule_warnings, stale_ping_warnings
from shared.store.registry import DeploymentRecord


def test_the_schedules_longest_wait_is_measured() -> None:
    assert longest_gap("0 0 3 * * *") == timedelta(days=1)
    assert longest_gap("0 0 0 * * mon") == timedelta(days=7)
    assert longest_gap("0 0 0 1 * *") == timedelta(days=31)


def test_a_schedule_leaving_less_than_the_margin_is_warned_about() -> None:
    assert schedule_warnings("0 0 3 * * *") == []                  # daily: 14 days to spare
    assert schedule_warnings("0 0 0 */12 * *") == []               # 1st, 13th, 25th: 12 days apart at most
    assert schedule_warnings("0 0 0 */14 * *") != []               # 1st, 15th, 29th: 14 days apart
    warning = schedule_warnings("0 0 0 1 * *")[0]                   # monthly: Azure deletes first
    assert "31.0 days" in warning and "15 days" in warning and "every 12 days" in warning
    assert "cannot be checked" in schedule_warnings("every day")[0]
    assert schedule_warnings(None) == []


def test_a_deployment_unpinged_for_longer_than_the_margin_is_warned_about() -> None:
    now = datetime(2026, 5, 20, tzinfo=UTC)

    def slot(days: float, account: str) -> DeploymentRecord:
        return DeploymentRecord(environment="prod", account=account, deployment="bot", region="eastus",
                                subscription="s", resource_group="rg", run_id=f"run-{account}", model="m",
                                last_ping=(now - timedelta(days=days)).isoformat())
    deps = make_deps(clock=FixedClock(now))
    warnings = stale_ping_warnings(deps, [slot(1, "fresh"), slot(10, "stale")])
    assert len(warnings) == 1 and "prod|stale|bot" in warnings[0] and "10.0 days ago" in warnings[0]
    assert "about 5.0 days" in warnings[0]
    assert [(e.type, e.subject, e.data["days_left"]) for _, e in deps.publisher.sent] == [
        ("ftops.run.keepalive_at_risk", "run-stale", 5.0)]
