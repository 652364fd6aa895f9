"""Stored completions in the emulator, driven through the openai SDK as Learn shows them: `store=True` with
`metadata` on a chat completion, then the v1 list (filters, order, pagination), a completion's messages,
delete; and what Azure refuses."""
from __future__ import annotations

from typing import Any

import openai
import pytest
from test_emulator import aoai, arm, deployment, emulator, v1  # noqa: F401 - the module's emulator fixture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(emulator: Any) -> str:  # noqa: F811
    arm(emulator, "tenant-a", "sub-dev").deployments.begin_create_or_update(
        "rg-dev", "dev-east", "support-bot", deployment("gpt-4.1-mini")).result()
    return "support-bot"


def _ask(client: openai.OpenAI, name: str, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=name, messages=[{"role": "user", "content": text}], **kwargs)


def test_stored_completions_are_listed_filtered_paged_and_their_messages_read(emulator: Any, served: str) -> None:  # noqa: F811
    client = v1(emulator, "dev-east")
    kept = [_ask(client, served, f"question {i}", store=True, metadata={"app": "support", "n": str(i)})
            for i in range(5)]
    _ask(client, served, "not stored")
    _ask(client, served, "other app", store=True, metadata={"app": "billing"})
    listed = client.chat.completions.list(metadata={"app": "support"}, limit=2, order="asc")
    assert [c.id for c in listed.data] == [k.id for k in kept[:2]] and listed.has_more
    everything = [c.id for c in client.chat.completions.list(metadata={"app": "support"}, limit=2)]   # SDK pages
    assert everything == [k.id for k in kept]
    newest = client.chat.completions.list(metadata={"app": "support"}, order="desc", limit=1).data[0]
    assert newest.id == kept[-1].id and newest.metadata == {"app": "support", "n": "4"}
    messages = client.chat.completions.messages.list(kept[2].id).data
    assert [(m.role, m.content) for m in messages] == [("user", "question 2")]
    assert client.chat.completions.retrieve(kept[2].id).choices[0].message.content == kept[2].choices[0].message.content
    assert client.chat.completions.delete(kept[0].id).deleted
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(kept[0].id)
    # another resource's stored completions are its own
    assert client.chat.completions.list(metadata={"app": "billing"}).data[0].id not in {k.id for k in kept}
    assert v1(emulator, "quota-spoke").chat.completions.list().data == []


@pytest.mark.parametrize("kwargs, param", [
    ({"store": True, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"store": True, "metadata": {"k" * 65: "v"}}, "metadata"),
    ({"store": True, "metadata": {"k": "v" * 513}}, "metadata"),
    ({"store": True, "metadata": {"k": 1}}, "metadata"),
])
def test_metadata_beyond_the_documented_bounds_is_refused(emulator: Any, served: str, kwargs: dict[str, Any],  # noqa: F811
                                                         param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _ask(v1(emulator, "dev-east"), served, "q", **kwargs)
    assert refused.value.param == param


def test_store_on_an_api_version_without_stored_completions_is_an_unrecognized_argument(emulator: Any,  # noqa: F811
                                                                                      served: str) -> None:
    ga = aoai(emulator, "dev-east", api_version="2024-10-21")
    with pytest.raises(openai.BadRequestError) as refused:
        ga.chat.completions.create(model=served, messages=[{"role": "user", "content": "q"}], store=True)
    assert "Unrecognized request argument supplied: store" in str(refused.value)
    preview = aoai(emulator, "dev-east", api_version="2025-04-01-preview")
    stored = preview.chat.completions.create(model=served, messages=[{"role": "user", "content": "kept"}],
                                             store=True, metadata={"via": "preview"})
    assert v1(emulator, "dev-east").chat.completions.list(metadata={"via": "preview"}).data[0].id == stored.id


def test_listing_refuses_an_unknown_order_and_a_limit_out_of_range(emulator: Any, served: str) -> None:  # noqa: F811
    client = v1(emulator, "dev-east")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.list(order="sideways")   # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.list(limit=101)
