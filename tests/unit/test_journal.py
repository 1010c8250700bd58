"""procella.state.journal: replaying Pulumi journal entries as the CLI's replayer does."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from procella.errors import BadRequest
from procella.state.journal import (
    BASE_RESOURCE,
    JournalEntry,
    Kind,
    Replayer,
    ReplayError,
    check_entry,
    elide_unchanged,
    generate_text,
    make_manifest,
    replay,
    wrapper_text,
)
from procella.state.text_resources import (
    TextResource,
    compact_json,
    read_deployment,
    resource_digest,
)

Json = dict[str, Any]

P = "urn:pulumi:dev::proj::"
STACK = P + "pulumi:pulumi:Stack::proj-dev"
PROVIDER = P + "pulumi:providers:aws::default"
MANIFEST = make_manifest("2026-03-01T12:00:00.123Z", "3.276.0")
SERVICE = {"type": "service", "state": {"url": "https://api.example.test"}}


def urn(name: str, type_: str = "aws:s3:Bucket") -> str:
    return f"{P}{type_}::{name}"


def res(name: str, **members: Any) -> Json:
    """A custom resource ``name``; ``members`` add to or override its members."""
    out: Json = {"urn": urn(name), "custom": True, "type": "aws:s3:Bucket"}
    out.update(members)
    return out


def base_of(*resources: Json, **members: Any) -> Json:
    base: Json = {"manifest": make_manifest("2026-01-01T00:00:00Z", "3.259.0")}
    base["secrets_providers"] = SERVICE
    if resources:
        base["resources"] = list(resources)
    base["metadata"] = {}
    base.update(members)
    return base


@pytest.fixture(autouse=True, params=["parsed", "text"])
def base_read(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scenario twice: the base given parsed, and read from its text."""
    monkeypatch.setattr(Journal, "from_text", request.param == "text")


class Journal:
    """Builds wire entries the way the CLI's JournalSnapshotManager does."""

    def __init__(self) -> None:
        self.entries: list[Json] = []

    def add(self, kind: Kind, op: int = 0, **members: Any) -> Journal:
        entry: Json = {"version": 1, "kind": int(kind), "sequenceID": len(self.entries) + 1}
        entry.update(operationID=op, removeOld=None, removeNew=None)
        entry.update(members)
        self.entries.append(entry)
        return self

    def begin(self, op: int, resource: Json | None = None, type_: str = "creating") -> Journal:
        if resource is None:  # a same, refresh or remove-pending-replace step: no operation
            return self.add(Kind.BEGIN, op)
        return self.add(Kind.BEGIN, op, operation={"resource": resource, "type": type_})

    def success(self, op: int, state: Json | None = None, **refs: Any) -> Journal:
        if state is not None:
            refs["state"] = state
        return self.add(Kind.SUCCESS, op, **refs)

    def step(self, op: int, state: Json, type_: str = "creating", **refs: Any) -> Journal:
        return self.begin(op, state, type_).success(op, state, **refs)

    # Set by the ``base_read`` fixture: whether ``generate`` reads the base as the server
    # does (from its stored text, a resource at a time) or is given it parsed.
    from_text = False

    def generate(self, base: Json | None) -> tuple[int, list[str], Json]:
        if base is not None and self.from_text:
            base = read_deployment(wrapper_text(3, [], base))
        replayer = Replayer(base)
        for entry in self.entries:
            replayer.add(entry)
        version, features, deployment = replayer.generate(MANIFEST)
        if self.from_text:  # TextResources in it: compared as the JSON they write
            deployment = json.loads(wrapper_text(version, features, deployment))["deployment"]
        return version, features, deployment

    def deployment(self, base: Json | None) -> Json:
        return self.generate(base)[2]


def kept(got: Json, given: Json) -> bool:
    """Whether replay kept the object ``given`` (byte for byte, when the base went through
    its text and no identity is left to compare)."""
    if Journal.from_text:
        return json.dumps(got) == json.dumps(given)
    return got is given


def names(deployment: Json) -> list[str]:
    return [r["urn"].rsplit("::", 1)[1] for r in deployment.get("resources", [])]


def by_name(deployment: Json, name: str) -> Json:
    found: list[Json] = [r for r in deployment["resources"] if r["urn"].endswith("::" + name)]
    assert len(found) == 1
    return found[0]


# --- The kinds, one by one -----------------------------------------------------------------


def test_first_update_of_a_new_stack() -> None:
    stack = {"urn": STACK, "custom": False, "type": "pulumi:pulumi:Stack"}
    j = Journal().add(Kind.SECRETS_MANAGER, secretsProvider=SERVICE)
    j.step(1, stack).step(2, res("a", id="a-1"))
    version, features, deployment = j.generate(None)
    assert (version, features) == (3, [])
    assert deployment == {
        "manifest": MANIFEST,
        "secrets_providers": SERVICE,
        "resources": [stack, res("a", id="a-1")],
        "metadata": {},
    }
    assert list(deployment) == ["manifest", "secrets_providers", "resources", "metadata"]


def test_an_empty_journal_keeps_the_base() -> None:
    base = base_of(res("a"), res("b"))
    assert Journal().deployment(base) == {**base, "manifest": MANIFEST}


def test_nothing_at_all_is_an_empty_deployment() -> None:
    assert Journal().generate(None) == (3, [], {"manifest": MANIFEST, "metadata": {}})


def test_update_replaces_the_base_resource_and_new_ones_come_first() -> None:
    base = base_of(res("a"), res("b", id="b-1"), res("c"))
    new_b = res("b", id="b-1", outputs={"v": 2})
    deployment = Journal().step(1, new_b, "updating", removeOld=1).deployment(base)
    assert names(deployment) == ["b", "a", "c"]
    assert deployment["resources"][0] == new_b


def test_delete_of_a_base_resource() -> None:
    base = base_of(res("a"), res("b"))
    j = Journal().begin(1, res("a", delete=True), "deleting").success(1, removeOld=0)
    assert names(j.deployment(base)) == ["b"]


def test_create_then_delete_in_the_same_update() -> None:
    j = Journal().step(1, res("a")).step(2, res("b"))
    j.begin(3, res("a"), "deleting").success(3, removeNew=1)
    assert names(j.deployment(base_of())) == ["b"]


def test_create_before_delete_replacement() -> None:
    old = {"urn": urn("a"), "custom": True, "id": "a-1", "type": "aws:s3:Bucket"}
    new = res("a", id="a-2")
    base = base_of(res("z"), old)
    j = Journal().step(1, new, deleteOld=1)
    midway = j.deployment(base)
    assert [r.get("id") for r in midway["resources"]] == ["a-2", None, "a-1"]
    assert midway["resources"][2] == {**old, "delete": True}
    assert list(midway["resources"][2]) == ["urn", "custom", "delete", "id", "type"]  # as in Go
    assert "delete" not in old  # the caller's object is untouched
    j.begin(2, {**old, "delete": True}, "deleting").success(2, removeOld=1)
    assert [r.get("id") for r in j.deployment(base)["resources"]] == ["a-2", None]


def test_delete_before_replace_marks_and_replaces() -> None:
    old = res("a", id="a-1")
    base = base_of(old, res("b"))
    j = Journal().begin(1, old, "deleting").success(1, pendingReplacementOld=0)
    assert j.deployment(base)["resources"][0] == {**old, "pendingReplacement": True}
    # The replacement's create removes the pending-replacement old resource.
    j.step(2, res("a", id="a-2"), removeOld=0)
    assert [r.get("id") for r in j.deployment(base)["resources"]] == ["a-2", None]


def test_marks_on_resources_created_in_this_update() -> None:
    a, b = res("a"), res("b")
    j = Journal().step(1, a).step(2, b).success(3, deleteNew=1).success(4, pendingReplacementNew=2)
    deployment = j.deployment(None)
    assert deployment["resources"] == [{**a, "delete": True}, {**b, "pendingReplacement": True}]
    assert "delete" not in a and "pendingReplacement" not in b


def test_failure_and_begin_without_operation_leave_no_trace() -> None:
    j = Journal().begin(1, res("a")).add(Kind.FAILURE, 1, state=res("a"))
    j.begin(2)  # a same step that never ended: it has no operation to record
    assert j.deployment(base_of(res("x"))) == {**base_of(res("x")), "manifest": MANIFEST}


def test_refresh_of_base_resources() -> None:
    base = base_of(res("a"), res("b", outputs={"v": 1}), res("c"))
    refreshed = res("b", outputs={"v": 2})
    j = Journal().begin(1).add(Kind.REFRESH_SUCCESS, 1, removeOld=1, state=refreshed)
    j.begin(2).add(Kind.REFRESH_SUCCESS, 2, removeOld=2)  # gone: refresh deletes it
    deployment = j.deployment(base)
    assert names(deployment) == ["a", "b"]  # refreshed in place, not moved to the front
    assert deployment["resources"][1] == refreshed


def test_refresh_of_resources_created_in_this_update() -> None:
    j = Journal().step(1, res("a")).step(2, res("b"))
    j.add(Kind.REFRESH_SUCCESS, 3, removeNew=1, state=res("a", outputs={"v": 9}))
    j.add(Kind.REFRESH_SUCCESS, 4, removeNew=2)
    assert j.deployment(None)["resources"] == [res("a", outputs={"v": 9})]


def test_refresh_replacement_wins_over_marks() -> None:
    base = base_of(res("a"), res("b"))
    j = Journal().success(1, deleteOld=0, pendingReplacementOld=1)
    j.add(Kind.REFRESH_SUCCESS, 2, removeOld=0, state=res("a", outputs={"r": 1}))
    j.add(Kind.OUTPUTS, 3, removeOld=1, state=res("b", outputs={"o": 1}))
    assert j.deployment(base)["resources"] == [
        res("a", outputs={"r": 1}),
        res("b", outputs={"o": 1}),
    ]


def test_outputs_on_old_and_new_resources() -> None:
    base = base_of(res("a"), res("b"))
    j = Journal().step(1, res("n"))
    j.add(Kind.OUTPUTS, 2, removeNew=1, state=res("n", outputs={"x": 1}))
    j.add(Kind.OUTPUTS, 3, removeOld=1, state=res("b", outputs={"y": 2}))
    j.add(Kind.OUTPUTS, 4, removeOld=0)  # without a state: nothing to do
    deployment = j.deployment(base)
    assert deployment["resources"] == [
        res("n", outputs={"x": 1}),
        res("a"),
        res("b", outputs={"y": 2}),
    ]


def test_write_replaces_the_base() -> None:
    snapshot = base_of(res("p"), res("q"), secrets_providers={"type": "passphrase"})
    j = Journal().add(Kind.WRITE, newSnapshot=snapshot)
    j.step(1, res("q", id="q-2"), "updating", removeOld=1)
    deployment = j.deployment(base_of(res("old")))
    assert names(deployment) == ["q", "p"]
    assert deployment["secrets_providers"] == {"type": "passphrase"}


def test_secrets_manager_keeps_the_base_provider_when_it_is_the_same() -> None:
    base = base_of(secrets_providers={"type": "service", "state": {"a": 1, "b": 2}})
    same = {"type": "service", "state": {"a": 1, "b": 2}}
    deployment = Journal().add(Kind.SECRETS_MANAGER, secretsProvider=same).deployment(base)
    assert kept(deployment["secrets_providers"], base["secrets_providers"])
    # Go compares the raw state bytes: another member order is another provider.
    reordered = {"type": "service", "state": {"b": 2, "a": 1}}
    deployment = Journal().add(Kind.SECRETS_MANAGER, secretsProvider=reordered).deployment(base)
    assert kept(deployment["secrets_providers"], reordered)
    other = {"type": "passphrase", "state": {"salt": "s"}}
    deployment = Journal().add(Kind.SECRETS_MANAGER, secretsProvider=other).deployment(base)
    assert kept(deployment["secrets_providers"], other)
    assert base["secrets_providers"] == {"type": "service", "state": {"a": 1, "b": 2}}


def test_secrets_manager_without_state() -> None:
    base = base_of(secrets_providers={"type": "passphrase"})
    with_state = {"type": "passphrase", "state": None}  # raw "null" differs from no state
    deployment = Journal().add(Kind.SECRETS_MANAGER, secretsProvider=with_state).deployment(base)
    assert kept(deployment["secrets_providers"], with_state)
    no_state = {"type": "passphrase"}
    deployment = Journal().add(Kind.SECRETS_MANAGER, secretsProvider=no_state).deployment(base)
    assert kept(deployment["secrets_providers"], base["secrets_providers"])


SNIPPET = {
    "uuid": "6c1",
    "name": "extra",
    "type": "aws:s3:Bucket",
    "code": 'bucket = "x"',
    "descriptor": {"name": "aws"},
    "references": {"logs": urn("logs")},
}


def test_snippets_set_and_cleared() -> None:
    version, features, deployment = Journal().add(Kind.SNIPPETS, snippets=[SNIPPET]).generate(None)
    assert (version, features, deployment["snippets"]) == (4, ["snippets-prototype"], [SNIPPET])
    assert list(deployment)[-2:] == ["metadata", "snippets"]
    j = Journal().add(Kind.SNIPPETS, snippets=None)
    version, features, deployment = j.generate(base_of(snippets=[SNIPPET]))
    assert (version, features, "snippets" in deployment) == (3, [], False)


def test_base_snippets_metadata_and_extensions_are_carried_over() -> None:
    extension = {"name": "terraform-provider", "version": "1.0.0", "value": "e30="}
    base = base_of(
        snippets=[SNIPPET],
        metadata={"integrity_error": {"error": "bad"}, "unknown": 1},
        extensions={"ref1": extension},
    )
    version, features, deployment = Journal().step(1, res("a")).generate(base)
    assert (version, features) == (4, ["snippets-prototype"])
    assert deployment["snippets"] == [SNIPPET]
    assert deployment["metadata"] == {"integrity_error": {"error": "bad"}}
    assert deployment["extensions"] == {"ref1": extension}


def test_extension_parameterize() -> None:
    ext = {"name": "n", "version": "2", "value": "eA=="}
    base_ext = {"name": "base", "version": "1", "value": "eQ=="}
    j = Journal().add(Kind.EXTENSION_PARAMETERIZE, 1, extensionRef="z", extension=ext)
    j.add(Kind.EXTENSION_PARAMETERIZE, 2, extensionRef="b", extension=ext)
    j.step(3, res("a", extensionRef="z"))
    version, features, deployment = j.generate(base_of(extensions={"b": base_ext}))
    assert (version, features) == (4, ["extensionParameterization"])
    # Sorted like Go's map; on the same reference the base's extension wins (maps.Copy).
    assert list(deployment["extensions"].items()) == [("b", base_ext), ("z", ext)]


def test_rebuilt_base_state_starts_over_from_the_state_so_far() -> None:
    base = base_of(res("a"), res("b"), res("c"))
    j = Journal().begin(1).add(Kind.REFRESH_SUCCESS, 1, removeOld=1, isRefresh=True)
    extension = {"name": "e", "version": "1", "value": "eA=="}
    j.add(Kind.EXTENSION_PARAMETERIZE, 2, extensionRef="e", extension=extension)
    j.add(Kind.REBUILT_BASE_STATE)
    # Indexes now refer to the rebuilt base [a, c]: 1 is c.
    j.step(3, res("c", id="c-2"), "updating", removeOld=1)
    deployment = j.deployment(base)
    assert names(deployment) == ["c", "a"]
    assert deployment["extensions"] == {"e": extension}  # kept through the rebuild


def test_rebuilt_base_state_keeps_the_operation_counter() -> None:
    # Go resets the new resources but not the index it hands to the next operation, so
    # an operation after the rebuild points past the list: Go panics, replay ignores it.
    j = Journal().step(1, res("a")).add(Kind.REBUILT_BASE_STATE)
    j.step(2, res("b")).success(3, deleteNew=2).success(4, removeNew=2)
    assert j.deployment(None)["resources"] == [res("b"), res("a")]


def test_incomplete_begins_become_pending_operations() -> None:
    base = base_of(
        res("a"),
        pending_operations=[
            {"resource": res("old-create"), "type": "creating"},
            {"resource": res("old-update"), "type": "updating"},
            {"resource": res("old-delete"), "type": "deleting"},
        ],
    )
    j = Journal().begin(5, res("x"), "creating").begin(3, res("a"), "updating")
    j.begin(4)  # no operation: not pending
    j.begin(6, res("y"), "creating").success(6, res("y"))
    j.begin(7, res("a"), "deleting").add(Kind.FAILURE, 7)
    pending = j.deployment(base)["pending_operations"]
    assert [(op["type"], op["resource"]["urn"]) for op in pending] == [
        ("creating", urn("x")),
        ("updating", urn("a")),
        ("creating", urn("old-create")),  # base creates stay until the user resolves them
    ]


@pytest.mark.parametrize(
    ("members", "feature"),
    [
        ({"refreshBeforeUpdate": True}, "refreshBeforeUpdate"),
        ({"viewOf": urn("v")}, "views"),
        ({"resourceHooks": {"beforeCreate": ["h"]}}, "hooks"),
        ({"taint": True}, "taint"),
        ({"replaceWith": [urn("r")]}, "replaceWith"),
        ({"extensionRef": "e"}, "extensionParameterization"),
        ({"snippetID": "s"}, "snippets-prototype"),
    ],
)
def test_features_from_new_base_and_pending_resources(members: Json, feature: str) -> None:
    resource = res("f", **members)
    from_new = Journal().step(1, resource).generate(None)
    from_base = Journal().generate(base_of(resource))
    from_pending = Journal().begin(1, resource).generate(None)
    for version, features, _ in (from_new, from_base, from_pending):
        assert (version, features) == (4, [feature])
    falsy = {name: type(value)() for name, value in members.items()}  # False, "", [], {}
    assert Journal().step(1, res("f", **falsy)).generate(None)[:2] == (3, [])


def test_byte_string_feature_needs_a_resource() -> None:
    j = Journal().add(Kind.SECRETS_MANAGER, secretsProvider=SERVICE, requiresByteString=True)
    assert j.generate(None)[:2] == (3, [])
    j.step(1, res("a", taint=True))
    assert j.generate(None)[:2] == (4, ["byteString", "taint"])


def test_features_come_from_states_before_the_dependency_rebuild() -> None:
    # Go applies features while collecting resources and rebuilds dependencies afterwards.
    base = base_of(res("gone"), res("b", replaceWith=[urn("gone")]))
    j = Journal().add(Kind.REFRESH_SUCCESS, 1, removeOld=0)
    version, features, deployment = j.generate(base)
    assert (version, features) == (4, ["replaceWith"])
    assert deployment["resources"] == [res("b")]


# --- Dependencies after a refresh --------------------------------------------------------


def test_dependency_rebuild_after_a_refresh_deletes_a_dependency() -> None:
    a, gone, parent_gone = urn("a"), urn("gone"), urn("pgone", "my:C")
    dependant = res(
        "b",
        parent=parent_gone,
        dependencies=[a, gone],
        propertyDependencies={"z": [gone, a], "only": [gone], "none": []},
        deletedWith=gone,
        replaceWith=[gone],
    )
    base = base_of(res("a"), res("gone"), {"urn": parent_gone, "custom": False, "type": "my:C"})
    base["resources"].append(dependant)
    base["resources"].append(res("c", parent=urn("b"), dependencies=[gone], deletedWith=a))
    j = (
        Journal()
        .add(Kind.REFRESH_SUCCESS, 1, removeOld=1)
        .add(Kind.REFRESH_SUCCESS, 2, removeOld=2)
    )
    deployment = j.deployment(base)
    b, c = by_name(deployment, "b"), by_name(deployment, "c")
    assert b == res("b", dependencies=[a], propertyDependencies={"z": [a]})
    assert c == res("c", parent=urn("b"), deletedWith=a)
    assert "parent" in dependant and len(dependant["dependencies"]) == 2  # untouched


def test_dependency_rebuild_drops_references_to_later_resources() -> None:
    # The list is assumed to be in dependency order: a dependency must come earlier.
    base = base_of(res("a", dependencies=[urn("b")]), res("b"))
    j = Journal().success(1, isRefresh=True)  # a refresh that changed nothing
    assert j.deployment(base)["resources"] == [res("a"), res("b")]


def test_no_dependency_rebuild_without_a_refresh() -> None:
    base = base_of(res("a", dependencies=[urn("missing")], parent=urn("missing")))
    assert Journal().deployment(base)["resources"] == base["resources"]


# --- URN normalization ---------------------------------------------------------------------


def test_references_to_aliases_are_normalized() -> None:
    old_comp, comp = urn("comp-old", "my:Comp"), urn("comp", "my:Comp")
    old_provider = P + "pulumi:providers:aws::old"
    child = urn("child", "my:OldComp$aws:s3:Bucket")
    base = base_of(
        {"urn": comp, "custom": False, "type": "my:Comp", "aliases": [old_comp]},
        res("p", urn=PROVIDER, type="pulumi:providers:aws", aliases=[old_provider]),
        res("child", urn=child, parent=old_comp),
        res("grandchild", parent=child),  # renamed in turn: its parent's URN changed
        res(
            "user",
            provider=old_provider + "::pid",
            dependencies=[old_comp, urn("other")],
            propertyDependencies={"x": [old_comp], "y": None},
            deletedWith=old_comp,
            viewOf=old_comp,
            replaceWith=[old_comp],  # Go leaves replaceWith alone
        ),
        snippets=[{**SNIPPET, "references": {"c": old_comp, "d": urn("other")}}],
    )
    original = copy.deepcopy(base)
    deployment = Journal().deployment(base)
    new_child = urn("child", "my:Comp$aws:s3:Bucket")  # its parent's type changed
    new_grandchild = urn("grandchild", "my:Comp$aws:s3:Bucket$aws:s3:Bucket")
    assert [r["urn"] for r in deployment["resources"]] == [
        *(comp, PROVIDER, new_child, new_grandchild, urn("user"))
    ]
    assert all("aliases" not in r for r in deployment["resources"])
    assert deployment["resources"][2]["parent"] == comp
    assert deployment["resources"][3]["parent"] == new_child
    assert deployment["resources"][4] == res(
        "user",
        provider=PROVIDER + "::pid",
        dependencies=[comp, urn("other")],
        propertyDependencies={"x": [comp], "y": None},
        deletedWith=comp,
        viewOf=comp,
        replaceWith=[old_comp],
    )
    assert deployment["snippets"][0]["references"] == {"c": comp, "d": urn("other")}
    assert base == original


def test_children_of_the_stack_keep_their_urns() -> None:
    base = base_of(
        {"urn": STACK, "custom": False, "type": "pulumi:pulumi:Stack", "aliases": [urn("s")]},
        res("a", parent=urn("s")),
    )
    assert Journal().deployment(base)["resources"][1] == res("a", parent=STACK)


def test_provider_reference_without_id_gets_the_unknown_id() -> None:
    base = base_of(res("a", provider=PROVIDER + "::"), res("b", provider="not-a-reference"))
    resources = Journal().deployment(base)["resources"]
    assert resources[0]["provider"] == PROVIDER + "::04da6b54-80e4-46f7-96ec-b56ff0331ba9"
    assert resources[1]["provider"] == "not-a-reference"  # Go panics; replay leaves it


def test_two_resources_with_one_alias_cannot_be_replayed() -> None:
    base = base_of(res("a", aliases=[urn("x")]), res("b", aliases=[urn("x")]))
    with pytest.raises(ReplayError, match="have the same alias"):
        Journal().deployment(base)
    same = base_of(res("a", aliases=[urn("x"), urn("x")]))  # repeated on one resource: fine
    assert Journal().deployment(same)["resources"] == [res("a")]


# --- Totality -------------------------------------------------------------------------------


def test_unknown_references_are_ignored() -> None:
    # Go would pick resource 0 or panic; the CLI never sends these.
    base = base_of(res("a"), res("b"))
    j = Journal().step(1, res("n"))
    j.success(2, removeNew=99, deleteNew=98, pendingReplacementNew=97)
    j.success(3, removeOld=7, deleteOld=8, pendingReplacementOld=9)
    j.add(Kind.REFRESH_SUCCESS, 4, removeNew=96, state=res("r"))
    j.add(Kind.OUTPUTS, 5, removeNew=95, state=res("o"))
    j.add(Kind.OUTPUTS, 6, removeOld=5, state=res("o"))
    assert j.deployment(base)["resources"] == [res("n"), res("a"), res("b")]


def _random_entry(rnd: random.Random, kind: Kind, op: int) -> Json:
    def ref() -> int | None:
        return rnd.choice([None, None, 0, 1, 2, 3, max(op - 1, 0), 10**12])

    def resource() -> Json:
        name = rnd.choice("abcde")
        deps = rnd.sample([urn(n) for n in "abcdez"], rnd.randint(0, 2))
        return res(name, dependencies=deps, parent=rnd.choice([STACK, urn("z"), urn("a")]))

    entry: Json = {"version": 1, "kind": int(kind), "sequenceID": op + 1, "operationID": op}
    for name in ("removeOld", "removeNew", "deleteOld", "deleteNew"):
        entry[name] = ref()
    entry["pendingReplacementOld"], entry["pendingReplacementNew"] = ref(), ref()
    entry["isRefresh"] = rnd.random() < 0.3
    entry["state"] = resource() if rnd.random() < 0.6 else None
    if rnd.random() < 0.5:
        entry["operation"] = {"resource": resource(), "type": "creating"}
    entry["secretsProvider"] = rnd.choice([SERVICE, {"type": "passphrase"}])
    entry["newSnapshot"] = base_of(resource(), resource())
    entry["extensionRef"], entry["extension"] = rnd.choice("xy"), {"name": "n"}
    entry["snippets"] = rnd.choice([None, [SNIPPET]])
    return entry


def test_any_sequence_of_checked_entries_replays() -> None:
    rnd = random.Random(20260301)
    for _ in range(300):
        base = rnd.choice([None, base_of(res("a"), res("b", dependencies=[urn("a")]), res("c"))])
        replayer = Replayer(base)
        for op in range(rnd.randint(0, 25)):
            entry = _random_entry(rnd, rnd.choice(list(Kind)), op)
            replayer.add(check_entry(entry, op))
        version, features, deployment = replayer.generate(MANIFEST)
        assert version in (3, 4)
        assert json.loads(wrapper_text(version, features, deployment))["deployment"] == deployment


def test_generate_leaves_the_replayer_and_inputs_unchanged() -> None:
    base = base_of(res("a", dependencies=[urn("gone")]), res("b"))
    j = Journal().step(1, res("n")).success(2, deleteOld=0, pendingReplacementOld=1)
    j.success(3, deleteNew=1).add(Kind.REFRESH_SUCCESS, 4, removeOld=1)
    j.add(Kind.SNIPPETS, snippets=[SNIPPET]).add(Kind.SECRETS_MANAGER, secretsProvider=SERVICE)
    before = copy.deepcopy((base, j.entries))
    replayer = Replayer(base)
    for entry in j.entries:
        replayer.add(entry)
    first = copy.deepcopy(replayer.generate(MANIFEST))
    assert replayer.generate(MANIFEST) == first
    assert (base, j.entries) == before


# --- Shapes ---------------------------------------------------------------------------------


def good_entry(**members: Any) -> Json:
    entry: Json = {"version": 1, "kind": 1, "sequenceID": 3, "operationID": 2}
    entry.update(removeOld=None, removeNew=None, state=res("a"))
    entry.update(members)
    return entry


def test_check_entry_returns_the_entry() -> None:
    body = good_entry()
    entry = check_entry(body, 0)
    assert entry == JournalEntry(Kind.SUCCESS, 3, 2, body)
    assert entry.body is body


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"version": 2}, "'version' must be 1"),
        ({"version": True}, "'version' must be 1"),
        ({"version": 1.0}, "'version' must be 1"),
        ({"kind": 10}, "'kind' 10 (state migration) needs journal version 2"),
        ({"kind": 11}, "'kind' must be an integer from 0 to 9"),
        ({"kind": -1}, "'kind' must be an integer from 0 to 9"),
        ({"kind": "1"}, "'kind' must be an integer from 0 to 9"),
        ({"kind": False}, "'kind' must be an integer from 0 to 9"),
        ({"sequenceID": 2**63}, "'sequenceID' must be a 64-bit integer"),
        ({"sequenceID": None}, "'sequenceID' must be a 64-bit integer"),
        ({"sequenceID": 0}, "'sequenceID' must be at least 1"),
        ({"operationID": 1.5}, "'operationID' must be a 64-bit integer"),
        ({"operationID": True}, "'operationID' must be a 64-bit integer"),
        ({"removeOld": -1}, "'removeOld' must be null or a non-negative 64-bit integer"),
        ({"removeNew": "1"}, "'removeNew' must be null or a non-negative"),
        ({"deleteOld": 2**63}, "'deleteOld' must be null or a non-negative"),
        ({"deleteNew": False}, "'deleteNew' must be null or a non-negative"),
        ({"pendingReplacementOld": 0.0}, "'pendingReplacementOld' must be null"),
        ({"pendingReplacementNew": [1]}, "'pendingReplacementNew' must be null"),
        ({"isRefresh": 1}, "'isRefresh' must be a boolean"),
        ({"requiresByteString": "yes"}, "'requiresByteString' must be a boolean"),
        ({"state": []}, "'state' must be an object"),
        ({"state": {"custom": True}}, "'state.urn' must be a string"),
        ({"state": res("a", parent=1)}, "'state.parent' must be a string"),
        ({"state": res("a", taint="yes")}, "'state.taint' must be a boolean"),
        ({"state": res("a", dependencies="x")}, "'state.dependencies' must be a list of strings"),
        ({"state": res("a", aliases=[1])}, "'state.aliases' must be a list of strings"),
        ({"state": res("a", propertyDependencies={"k": "x"})}, "'state.propertyDependencies'"),
        ({"state": res("a", resourceHooks=[])}, "'state.resourceHooks' must be an object"),
        ({"operation": "x"}, "'operation' must be an object"),
        ({"operation": {"resource": res("a")}}, "'operation.type' must be a string"),
        ({"operation": {"type": "creating"}}, "'operation.resource' must be an object"),
        ({"operation": {"type": "creating", "resource": {}}}, "'operation.resource.urn'"),
        ({"kind": 6}, "'secretsProvider' must be an object with a string 'type'"),
        ({"kind": 6, "secretsProvider": {"state": {}}}, "'secretsProvider' must be an object"),
        ({"secretsProvider": "service"}, "'secretsProvider' must be an object"),
        ({"kind": 5}, "'newSnapshot' must be an object"),
        ({"kind": 5, "newSnapshot": {"resources": {}}}, "'newSnapshot.resources' must be a list"),
        ({"kind": 5, "newSnapshot": {"resources": [{}]}}, "'newSnapshot.resources[0].urn'"),
        ({"kind": 5, "newSnapshot": {"pending_operations": [1]}}, "pending_operations[0]'"),
        ({"kind": 5, "newSnapshot": {"secrets_providers": 1}}, "'newSnapshot.secrets_providers'"),
        ({"kind": 5, "newSnapshot": {"extensions": {"a": 1}}}, "'newSnapshot.extensions'"),
        ({"kind": 5, "newSnapshot": {"metadata": []}}, "'newSnapshot.metadata'"),
        ({"kind": 8, "extension": {}}, "'extensionRef' must be a string"),
        ({"kind": 8, "extensionRef": "r"}, "'extension' must be an object"),
        ({"extensionRef": 5}, "'extensionRef' must be a string"),
        ({"snippets": {}}, "'snippets' must be a list"),
        ({"snippets": ["x"]}, "'snippets[0]' must be an object"),
        ({"snippets": [{"references": {"a": 1}}]}, "'snippets[0].references' must map"),
    ],
)
def test_check_entry_rejects_bad_shapes(members: Json, message: str) -> None:
    with pytest.raises(BadRequest, match=r"^journal entry 7: ") as caught:
        check_entry(good_entry(**members), 7)
    assert message in caught.value.message


@pytest.mark.parametrize("value", [None, [], "x", 1])
def test_check_entry_rejects_what_is_not_an_object(value: object) -> None:
    with pytest.raises(BadRequest, match=r"^journal entry 0: must be a JSON object$"):
        check_entry(value, 0)


def test_check_entry_accepts_nulls_where_go_does() -> None:
    members = {name: None for name in ("parent", "dependencies", "taint", "propertyDependencies")}
    body = good_entry(
        state=res("a", **members),
        operation=None,
        isRefresh=None,
        snippets=None,
        secretsProvider=None,
        deleteOld=0,
        removeOld=2**63 - 1,
        sequenceID=2**63 - 1,
    )
    assert check_entry(body, 0).kind is Kind.SUCCESS


def test_add_checks_plain_dicts_and_raises_replay_error() -> None:
    replayer = Replayer(None)
    replayer.add(good_entry())
    with pytest.raises(ReplayError, match=r"^journal entry 1: 'kind' must be an integer"):
        replayer.add(good_entry(kind=11))


def test_a_base_that_cannot_be_replayed_onto() -> None:
    with pytest.raises(ReplayError, match=r"'deployment\.resources\[1\]\.urn' must be a string"):
        Replayer(base_of(res("a"), {"custom": True}))
    with pytest.raises(ReplayError, match="'deployment' must be an object"):
        Replayer([])  # type: ignore[arg-type]


# --- Output ---------------------------------------------------------------------------------


def test_make_manifest() -> None:
    assert make_manifest("2026-03-01T12:00:00Z", "3.276.0") == {
        "time": "2026-03-01T12:00:00Z",
        "magic": hashlib.sha256(b"3.276.0").hexdigest(),
        "version": "3.276.0",
    }
    assert make_manifest("t", "")["magic"] == ""


def test_wrapper_text() -> None:
    deployment = {"manifest": MANIFEST, "resources": [res("caf\u00e9")], "metadata": {}}
    text = wrapper_text(3, [], deployment)
    assert text.startswith(b'{"version":3,"deployment":{"manifest":{"time":')
    assert "caf\u00e9".encode() in text and b" " not in text
    assert json.loads(text) == {"version": 3, "deployment": deployment}
    text = wrapper_text(4, ["taint", "views"], deployment)
    assert text.startswith(b'{"version":4,"features":["taint","views"],"deployment":{')


def test_wrapper_text_written_piecewise_equals_one_dump() -> None:
    # Written a resource at a time, the text is still the dump of the whole wrapper.
    operation = {"resource": res("p"), "type": "creating"}
    deployment = {
        "manifest": MANIFEST,
        "secrets_providers": {"type": "service", "state": {"n": [1, 2.5, None, True]}},
        "resources": [res("a"), res("caf\u00e9"), res("b")],
        "pending_operations": [operation],
        "metadata": {},
    }
    wrapper = {"version": 4, "features": ["taint"], "deployment": deployment}
    whole = json.dumps(wrapper, separators=(",", ":"), ensure_ascii=False).encode()
    assert wrapper_text(4, ["taint"], deployment) == whole


def test_wrapper_text_escapes_a_lone_surrogate() -> None:
    deployment = {"manifest": MANIFEST, "resources": [res("\ud800")], "metadata": {}}
    text = wrapper_text(3, [], deployment)
    assert b"\\ud800" in text
    assert json.loads(text)["deployment"] == deployment


def test_generate_text_writes_what_generate_makes_and_lets_go_of_the_states() -> None:
    base = base_of(res("a"), res("b"), snippets=[SNIPPET])
    j = Journal().step(1, res("n", taint=True)).success(2, deleteOld=0)
    expected = wrapper_text(*j.generate(base))
    before = copy.deepcopy(base)
    replayer = Replayer(base)
    for entry in j.entries:
        replayer.add(entry)
    text, count = generate_text(replayer, MANIFEST)
    assert (text, count) == (expected, 3)
    assert base == before  # the caller's base is not consumed, only the replayer's copies
    assert replayer.generate(MANIFEST)[2] == {"manifest": MANIFEST, "metadata": {}}


def test_replay_is_generate_then_wrapper_text() -> None:
    base = base_of(res("a"))
    j = Journal().step(1, res("b", taint=True))
    text = replay(base, j.entries, MANIFEST)
    assert text == wrapper_text(*j.generate(base))
    assert json.loads(text)["features"] == ["taint"]


# --- Fixtures recorded from the CLI ---------------------------------------------------------

FIXTURES = Path(__file__).parent / "journal_fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def test_there_are_fixtures() -> None:
    assert FIXTURE_FILES, f"no *.json in {FIXTURES}: see its README.md"


def _sorted_operations(deployment: Json) -> list[str]:
    # Go collects unfinished operations from a map: their order is random.
    ops = deployment.pop("pending_operations", [])
    return sorted(json.dumps(op, sort_keys=True) for op in ops)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda path: path.stem)
def test_fixture(path: Path) -> None:
    fixture = json.loads(path.read_text(encoding="utf-8"))
    expected = fixture["expected"]
    j = Journal()
    j.entries = [check_entry(body, index).body for index, body in enumerate(fixture["entries"])]
    version, features, deployment = j.generate(fixture["base"])
    assert (version, features) == (expected["version"], expected.get("features") or [])
    got, want = dict(deployment), dict(expected["deployment"])
    del got["manifest"], want["manifest"]
    assert _sorted_operations(got) == _sorted_operations(want)
    assert got == want


def test_a_stored_reference_replays_as_the_base_resource() -> None:
    base = {"manifest": MANIFEST, "resources": [res("a"), res("b")]}
    digests = [resource_digest(r) for r in base["resources"]]
    same = {"version": 1, "kind": 1, "sequenceID": 1, "operationID": 1, "removeOld": 1}
    stored = elide_unchanged({**same, "state": res("b")}, digests)
    assert stored == {**same, BASE_RESOURCE: 1}
    # Another state, another index, another kind: stored as sent.
    other = {**same, "state": res("c")}
    assert elide_unchanged(other, digests) is other
    assert elide_unchanged({**same, "removeOld": 0, "state": res("b")}, digests)["state"]
    begin = {**same, "kind": 0, "state": res("b")}
    assert elide_unchanged(begin, digests) is begin

    replayer = Replayer(base)
    replayer.add_stored(stored)
    _, _, deployment = replayer.generate(MANIFEST)
    assert deployment["resources"] == [res("b"), res("a")]
    with pytest.raises(ReplayError, match="base resource 2"):
        Replayer(base).add_stored({**same, BASE_RESOURCE: 2})


def test_a_stored_entrys_state_is_kept_as_its_text_until_replay_changes_it() -> None:
    a, b = res("a", outputs={"v": 1}), res("b")
    j = Journal().step(1, a).step(2, b).success(3, deleteNew=2)
    replayer = Replayer(None)
    for entry in j.entries:
        replayer.add_stored(json.loads(json.dumps(entry)))
    _, _, deployment = replayer.generate(MANIFEST)
    kept, flagged = deployment["resources"]
    assert isinstance(kept, TextResource) and kept.text == compact_json(a)
    assert flagged == {**b, "delete": True}  # parsed again to be changed
    assert json.loads(wrapper_text(3, [], deployment))["deployment"] == j.deployment(None)
