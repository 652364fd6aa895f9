"""The configured hub API decides which methods and job actions exist: refused at the keyboard and at
intake, before any upload, job or command (docs/azure-sources.md, "Hub (data plane)")."""
import json

import pytest

from shared.app.settlement import PermanentError
from shared.run.hub_api import SURFACES
from shared.stages.command_checks import check_job_action
from shared.store.registry import RunRecord
from shared.validation.drop import DropFiles, check_drop


def _dpo_drop() -> DropFiles:
    lines = [json.dumps({"input": {"messages": [{"role": "user", "content": f"Say hi to guest {i}."}]},
                         "preferred_output": [{"role": "assistant", "content": f"Hello guest {i}, welcome in."}],
                         "non_preferred_output": [{"role": "assistant", "content": "What."}]})
             for i in range(60)]
    data = ("\n".join(lines) + "\n").encode()
    return DropFiles(start="greetings.jsonl", folder=False, data={"train": lambda: [data]},
                     names={"train": "greetings.jsonl"})


@pytest.mark.parametrize("version, refused", [("2024-10-21", True), ("2025-04-01-preview", False), ("v1", False)])
def test_a_method_the_hub_api_lacks_rejects_the_drop(version: str, refused: bool) -> None:
    checked = check_drop(_dpo_drop(), default_base_model="gpt-4.1-mini", environments=None,
                         hub_api=SURFACES[version])
    codes = [f.code for f in checked.report.errors]
    assert checked.settings is not None and checked.settings.method == "dpo"   # detected from the data
    assert ("method_not_on_hub_api" in codes) is refused
    assert checked.report.valid is not refused
    if refused:
        message = next(f.message for f in checked.report.errors if f.code == "method_not_on_hub_api")
        assert "'dpo'" in message and "HUB_API_VERSION" in message


def test_pause_on_a_hub_api_without_the_path_is_refused_before_sending() -> None:
    run = RunRecord(run_id="r-1", source="datasets/greetings.jsonl", state="training", job_id="ftjob-1")
    with pytest.raises(PermanentError, match="cannot pause job ftjob-1: .*HUB_API_VERSION"):
        check_job_action(run, "pause", SURFACES["2024-10-21"])
    check_job_action(run, "resume", SURFACES["v1"])   # the default surface has it
