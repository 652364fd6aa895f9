"""The ports are what handlers may call: the Azure implementation and the in-memory fake of each must offer
every call of its port with the same parameters, or a handler that works in the unit tests fails in Azure
(or the other way round). Nothing type-checks the Protocols at run time; this does, by signature."""
import inspect

import pytest

from shared.app import ports
from shared.app.bootstrap import SystemClock, _OpenAIChat
from shared.azure.arm_deployments import ArmDeployments
from shared.azure.hub import Hub
from shared.azure.spokes import Spokes
from shared.store.registry import Registry
from tests.unit.fakes import FixedClock, MemoryRegistry, ScriptedChat

PAIRS = [
    (ports.Registry, Registry), (ports.Registry, MemoryRegistry),
    (ports.Hub, Hub),
    (ports.ArmDeployments, ArmDeployments),
    (ports.Spokes, Spokes),
    (ports.Chat, _OpenAIChat), (ports.Chat, ScriptedChat),
    (ports.Clock, SystemClock), (ports.Clock, FixedClock),
]


def calls(port: type) -> list[str]:
    return [n for n, v in vars(port).items() if callable(v) and not n.startswith("_")]


def parameters(fn: object) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]   # type: ignore[arg-type]


@pytest.mark.parametrize(("port", "impl"), PAIRS, ids=[f"{p.__name__}-{i.__name__}" for p, i in PAIRS])
def test_every_call_of_a_port_is_offered_with_the_same_parameters(port: type, impl: type) -> None:
    assert calls(port), f"{port.__name__} lists no call"
    for name in calls(port):
        offered = getattr(impl, name, None)
        assert offered is not None, f"{impl.__name__} lacks {port.__name__}.{name}"
        assert parameters(offered) == parameters(getattr(port, name)), f"{impl.__name__}.{name}"
