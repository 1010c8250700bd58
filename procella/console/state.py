"""A stack's state as the console shows it (pure): resources as a tree, values with their
secrets masked, and the difference between two versions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from procella.console.events import STACK_TYPE, urn_name, urn_type

# The signature key Pulumi marks secret values with (sdk/go/common/resource/sig).
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"
MASK = "[secret]"


@dataclass(frozen=True)
class Resource:
    urn: str
    type: str
    name: str
    custom: bool
    id: str
    parent: str
    provider: str  # the provider's name (its URN's last part), or ""
    protect: bool
    depth: int
    raw: dict[str, Any] = field(repr=False)


def parse(text: bytes) -> list[dict[str, Any]]:
    """The resources of an exported state (``{"version", "deployment"}``)."""
    value = json.loads(text)
    deployment = value.get("deployment") if isinstance(value, dict) else None
    found = deployment.get("resources") if isinstance(deployment, dict) else None
    return [r for r in found or [] if isinstance(r, dict)]


def tree(resources: list[dict[str, Any]]) -> list[Resource]:
    """The resources in tree order (each parent before its children, siblings in state
    order), each with its depth."""
    by_urn = {str(r.get("urn", "")): r for r in resources}
    children: dict[str, list[dict[str, Any]]] = {}
    roots: list[dict[str, Any]] = []
    for r in resources:
        parent = str(r.get("parent") or "")
        if parent and parent in by_urn and parent != r.get("urn"):
            children.setdefault(parent, []).append(r)
        else:
            roots.append(r)
    ordered: list[Resource] = []
    # Iterative DFS: a deep parent chain must not hit Python's recursion limit.
    stack: list[tuple[dict[str, Any], int]] = [(r, 0) for r in reversed(roots)]
    seen: set[str] = set()
    while stack:
        r, depth = stack.pop()
        urn = str(r.get("urn", ""))
        if urn in seen:
            continue
        seen.add(urn)
        ordered.append(_resource(r, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(urn, [])))
    return ordered


def _resource(r: dict[str, Any], depth: int) -> Resource:
    urn = str(r.get("urn", ""))
    # A provider reference is the provider's URN, "::", and its id.
    provider_parts = str(r.get("provider") or "").split("::")
    return Resource(
        urn=urn,
        type=str(r.get("type") or urn_type(urn)),
        name=urn_name(urn),
        custom=bool(r.get("custom")),
        id=str(r.get("id") or ""),
        parent=str(r.get("parent") or ""),
        provider=provider_parts[-2] if len(provider_parts) >= 2 else "",
        protect=bool(r.get("protect")),
        depth=depth,
        raw=r,
    )


def stack_outputs(resources: list[dict[str, Any]]) -> dict[str, Any]:
    for r in resources:
        if r.get("type") == STACK_TYPE and isinstance(r.get("outputs"), dict):
            outputs: dict[str, Any] = r["outputs"]
            return outputs
    return {}


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE


def masked(value: Any) -> Any:
    """``value`` with every secret replaced by ``[secret]``."""
    if is_secret(value):
        return MASK
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def pretty(value: Any) -> str:
    return json.dumps(masked(value), indent=2, ensure_ascii=False, sort_keys=True)


def ciphertext(value: Any) -> str | None:
    """The service provider's ciphertext of a secret value (None for any other)."""
    if is_secret(value) and isinstance(value.get("ciphertext"), str):
        found: str = value["ciphertext"]
        return found
    return None


@dataclass(frozen=True)
class Change:
    urn: str
    kind: str  # "added", "removed" or "changed"
    keys: list[str]  # the changed input and output keys ("inputs.x", "outputs.y")
    old: dict[str, Any]
    new: dict[str, Any]


def diff(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[Change]:
    """What differs between two states, resource by resource, in the new state's order."""
    before = {str(r.get("urn", "")): r for r in old}
    after = {str(r.get("urn", "")): r for r in new}
    changes: list[Change] = []
    for urn, r in after.items():
        if urn not in before:
            changes.append(Change(urn, "added", [], {}, r))
            continue
        keys = _changed_keys(before[urn], r)
        if keys:
            changes.append(Change(urn, "changed", keys, before[urn], r))
    changes.extend(
        Change(urn, "removed", [], r, {}) for urn, r in before.items() if urn not in after
    )
    return changes


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = []
    for part in ("inputs", "outputs"):
        a, b = old.get(part) or {}, new.get(part) or {}
        for key in sorted(set(a) | set(b)):
            # Secrets compare as equal: each update encrypts afresh, so their ciphertexts
            # differ whether or not the value did, and the console does not decrypt to diff.
            if masked(a.get(key)) != masked(b.get(key)):
                keys.append(f"{part}.{key}")
    for attr in ("parent", "provider", "protect", "id", "dependencies"):
        if old.get(attr) != new.get(attr):
            keys.append(attr)
    return keys


def value_at(resource: dict[str, Any], key: str) -> str:
    """A changed key's value (secrets masked), for the diff page."""
    part, _, name = key.partition(".")
    value = (resource.get(part) or {}).get(name) if name else resource.get(part)
    return "" if value is None else json.dumps(masked(value), ensure_ascii=False, sort_keys=True)
