"""procella.state.text_resources: resources kept as text; a journal's base read so."""

from __future__ import annotations

import json
from typing import Any

import pytest

from procella.state import text_resources
from procella.state.journal import Replayer, ReplayError
from procella.state.text_resources import TextResource, base_digests, compact_json, read_deployment

Json = dict[str, Any]

P = "urn:pulumi:dev::proj::"


def res(name: str, **members: Any) -> Json:
    return {"urn": f"{P}aws:s3:Bucket::{name}", "custom": True, "type": "aws:s3:Bucket", **members}


def text_of(deployment: Json, **wrapper: Any) -> bytes:
    return json.dumps({"version": 3, **wrapper, "deployment": deployment}).encode()


def compact(deployment: Json) -> bytes:
    return compact_json({"version": 3, "deployment": deployment})


def plain(deployment: Json | None) -> Json | None:
    """``deployment`` as plain JSON (its TextResources parsed)."""
    if deployment is None:
        return None
    resources = [
        r.value() if isinstance(r, TextResource) else r for r in deployment.get("resources", ())
    ]
    return {**deployment, "resources": resources} if "resources" in deployment else deployment


STATE: Json = {
    "manifest": {"time": "2026-01-01T00:00:00Z", "magic": "", "version": "3.276.0"},
    "secrets_providers": {"type": "service", "state": {"url": "https://example.test"}},
    "resources": [res("a", outputs={"v": 1}), res("b", parent=f"{P}x::p", taint=True)],
    "metadata": {},
}


def test_resources_are_kept_as_their_compact_text() -> None:
    deployment = read_deployment(compact(STATE))
    assert deployment is not None
    kept = deployment["resources"]
    assert [r.text for r in kept] == [compact_json(r) for r in STATE["resources"]]
    assert kept[1]["urn"] == STATE["resources"][1]["urn"]
    assert kept[1].get("taint") is True and "parent" in kept[1]
    assert kept[0].get("parent") is None and "parent" not in kept[0]
    assert kept[0].value() == STATE["resources"][0]
    assert {k: v for k, v in deployment.items() if k != "resources"} == {
        k: v for k, v in STATE.items() if k != "resources"
    }


def test_a_member_replay_does_not_read_is_a_bug_not_none() -> None:
    (first, _) = read_deployment(compact(STATE))["resources"]  # type: ignore[index]
    with pytest.raises(KeyError, match="outputs"):
        first.get("outputs")
    with pytest.raises(KeyError):
        first["id"]


def test_go_escapes_are_kept_as_compact_json_writes_them() -> None:
    # Go's encoder writes '<' as \u003c and puts spaces nowhere; json.dumps here writes
    # spaces after separators: both are read and kept in the one compact form.
    go = compact(STATE).replace(b'"v":1', b'"v":"\\u003cb\\u003e"')
    deployment = read_deployment(go)
    assert deployment is not None
    assert deployment["resources"][0].value()["outputs"] == {"v": "<b>"}
    assert b"<b>" in deployment["resources"][0].text
    spaced = read_deployment(text_of(STATE))
    assert [r.text for r in spaced["resources"]] == [compact_json(r) for r in STATE["resources"]]  # type: ignore[index]


@pytest.mark.parametrize(
    "state",
    [
        # A nested object that looks like a resource start: the cut is wrong, the text is
        # read whole.
        {**STATE, "resources": [res("a", outputs={"l": [1, {"urn": "x"}, {"urn": "y"}]})]},
        # The first '"resources":[' is not the deployment's.
        {"secrets_providers": {"type": "t", "state": {"resources": [{"urn": "q"}]}}, **STATE},
        # The CLI's delta writer's key for pending operations: read under the CLI's.
        {**STATE, "pendingOperations": [{"resource": res("p"), "type": "creating"}]},
        # No resources at all.
        {"manifest": STATE["manifest"], "metadata": {}},
        {**STATE, "resources": []},
    ],
    ids=["nested-urn", "resources-elsewhere", "delta-pending-key", "none", "empty"],
)
def test_any_text_reads_as_its_whole_parse_would(state: Json) -> None:
    for text in (compact(state), text_of(state)):
        expected = json.loads(text)["deployment"]
        if "pendingOperations" in expected:
            expected["pending_operations"] = expected.pop("pendingOperations")
        assert plain(read_deployment(text)) == expected
        parsed = [compact_json(r) for r in expected.get("resources") or ()]
        assert base_digests(text) == [text_resources.resource_digest(json.loads(r)) for r in parsed]


def test_a_wrong_cut_is_found_before_anything_is_used() -> None:
    nested = res("a", outputs={"l": [{"urn": "x"}, {"urn": "y"}]})
    state = {**STATE, "resources": [nested, res("b")]}
    text = compact(state)
    assert text_resources._split(text) is not None  # cut, then found wrong when parsed
    assert plain(read_deployment(text)) == state


def test_a_text_without_a_deployment() -> None:
    assert read_deployment(b'{"version":3}') is None
    assert read_deployment(b'{"version":3,"deployment":[1]}') is None
    with pytest.raises(ValueError):
        read_deployment(b"[1]")


def test_an_element_that_is_not_a_resource_is_left_for_the_replayer_to_refuse() -> None:
    text = compact({**STATE, "resources": [res("a"), 7]})
    deployment = read_deployment(text)
    assert deployment is not None
    assert deployment["resources"][1] == 7
    with pytest.raises(ReplayError, match=r"resources\[1\]"):
        Replayer(deployment)


def test_a_base_resource_is_checked_like_a_parsed_one() -> None:
    text = compact({**STATE, "resources": [res("a", dependencies="not a list")]})
    with pytest.raises(ReplayError, match="dependencies"):
        Replayer(read_deployment(text))
