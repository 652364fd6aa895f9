"""Where a run may go: environments a prefix of the configured order; gated runs name an owner object id."""
from __future__ import annotations

import json

import pytest

from local.settings import DEMO_SPOKES
from shared.run_rules import effective_environments, environment_problems
from shared.run_settings import parse_run_settings
from shared.topology import parse_topology

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
