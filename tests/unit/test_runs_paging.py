"""The operator surfaces page through the registry (issue 24, item 4): `GET runs`, the console's runs page and
`ftops status` read one page of runs and say where the next one starts; none of them reads every run."""
from __future__ import annotations

import pytest
from fakes import MemoryPublisher, MemoryRegistry, make_deps, settings_for_tests
from test_console import request, run_summary, serve

from ftops_cli.status import collect, render_table
from shared.azure.access import Caller
from shared.operator import api
from shared.store.registry import RunRecord

READER = Caller(oid="oid-reader", tenant="t", name="Reader", roles=frozenset({"Reader"}))


class PagedOnly(MemoryRegistry):
    """A registry that refuses to be read whole: what these surfaces may do with 10,000 runs."""

    def list_runs(self) -> list[RunRecord]:
        raise AssertionError("every run was read")


def _deps(n: int):
    registry = PagedOnly()
    for i in reversed(range(n)):
        registry.create_run(RunRecord(run_id=f"run-{i:02d}", source=f"datasets/r{i}.jsonl"), actor="test")
    return make_deps(settings_for_tests(), registry=registry, publisher=MemoryPublisher())


def test_get_runs_answers_one_page_at_a_time_and_the_pages_cover_every_run_once() -> None:
    deps = _deps(7)
    seen, after, pages = [], None, 0
    while True:
        answer = api.list_runs(READER, {"limit": "3", **({"after": after} if after else {})}, b"", deps)
        assert answer.status == 200 and len(answer.body["runs"]) <= 3
        seen += [r["run_id"] for r in answer.body["runs"]]
        pages += 1
        after = answer.body["next"]
        if after is None:
            break
    assert seen == [f"run-{i:02d}" for i in range(7)] and pages == 3


@pytest.mark.parametrize("limit", ["0", "1001", "ten"])
def test_a_page_size_out_of_range_is_a_bad_request(limit: str) -> None:
    with pytest.raises(api._BadRequest, match="limit"):
        api.list_runs(READER, {"limit": limit}, b"", _deps(1))


def test_ftops_status_shows_one_page_and_how_to_get_the_next() -> None:
    view = collect(_deps(5), limit=2)
    assert [r["run_id"] for r in view["runs"]] == ["run-00", "run-01"] and view["next"] == "run-01"
    assert "more runs: ftops status --after-run run-01" in render_table(view)
    last = collect(_deps(5), limit=2, after="run-03")
    assert [r["run_id"] for r in last["runs"]] == ["run-04"] and last["next"] is None


def test_the_console_asks_for_one_page_and_links_the_next_keeping_the_filters() -> None:
    runs = [run_summary("r1", "training"), run_summary("r2", "training")]
    answer = serve("runs", request("/", query={"after": "r0", "group": "active"}),
                   list_runs=(200, {"runs": runs, "next": "r2"}))
    page = answer.body.decode()
    from test_console import FakeApi
    assert FakeApi.calls[0][:2] == ("list_runs", {"limit": "50", "after": "r0"})
    assert "?after=r2&amp;group=active" in page and 'name="after" value="r0"' in page
