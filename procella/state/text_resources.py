"""Resources kept as their compact JSON text while a journal is replayed.

Replay passes most resources through untouched: an update that changes 10 of 1000
resources sends 990 ``same`` steps whose states are the base's own, and a new resource's
state is written out as it came. Parsed, a state costs up to several times its text in
Python objects, and ``materialize`` holds the whole state beside the base's text and the
new one. So each resource is parsed on its own, once, and kept as a ``TextResource``: its
compact JSON, which the output writes as it is, and the few members replay reads. Only a
resource that replay changes (a flag, a reference) is parsed again, alone. That holds for
the base state (``read_deployment``, from its stored text) and for the states the stored
entries carry (``journal.Replayer.add_stored``).

The base's text is cut where ``pieces`` cuts a checkpoint, and that is exact for the same
reason: the skeleton (the text with the resources array replaced by ``["1"]``) must parse
with the ``"1"`` as the deployment's resources, and every piece must parse as one value, so
a cut in the wrong place fails, and then the text is parsed whole.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from procella.state import checkpoints as cp
from procella.state import deltas, pieces

Json = dict[str, Any]

# The resource members replay reads, by type (``journal._check_resource`` checks them).
# Go accepts null for each (it leaves the zero value).
STRING_MEMBERS = ("parent", "provider", "deletedWith", "viewOf", "extensionRef", "snippetID")
BOOL_MEMBERS = ("delete", "pendingReplacement", "taint", "refreshBeforeUpdate")
URN_LIST_MEMBERS = ("dependencies", "aliases", "replaceWith")
READ_MEMBERS = frozenset(
    {"urn", "propertyDependencies", "resourceHooks"}.union(
        STRING_MEMBERS, BOOL_MEMBERS, URN_LIST_MEMBERS
    )
)
# Stored texts nest no deeper than this (they were checked when stored); a text that does
# is read whole, where the parser decides.
_MAX_DEPTH = 1000


class TextResource:
    """A resource kept as its compact JSON (``text``) and the members replay reads.
    Reading any other member is a bug, and raises KeyError rather than answer None."""

    __slots__ = ("_members", "text")

    def __init__(self, value: Json) -> None:
        self.text = compact_json(value)
        self._members = {name: value[name] for name in READ_MEMBERS if name in value}

    def get(self, name: str, default: Any = None) -> Any:
        if name not in READ_MEMBERS:
            raise KeyError(f"replay reads no '{name}' of a resource kept as text")
        return self._members.get(name, default)

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, _ABSENT)
        if value is _ABSENT:
            raise KeyError(name)
        return value

    def __contains__(self, name: str) -> bool:
        return self.get(name, _ABSENT) is not _ABSENT

    def value(self) -> Json:
        """The whole resource, parsed anew (the caller's to change)."""
        parsed: Json = json.loads(self.text)
        return parsed


_ABSENT: Any = object()


def compact_json(value: object) -> bytes:
    """Compact UTF-8 JSON, as stored; a lone surrogate is written escaped. A
    ``TextResource`` is its text."""
    if isinstance(value, TextResource):
        return value.text
    try:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in the JSON) has no UTF-8; escaped, the text stays valid.
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def resource_digest(res: object) -> bytes:
    """A digest of a resource's compact JSON: equal digests, byte-identical resources (so
    ``true`` is not ``1`` and ``1.0`` is not ``1``, as they would be for ``==``)."""
    return hashlib.sha256(compact_json(res)).digest()


def read_deployment(text: bytes) -> Json | None:
    """The deployment of a stored checkpoint text, its resources as ``TextResource``s
    (pending operations under the key the CLI reads); None when it has no deployment."""
    found = _split(text)
    if found is not None:
        skeleton, spans = found
        try:
            skeleton["resources"] = [_kept(json.loads(text[a:b])) for a, b in spans]
            return skeleton
        except (ValueError, RecursionError):
            pass  # a wrong cut: parsed whole below
    deployment = cp.readable_deployment(cp.parse_deployment(text)).get("deployment")
    if not isinstance(deployment, dict):
        return None
    resources = deployment.get("resources")
    if isinstance(resources, list):
        deployment["resources"] = [_kept(res) for res in resources]
    return deployment


def base_digests(text: bytes) -> list[bytes]:
    """``resource_digest`` of each resource of a stored checkpoint text."""
    deployment = read_deployment(text) or {}
    return [resource_digest(res) for res in deployment.get("resources") or ()]


def _kept(value: object) -> object:
    # Anything but an object stays as it is (and the replayer refuses it).
    return TextResource(value) if isinstance(value, dict) else value


def _split(text: bytes) -> tuple[Json, list[tuple[int, int]]] | None:
    """The deployment without its resources, and where each resource's text is; None when
    the text is not cut so (then it is parsed whole)."""
    try:
        found = pieces.elements(text, _MAX_DEPTH, deltas.cuts(text))
        if found is None:
            return None
        skeleton = pieces.skeleton_text(text, *found)
        deployment = cp.readable_deployment(cp.parse_deployment(skeleton)).get("deployment")
    except (ValueError, RecursionError):
        return None
    if not isinstance(deployment, dict) or deployment.get("resources") != ["1"]:
        return None  # the first '"resources":[' was not the deployment's
    return deployment, list(zip(*found, strict=True))
