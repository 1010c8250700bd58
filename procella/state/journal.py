"""Replaying Pulumi journal entries onto a base state, as the CLI's own replayer does.

With journaling (``journalVersion`` 1) the CLI sends no checkpoints during an update, only
batches of ``apitype.JournalEntry``; the state is the base deployment (the stack's state
before the update) with the entries replayed in order. This is a port of pulumi's
``pkg/backend/journal.go`` (``JournalReplayer.Add`` and ``GenerateDeployment``, v3.276.0)
and of ``apitype.DeploymentV3.NormalizeURNReferences``; the comments name the Go they follow.

Everything works on parsed JSON with the wire's member names. Nothing the caller passes in
is mutated: a resource is copied (shallowly) before a flag or a reference in it changes,
and results share the caller's unchanged objects rather than deep-copying whole states.

Replay is total: entries that passed ``check_entry`` never make it raise (the one exception
is the alias conflict Go itself refuses, see ``_alias_map``). Where Go would panic or pick
resource 0 for a reference to an operation it never recorded, the reference is ignored:
the CLI never sends one.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from procella import memory
from procella.errors import BadRequest
from procella.state.text_resources import (
    BOOL_MEMBERS,
    STRING_MEMBERS,
    URN_LIST_MEMBERS,
    TextResource,
    compact_json,
    resource_digest,
)

Json = dict[str, Any]

JOURNAL_VERSION = 1
SCHEMA_CURRENT, SCHEMA_LATEST = 3, 4  # apitype.DeploymentSchemaVersionCurrent / Latest

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_URN_PREFIX = "urn:pulumi:"
_ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
_UNKNOWN_ID = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # providers.UnknownID

# apitype.ResourceV3's members in declaration order: encoding/json writes them in this
# order, so a member added to a resource goes where Go would put it.
_RESOURCE_MEMBERS = (  # noqa: SIM905 (a column of 36 names says less)
    "urn custom delete id type inputs outputs parent protect taint external dependencies "
    "initErrors provider propertyDependencies pendingReplacement additionalSecretOutputs "
    "aliases customTimeouts importID retainOnDelete deletedWith replaceWith created "
    "modified sourcePosition stackTrace ignoreChanges hideDiff replaceOnChanges "
    "replacementTrigger refreshBeforeUpdate viewOf resourceHooks extensionRef snippetID"
).split()
_MEMBER_RANK = {name: rank for rank, name in enumerate(_RESOURCE_MEMBERS)}

# Marks a member to remove in ``_patched``: Go's omitempty drops "" and empty lists.
_DROP: Any = object()

# A stored Success entry whose state is byte for byte the base state's resource at this
# index carries the index under this member instead of the state (``elide_unchanged``).
# Not a CLI member: ``check_entry`` refuses it on the wire.
BASE_RESOURCE = "procellaBaseResource"

# ``generate_text`` hands freed memory back each time it has written this much.
_TRIM_EVERY = 16 << 20


class Kind(IntEnum):
    """apitype.JournalEntryKind."""

    BEGIN = 0
    SUCCESS = 1
    FAILURE = 2
    REFRESH_SUCCESS = 3
    OUTPUTS = 4
    WRITE = 5
    SECRETS_MANAGER = 6
    REBUILT_BASE_STATE = 7
    EXTENSION_PARAMETERIZE = 8
    SNIPPETS = 9


class ReplayError(ValueError):
    """The entries (or the base) cannot be replayed."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One wire entry that passed ``check_entry``; ``body`` is the parsed JSON as received."""

    kind: Kind
    sequence_id: int
    operation_id: int
    body: Json


# --- Shape checks -----------------------------------------------------------------------


class _Invalid(Exception):
    """A shape error; ``check_entry`` turns it into BadRequest, replay into ReplayError."""


_REFERENCES = (
    "removeOld",
    "removeNew",
    "pendingReplacementOld",
    "pendingReplacementNew",
    "deleteOld",
    "deleteNew",
)


def _is_int64(value: object) -> bool:
    return type(value) is int and _INT64_MIN <= value <= _INT64_MAX


def _is_strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _check_resource(value: object, where: str) -> None:
    # A TextResource was parsed and checked as a dict; it holds every member read here.
    if not isinstance(value, dict | TextResource):
        raise _Invalid(f"'{where}' must be an object")
    if not isinstance(value.get("urn"), str):
        raise _Invalid(f"'{where}.urn' must be a string")
    for name in STRING_MEMBERS:
        member = value.get(name)
        if member is not None and not isinstance(member, str):
            raise _Invalid(f"'{where}.{name}' must be a string")
    for name in BOOL_MEMBERS:
        member = value.get(name)
        if member is not None and not isinstance(member, bool):
            raise _Invalid(f"'{where}.{name}' must be a boolean")
    for name in URN_LIST_MEMBERS:
        member = value.get(name)
        if member is not None and not _is_strings(member):
            raise _Invalid(f"'{where}.{name}' must be a list of strings")
    deps = value.get("propertyDependencies")
    if deps is not None and not (
        isinstance(deps, dict) and all(urns is None or _is_strings(urns) for urns in deps.values())
    ):
        raise _Invalid(f"'{where}.propertyDependencies' must map names to lists of strings")
    hooks = value.get("resourceHooks")
    if hooks is not None and not isinstance(hooks, dict):
        raise _Invalid(f"'{where}.resourceHooks' must be an object")


def _check_operation(value: object, where: str) -> None:
    if not isinstance(value, dict):
        raise _Invalid(f"'{where}' must be an object")
    if not isinstance(value.get("type"), str):
        raise _Invalid(f"'{where}.type' must be a string")
    _check_resource(value.get("resource"), f"{where}.resource")


def _check_secrets_provider(value: object, where: str) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _Invalid(f"'{where}' must be an object with a string 'type'")


def _check_snippets(value: object, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise _Invalid(f"'{where}' must be a list")
    for i, snippet in enumerate(value):
        if not isinstance(snippet, dict):
            raise _Invalid(f"'{where}[{i}]' must be an object")
        refs = snippet.get("references")
        if refs is not None and not (
            isinstance(refs, dict) and all(isinstance(urn, str) for urn in refs.values())
        ):
            raise _Invalid(f"'{where}[{i}].references' must map names to strings")


def _check_list(value: object, where: str, check: Callable[[object, str], None]) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise _Invalid(f"'{where}' must be a list")
    for i, item in enumerate(value):
        check(item, f"{where}[{i}]")


def _check_deployment(value: object, where: str) -> None:
    """A DeploymentV3, as far as replay reads it."""
    if not isinstance(value, dict):
        raise _Invalid(f"'{where}' must be an object")
    _check_list(value.get("resources"), f"{where}.resources", _check_resource)
    _check_list(value.get("pending_operations"), f"{where}.pending_operations", _check_operation)
    if value.get("secrets_providers") is not None:
        _check_secrets_provider(value["secrets_providers"], f"{where}.secrets_providers")
    _check_snippets(value.get("snippets"), f"{where}.snippets")
    extensions = value.get("extensions")
    if extensions is not None and not (
        isinstance(extensions, dict) and all(isinstance(e, dict) for e in extensions.values())
    ):
        raise _Invalid(f"'{where}.extensions' must map references to objects")
    if not isinstance(value.get("metadata", {}), dict | None):
        raise _Invalid(f"'{where}.metadata' must be an object")


def _check_scalars(value: Json) -> Kind:
    version = value.get("version")
    if type(version) is not int or version != JOURNAL_VERSION:
        raise _Invalid(f"'version' must be {JOURNAL_VERSION}")
    kind = value.get("kind")
    if kind == 10 and type(kind) is int:  # v3.276.0's JournalEntryKindStateMigration
        raise _Invalid("'kind' 10 (state migration) needs journal version 2, not offered here")
    if type(kind) is not int or not Kind.BEGIN <= kind <= Kind.SNIPPETS:
        raise _Invalid("'kind' must be an integer from 0 to 9")
    for name in ("sequenceID", "operationID"):
        if not _is_int64(value.get(name)):
            raise _Invalid(f"'{name}' must be a 64-bit integer")
    if value["sequenceID"] < 1:  # the CLI numbers entries from 1; 0 means "none"
        raise _Invalid("'sequenceID' must be at least 1")
    for name in _REFERENCES:
        ref = value.get(name)
        if ref is not None and not (_is_int64(ref) and ref >= 0):
            raise _Invalid(f"'{name}' must be null or a non-negative 64-bit integer")
    for name in ("isRefresh", "requiresByteString"):
        flag = value.get(name)
        if flag is not None and not isinstance(flag, bool):
            raise _Invalid(f"'{name}' must be a boolean")
    return Kind(kind)


def _check_payload(value: Json, kind: Kind) -> None:
    """The objects an entry carries; each kind's own one is required (Go dereferences it)."""
    if value.get("state") is not None:
        _check_resource(value["state"], "state")
    if value.get("operation") is not None:
        _check_operation(value["operation"], "operation")
    if value.get("secretsProvider") is not None or kind is Kind.SECRETS_MANAGER:
        _check_secrets_provider(value.get("secretsProvider"), "secretsProvider")
    if value.get("newSnapshot") is not None or kind is Kind.WRITE:
        _check_deployment(value.get("newSnapshot"), "newSnapshot")
    parameterize = kind is Kind.EXTENSION_PARAMETERIZE
    ref, extension = value.get("extensionRef"), value.get("extension")
    if (parameterize or ref is not None) and not isinstance(ref, str):
        raise _Invalid("'extensionRef' must be a string")
    if (parameterize or extension is not None) and not isinstance(extension, dict):
        raise _Invalid("'extension' must be an object")
    _check_snippets(value.get("snippets"), "snippets")


def _parse(value: object) -> JournalEntry:
    if not isinstance(value, dict):
        raise _Invalid("must be a JSON object")
    if BASE_RESOURCE in value:
        raise _Invalid(f"'{BASE_RESOURCE}' is not a journal entry member")
    kind = _check_scalars(value)
    _check_payload(value, kind)
    return JournalEntry(kind, value["sequenceID"], value["operationID"], value)


def check_entry(value: object, index: int) -> JournalEntry:
    """Validate one wire entry (parsed JSON); ``index`` names it in the error."""
    try:
        return _parse(value)
    except _Invalid as exc:
        raise BadRequest(f"journal entry {index}: {exc}") from None


# --- Replay -----------------------------------------------------------------------------


class Replayer:
    """pulumi's ``JournalReplayer``: ``add`` the entries in order, then ``generate``."""

    def __init__(self, base: Json | None) -> None:
        if base is not None:
            try:
                _check_deployment(base, "deployment")
            except _Invalid as exc:
                raise ReplayError(f"the base state cannot be replayed onto: {exc}") from None
        # A stack never updated replays onto an empty DeploymentV3, as in the CLI. The copy
        # is ours: kinds 6 and 9 set members on it.
        self._base: Json = {} if base is None else dict(base)
        # What stored entries refer to (``elide_unchanged``): the base as given, whatever
        # Write or RebuiltBaseState entries make of ``_base`` later.
        self._given_resources: list[Json] = list(self._base.get("resources") or ())
        self._reset()
        # Not reset by RebuiltBaseState, as in Go (see ``_rebuilt_base_state``).
        self._index = 0
        self._has_refresh = False
        self._requires_byte_string = False
        self._added = 0

    def _reset(self) -> None:
        self._to_remove: set[int] = set()  # operation ids of new resources to drop
        self._to_delete_in_snapshot: set[int] = set()  # base indexes to drop
        self._to_replace_in_snapshot: dict[int, Json] = {}  # base index -> new state
        self._mark_as_deletion: set[int] = set()  # base indexes
        self._mark_as_pending_replacement: set[int] = set()  # base indexes
        self._operation_index: dict[int, int] = {}  # operation id -> index in _new_resources
        self._incomplete: dict[int, Json] = {}  # operation id -> its Begin entry
        self._new_resources: list[Json] = []
        self._extensions: Json = {}

    def add_stored(self, body: Json) -> None:
        """Add an entry as stored: it passed ``check_entry`` when it arrived, and a state
        ``elide_unchanged`` replaced by a reference is put back. Its state is kept as
        text (``TextResource``), so a journal of 5000 creates holds 5000 texts, not 5000
        parsed resources."""
        index = body.get(BASE_RESOURCE)
        if index is not None:
            if not 0 <= index < len(self._given_resources):
                raise ReplayError(f"a stored entry refers to base resource {index}, not there")
            body = {**body, "state": self._given_resources[index]}
            del body[BASE_RESOURCE]
        elif isinstance(body.get("state"), dict):
            body["state"] = TextResource(body["state"])
        kind = Kind(body["kind"])
        self.add(JournalEntry(kind, body["sequenceID"], body["operationID"], body))

    def add(self, entry: Json | JournalEntry) -> None:
        """``JournalReplayer.Add``. A dict is checked as ``check_entry`` would."""
        if not isinstance(entry, JournalEntry):
            try:
                entry = _parse(entry)
            except _Invalid as exc:
                raise ReplayError(f"journal entry {self._added}: {exc}") from None
        self._added += 1
        body, op = entry.body, entry.operation_id
        if body.get("requiresByteString"):
            self._requires_byte_string = True
        match entry.kind:
            case Kind.BEGIN:
                self._incomplete[op] = body
            case Kind.SUCCESS:
                self._success(op, body)
            case Kind.FAILURE:
                self._incomplete.pop(op, None)
            case Kind.REFRESH_SUCCESS:
                self._refresh_success(op, body)
            case Kind.OUTPUTS:
                self._outputs(body)
            case Kind.WRITE:
                # Go expects this before any entry that changes the snapshot.
                self._base = dict(body["newSnapshot"])
            case Kind.SECRETS_MANAGER:
                self._secrets_manager(body["secretsProvider"])
            case Kind.REBUILT_BASE_STATE:
                self._rebuilt_base_state()
            case Kind.EXTENSION_PARAMETERIZE:
                self._extensions[body["extensionRef"]] = body["extension"]
            case Kind.SNIPPETS:
                self._base["snippets"] = body.get("snippets")

    def _success(self, op: int, body: Json) -> None:
        self._incomplete.pop(op, None)
        state = body.get("state")
        if state is not None:
            self._new_resources.append(state)
            self._operation_index[op] = self._index
            self._index += 1
        if body.get("removeOld") is not None:
            self._to_delete_in_snapshot.add(body["removeOld"])
        if body.get("removeNew") is not None:
            self._to_remove.add(body["removeNew"])
        if body.get("deleteOld") is not None:
            self._mark_as_deletion.add(body["deleteOld"])
        if body.get("deleteNew") is not None:
            self._flag_new(body["deleteNew"], "delete")
        if body.get("pendingReplacementOld") is not None:
            self._mark_as_pending_replacement.add(body["pendingReplacementOld"])
        if body.get("pendingReplacementNew") is not None:
            self._flag_new(body["pendingReplacementNew"], "pendingReplacement")
        if body.get("isRefresh"):
            self._has_refresh = True

    def _refresh_success(self, op: int, body: Json) -> None:
        self._incomplete.pop(op, None)
        self._has_refresh = True
        state = body.get("state")
        old, new = body.get("removeOld"), body.get("removeNew")
        if old is not None:
            if state is None:
                self._to_delete_in_snapshot.add(old)
            else:
                self._to_replace_in_snapshot[old] = state
        if new is not None:
            if state is None:
                self._to_remove.add(new)
            else:
                self._replace_new(new, state)

    def _outputs(self, body: Json) -> None:
        state = body.get("state")
        if state is None:
            return
        if body.get("removeOld") is not None:
            self._to_replace_in_snapshot[body["removeOld"]] = state
        if body.get("removeNew") is not None:
            self._replace_new(body["removeNew"], state)

    def _new_index(self, op: int) -> int | None:
        # Go indexes newResources[operationIDToResourceIndex[op]]: for an operation it never
        # recorded that is resource 0 (or a panic), and after RebuiltBaseState the index can
        # point past the list (a panic). The CLI sends neither; such a reference is ignored.
        index = self._operation_index.get(op)
        if index is None or index >= len(self._new_resources):
            return None
        return index

    def _flag_new(self, op: int, member: str) -> None:
        index = self._new_index(op)
        if index is not None:
            self._new_resources[index] = _flagged(self._new_resources[index], member)

    def _replace_new(self, op: int, state: Json) -> None:
        index = self._new_index(op)
        if index is not None:
            self._new_resources[index] = state

    def _secrets_manager(self, provider: Json) -> None:
        # Keep the base's provider when it is the same, so secrets are not re-encrypted. Go
        # compares the raw JSON of ``state`` byte for byte; compact text is the nearest
        # equivalent of parsed JSON (member order and number spelling still count).
        current = self._base.get("secrets_providers")
        if (
            current is not None
            and current.get("type") == provider["type"]
            and _raw(current, "state") == _raw(provider, "state")
        ):
            return
        self._base["secrets_providers"] = provider

    def clear(self) -> None:
        """Let go of every state held (after the last ``generate``): nothing is usable after."""
        self._base = {}
        self._given_resources = []
        self._reset()

    def _rebuilt_base_state(self) -> None:
        # The state so far becomes the base and the journal starts over (after a refresh).
        # Go keeps ``index``, ``hasRefresh`` and ``requiresByteString``; so does this. The
        # base's manifest is never written out, so any manifest will do.
        _, _, deployment = self.generate(self._base.get("manifest") or {})
        self._base = deployment
        self._reset()

    def generate(self, manifest: Json) -> tuple[int, list[str], Json]:
        """``GenerateDeployment``: (schema version, sorted features, DeploymentV3).

        ``manifest`` is the caller's (``make_manifest``): Go stamps the time and CLI version.
        The result shares unchanged resource objects with the base and the entries.
        """
        features: set[str] = set()
        resources = self._resources(features)
        operations = self._pending_operations(features)
        if self._has_refresh:
            # A refresh may have deleted resources others still refer to.
            resources = _rebuild_dependencies(resources)
        base = self._base
        snippets = base.get("snippets") or None
        if snippets:
            features.add("snippets-prototype")
        resources, snippets = _normalize_urn_references(resources, snippets)

        deployment: Json = {"manifest": manifest}
        if base.get("secrets_providers") is not None:
            deployment["secrets_providers"] = base["secrets_providers"]
        if resources:
            deployment["resources"] = resources
        if operations:
            deployment["pending_operations"] = operations
        deployment["metadata"] = _metadata(base.get("metadata"))
        if snippets:
            deployment["snippets"] = snippets
        # Extensions this update parameterized, then the base's (which win, as in Go).
        extensions = {**self._extensions, **(base.get("extensions") or {})}
        if extensions:
            deployment["extensions"] = dict(sorted(extensions.items()))
        version = SCHEMA_LATEST if features else SCHEMA_CURRENT
        return version, sorted(features), deployment

    def _resources(self, features: set[str]) -> list[Json]:
        """The new resources in journal order, then what remains of the base's."""
        byte_string = self._requires_byte_string
        removed = {
            self._operation_index[op] for op in self._to_remove if op in self._operation_index
        }
        resources = []
        for index, res in enumerate(self._new_resources):
            if index not in removed:
                resources.append(res)
                _apply_features(res, byte_string, features)
        for index, res in enumerate(self._base.get("resources") or ()):
            if index in self._to_delete_in_snapshot:
                continue
            # A refreshed (or outputs-updated) state wins over the pending-replacement and
            # delete marks, as in Go.
            replacement = self._to_replace_in_snapshot.get(index)
            if replacement is not None:
                res = replacement
            else:
                if index in self._mark_as_pending_replacement:
                    res = _flagged(res, "pendingReplacement")
                if index in self._mark_as_deletion:
                    res = _flagged(res, "delete")
            resources.append(res)
            _apply_features(res, byte_string, features)
        return resources

    def _pending_operations(self, features: set[str]) -> list[Json]:
        """Operations begun and never ended, then the base's pending creates.

        Go ranges over a map, so its order of the first group is random; this keeps the
        order the Begin entries arrived in. Pending creates are kept because they need the
        user to resolve them; other pending operations of the base are dropped.
        """
        byte_string = self._requires_byte_string
        operations = []
        for begin in self._incomplete.values():
            operation = begin.get("operation")
            if operation is not None:
                operations.append(operation)
                _apply_features(operation["resource"], byte_string, features)
        for operation in self._base.get("pending_operations") or ():
            if operation["type"] == "creating":
                operations.append(operation)
                _apply_features(operation["resource"], byte_string, features)
        return operations


def _raw(provider: Json, member: str) -> str | None:
    if member not in provider:
        return None
    return json.dumps(provider[member], separators=(",", ":"), ensure_ascii=False)


def _metadata(value: object) -> Json:
    # SnapshotMetadataV1 is a struct: Go always writes it, and only its integrity_error.
    if isinstance(value, dict) and value.get("integrity_error") is not None:
        return {"integrity_error": value["integrity_error"]}
    return {}


def _apply_features(res: Json, byte_string: bool, features: set[str]) -> None:
    """stack.ApplyFeatures."""
    if byte_string:
        features.add("byteString")
    if res.get("refreshBeforeUpdate"):
        features.add("refreshBeforeUpdate")
    if res.get("viewOf"):
        features.add("views")
    if res.get("resourceHooks"):
        features.add("hooks")
    if res.get("taint"):
        features.add("taint")
    if res.get("replaceWith"):
        features.add("replaceWith")
    if res.get("extensionRef"):
        features.add("extensionParameterization")
    if res.get("snippetID"):
        features.add("snippets-prototype")


def _patched(res: Json, changes: Json) -> Json:
    """A copy of ``res`` with ``changes`` applied (``_DROP`` removes a member)."""
    out = res.value() if isinstance(res, TextResource) else dict(res)
    added = False
    for name, value in changes.items():
        if value is _DROP:
            out.pop(name, None)
        else:
            added = added or name not in out
            out[name] = value
    if added:  # put new members where encoding/json would (a stable sort keeps the rest)
        out = dict(sorted(out.items(), key=lambda kv: _MEMBER_RANK.get(kv[0], 99)))
    return out


def _flagged(res: Json, member: str) -> Json:
    return res if res.get(member) is True else _patched(res, {member: True})


# --- rebuildDependencies and undangleParentResources ---------------------------------------


def _rebuild_dependencies(resources: list[Json]) -> list[Json]:
    """Drop references to resources that are not earlier in the list (it is in dependency
    order), then parents that no longer exist."""
    earlier: set[str] = set()
    rebuilt = []
    for res in resources:
        changes = _dependency_changes(res, earlier)
        rebuilt.append(_patched(res, changes) if changes else res)
        earlier.add(res["urn"])
    # undangleParentResources re-parents onto the missing parent's own parent, looked up
    # among the resources that exist; a missing parent is never among them, so the parent
    # is simply cleared. (After the loop, ``earlier`` holds every URN in the list.)
    for index, res in enumerate(rebuilt):
        if res.get("parent") and res["parent"] not in earlier:
            rebuilt[index] = _patched(res, {"parent": _DROP})
    return rebuilt


def _dependency_changes(res: Json, earlier: set[str]) -> Json:
    changes: Json = {}
    for name in ("dependencies", "replaceWith"):
        urns = res.get(name)
        if urns:
            kept = [urn for urn in urns if urn in earlier]
            if len(kept) != len(urns):
                changes[name] = kept or _DROP
    by_property = res.get("propertyDependencies")
    if by_property:
        rebuilt = {}
        for key, urns in by_property.items():
            kept = [urn for urn in urns or () if urn in earlier]
            if kept:  # Go only creates a key for a dependency it keeps
                rebuilt[key] = kept
        if rebuilt != by_property:
            changes["propertyDependencies"] = dict(sorted(rebuilt.items())) or _DROP
    deleted_with = res.get("deletedWith")
    if deleted_with and deleted_with not in earlier:
        changes["deletedWith"] = _DROP
    return changes


# --- NormalizeURNReferences ----------------------------------------------------------------


def _normalize_urn_references(
    resources: list[Json], snippets: list[Any] | None
) -> tuple[list[Json], list[Any] | None]:
    """Rewrite references to aliased URNs to the resources' current URNs; drop aliases."""
    aliased = _alias_map(resources)
    normalized = []
    for res in resources:
        changes = _urn_changes(res, aliased)
        normalized.append(_patched(res, changes) if changes else res)
    if aliased and snippets:
        snippets = [_normalized_snippet(snippet, aliased) for snippet in snippets]
    return normalized, snippets


def _alias_map(resources: list[Json]) -> dict[str, str]:
    aliased: dict[str, str] = {}
    for res in resources:
        urn = res["urn"]
        for alias in res.get("aliases") or ():
            # The one refusal of a checked journal: Go fails GenerateDeployment here too.
            if alias in aliased and aliased[alias] != urn:
                raise ReplayError(
                    "failed to normalize URN references: two resources "
                    f"('{aliased[alias]}' and '{urn}') have the same alias: '{alias}'"
                )
            aliased[alias] = urn
        # A child of a renamed parent has a new URN too. Go asserts that both are URNs
        # (a panic otherwise); a reference that is not one is left alone here.
        parent = aliased.get(res.get("parent") or "")
        if parent and parent.startswith(_URN_PREFIX) and urn.startswith(_URN_PREFIX):
            parent_type = _urn_part(parent, 2)
            if parent_type != _ROOT_STACK_TYPE:
                aliased[urn] = _child_urn(urn, parent_type)
    return aliased


def _urn_part(urn: str, index: int) -> str:
    """urn.getComponent: the index-th "::" part after the prefix (all of it if too few)."""
    name = urn[len(_URN_PREFIX) :]
    parts = name.split("::")
    return parts[index] if index < len(parts) else name


def _child_urn(urn: str, parent_type: str) -> str:
    """resource.NewURN(urn.Stack(), urn.Project(), parentType, urn.Type(), urn.Name())."""
    name = urn[len(_URN_PREFIX) :]
    qualified = _urn_part(urn, 2)
    type_ = qualified[qualified.rfind("$") + 1 :]
    if parent_type:
        type_ = f"{parent_type}${type_}"
    rest = name.split("::", 3)
    own_name = rest[3] if len(rest) == 4 else name
    return f"{_URN_PREFIX}{_urn_part(urn, 0)}::{_urn_part(urn, 1)}::{type_}::{own_name}"


def _urn_changes(res: Json, aliased: dict[str, str]) -> Json:
    changes: Json = {}
    if aliased:
        urn = res["urn"]
        if urn in aliased:
            changes["urn"] = aliased[urn]
        for name in ("parent", "deletedWith", "viewOf"):
            value = res.get(name) or ""
            if value in aliased:
                changes[name] = aliased[value] or _DROP
        deps = res.get("dependencies")
        if deps and any(dep in aliased for dep in deps):
            changes["dependencies"] = [aliased.get(dep, dep) for dep in deps]
        by_property = res.get("propertyDependencies")
        if by_property and any(
            dep in aliased for urns in by_property.values() for dep in urns or ()
        ):
            changes["propertyDependencies"] = {
                key: None if urns is None else [aliased.get(dep, dep) for dep in urns]
                for key, urns in by_property.items()
            }
    provider = res.get("provider")
    if provider and (aliased or provider.endswith("::")):
        fixed = _normalized_provider(provider, aliased)
        if fixed != provider:
            changes["provider"] = fixed
    if res.get("aliases"):
        changes["aliases"] = _DROP
    return changes


def _normalized_provider(reference: str, aliased: dict[str, str]) -> str:
    """fixProvider: a provider reference "<urn>::<id>" with its URN normalized. Go's
    NewReference also turns an empty id into UnknownID. Where Go panics (a reference that
    is not one), the reference is kept as it is."""
    sep = reference.rfind("::")
    urn, id_ = reference[:sep], reference[sep + 2 :]
    if sep < 0 or (id_ and urn not in aliased) or not _is_provider_urn(urn):
        return reference
    fixed = aliased.get(urn, urn)
    return f"{fixed}::{id_ or _UNKNOWN_ID}" if _is_provider_urn(fixed) else reference


def _is_provider_urn(urn: str) -> bool:
    """providers.validateURN: a valid URN whose type is "pulumi:providers:<name>"."""
    if not urn.startswith(_URN_PREFIX) or urn.count("::") < 3:
        return False
    qualified = _urn_part(urn, 2)
    parts = qualified[qualified.rfind("$") + 1 :].split(":", 2)
    return len(parts) == 3 and parts[0] == "pulumi" and parts[1] == "providers" and bool(parts[2])


def _normalized_snippet(snippet: Json, aliased: dict[str, str]) -> Json:
    refs = snippet.get("references")
    if not refs or not any(urn in aliased for urn in refs.values()):
        return snippet
    fixed = {key: aliased.get(urn, urn) for key, urn in refs.items()}
    return {**snippet, "references": fixed}


# --- Output ---------------------------------------------------------------------------------


def make_manifest(time_rfc3339: str, version: str) -> Json:
    """apitype.ManifestV1 as Go's GenerateDeployment makes it (no plugins)."""
    magic = hashlib.sha256(version.encode()).hexdigest() if version else ""  # NewMagic
    return {"time": time_rfc3339, "magic": magic, "version": version}


def wrapper_text(version: int, features: list[str], deployment: Json) -> bytes:
    """The stored checkpoint text: ``{"version":V[,"features":[...]],"deployment":{...}}``,
    compact UTF-8. A NaN or infinity (which the API never accepts) raises ValueError.

    Written a resource at a time, so a large state is never held as one ``str`` beside its
    bytes: the bytes equal ``json.dumps`` of the whole wrapper.
    """
    return _write_wrapper(version, features, deployment, consume=False)


def _write_wrapper(version: int, features: list[str], deployment: Json, *, consume: bool) -> bytes:
    """``wrapper_text``; with ``consume``, each resource is let go once written (its slot
    in ``deployment["resources"]``, a list ``generate`` made, set to None), and the freed
    memory handed back now and then."""
    out = io.BytesIO()
    out.write(b'{"version":' + compact_json(version))
    if features:
        out.write(b',"features":' + compact_json(features))
    out.write(b',"deployment":{')
    trimmed_at = 0
    for index, (key, value) in enumerate(deployment.items()):
        out.write((b"," if index else b"") + compact_json(key) + b":")
        if isinstance(value, list):
            out.write(b"[")
            for position, item in enumerate(value):
                out.write((b"," if position else b"") + compact_json(item))
                if consume and key == "resources":
                    value[position] = None
                    if out.tell() - trimmed_at >= _TRIM_EVERY:
                        trimmed_at = out.tell()
                        memory.trim(force=True)
            out.write(b"]")
        else:
            out.write(compact_json(value))
    out.write(b"}}")
    return out.getvalue()


def generate_text(replayer: Replayer, manifest: Json) -> tuple[bytes, int]:
    """The replayed state as stored text, and its resource count. Consumes ``replayer``:
    a resource is let go as soon as it is written, so a large state is held parsed or as
    text, not both at once (a 5000-resource state is about 100 MB either way)."""
    version, features, deployment = replayer.generate(manifest)
    replayer.clear()
    resources = deployment.get("resources")
    count = len(resources) if isinstance(resources, list) else 0
    return _write_wrapper(version, features, deployment, consume=True), count


def replay(base: Json | None, entries: Iterable[Json | JournalEntry], manifest: Json) -> bytes:
    """The checkpoint text of ``base`` with ``entries`` replayed onto it."""
    replayer = Replayer(base)
    for entry in entries:
        replayer.add(entry)
    return wrapper_text(*replayer.generate(manifest))


# --- Storage: unchanged states by reference --------------------------------------------


def elide_unchanged(body: Json, digests: Sequence[bytes]) -> Json:
    """``body`` as stored: a Success entry that keeps a base resource unchanged (a ``same``
    step: ``removeOld`` is its index and ``state`` equals it byte for byte) refers to it
    instead of repeating it, so an update that changes 10 of 1000 resources stores 10
    states. ``Replayer.add_stored`` puts the base's resource back."""
    old = body.get("removeOld")
    state = body.get("state")
    if body.get("kind") != Kind.SUCCESS or not isinstance(old, int) or state is None:
        return body
    if not 0 <= old < len(digests) or digests[old] != resource_digest(state):
        return body
    stored = {key: value for key, value in body.items() if key != "state"}
    stored[BASE_RESOURCE] = old
    return stored
