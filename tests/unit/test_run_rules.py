"""Where a run may go: environments a prefix of the configured order; gated runs name an owner object id."""
from __future__ import annotations

import json

import pytest

from local.settings import DEMO_SPOKES
from shared.run.rules import effective_environments, environment_problems
from shared.run.settings import parse_run_settings
from shared.run.topology import parse_topology

TOPOLOGY = parse_topology(json.loads(DEMO_SPOKES.read_text()), hub_tenant="tenant-contoso")
OWNER = "6f1c2d3e-0000-4000-8000-0000000000b2"


def problems(**settings: object) -> list[str]:
    return environment_problems(parse_run_settings(settings), TOPOLOGY)


@pytest.mark.parametrize("environments", [["dev"], ["dev", "test"], ["dev", "test", "prod"]])
def test_every_prefix_of_the_configured_order_is_accepted(environments: list[str]) -> None:
    assert problems(environments=environments, owner=OWNER) == []


@pytest.mark.parametrize("environments", [["dev", "prod"], ["prod"], ["test"], ["test", "dev"], []])
def test_gaps_reorderings_and_late_starts_are_refused_with_the_choices(environments: list[str]) -> None:
    [message] = problems(environments=environments, owner=OWNER)
    assert "must follow the configured order without gaps" in message
    assert "['dev'] or ['dev', 'test'] or ['dev', 'test', 'prod']" in message


def test_an_unknown_environment_is_named() -> None:
    [message] = problems(environments=["dev", "staging"], owner=OWNER)
    assert "staging not configured in SPOKES_CONFIG" in message


def test_a_run_reaching_prod_must_name_its_owner_by_object_id() -> None:
    assert "owner is missing" in problems(environments=["dev", "test", "prod"])[0]
    assert "is not an Entra object id" in problems(environments=["dev", "test", "prod"], owner="ana@contoso.example")[0]
    assert problems(environments=["dev", "test"], owner="ana@contoso.example") == []   # no approval, no four eyes


def test_without_environments_an_owner_goes_everywhere_and_no_owner_stops_before_approval() -> None:
    assert effective_environments(parse_run_settings({"owner": OWNER}), TOPOLOGY) == ["dev", "test", "prod"]
    assert effective_environments(parse_run_settings({}), TOPOLOGY) == ["dev", "test"]
    assert problems() == []


def test_ftops_validate_says_what_intake_says_about_where_a_run_may_go(tmp_path) -> None:
    """The one validation truth: `ftops validate` with the same SPOKES_CONFIG refuses the same run.json."""
    import argparse
    import io
    from pathlib import Path

    from ftops_cli import validate as cli
    sample = Path(__file__).resolve().parents[2] / "samples" / "support-bot.jsonl"
    folder = tmp_path / "skip"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(sample.read_bytes())
    parser = argparse.ArgumentParser(prog="ftops")
    cli.add_parser(parser.add_subparsers(dest="command"))

    def validate(run_json: dict) -> tuple[int, str]:
        (folder / "run.json").write_text(json.dumps(run_json))
        out = io.StringIO()
        code = cli.run(parser.parse_args(["validate", str(folder)]), stdout=out, stderr=io.StringIO(),
                       env={"SPOKES_CONFIG": str(DEMO_SPOKES)})
        return code, out.getvalue()

    code, text = validate({"environments": ["dev", "prod"], "owner": OWNER})
    assert code == 1 and "must follow the configured order without gaps" in text
    code, text = validate({"environments": ["dev", "test", "prod"]})
    assert code == 1 and "owner is missing" in text
    assert validate({"environments": ["dev", "test", "prod"], "owner": OWNER})[0] == 0
