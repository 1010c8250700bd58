"""Pure rules for checkpoint texts. Everything here works on bytes and never re-serializes.

A stored checkpoint is the UntypedDeployment wrapper ``{"version":V,"deployment":{...}}``
exactly as the CLI produced it, because delta checkpoints are byte offsets into that text
and a SHA-256 of the result (pulumi pkg/backend/httpstate/diffs.go).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from procella.errors import BadRequest

# The deployment schema versions the CLI reads, and the features a v4 deployment may
# declare (pulumi sdk/go/common/apitype, DeploymentSchemaVersionLatest = 4).
MIN_SCHEMA, MAX_SCHEMA = 1, 4
KNOWN_FEATURES = frozenset(
    {
        "refreshBeforeUpdate",
        "views",
        "hooks",
        "taint",
        "replaceWith",
        "snippets-prototype",
        "extensionParameterization",
        "byteString",
    }
)

# What a stack that was never updated exports: a valid, empty v3 deployment.
EMPTY_DEPLOYMENT = (
    b'{"version":3,"deployment":{"manifest":{"time":"0001-01-01T00:00:00Z",'
    b'"magic":"","version":""}}}'
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_schema(version: object, features: object) -> list[str]:
    """Validate a deployment's ``version`` and ``features``; return the features."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise BadRequest("deployment version must be an integer")
    if not MIN_SCHEMA <= version <= MAX_SCHEMA:
        raise BadRequest(f"unsupported deployment version {version}: use 1 to {MAX_SCHEMA}")
    if features is None:
        return []
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise BadRequest("features must be a list of strings")
    unknown = sorted(set(features) - KNOWN_FEATURES)
    if unknown:
        raise BadRequest(f"unsupported deployment features: {', '.join(unknown)}")
    if features and version < 4:
        raise BadRequest("features need deployment version 4")
    return list(features)


def check_untyped_deployment(value: object) -> None:
    """Validate a parsed UntypedDeployment wrapper ``{"version","features"?,"deployment"}``."""
    if not isinstance(value, dict):
        raise BadRequest("the deployment must be a JSON object")
    check_schema(value.get("version"), value.get("features"))
    if not isinstance(value.get("deployment"), dict):
        raise BadRequest("the deployment must have a 'deployment' object")


@dataclass(frozen=True)
class State:
    """A validated UntypedDeployment text, exactly as received, and its resource count."""

    text: bytes
    resource_count: int


def state_of(text: bytes, parsed: object) -> State:
    """Validate ``parsed`` (the JSON of ``text``) as a deployment and wrap both."""
    check_untyped_deployment(parsed)
    assert isinstance(parsed, dict)
    return State(text, count_resources(parsed))


def parse_state(text: bytes) -> State:
    """Parse and validate a text that must be a deployment (e.g. the result of a delta)."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("the checkpoint is not valid JSON") from None
    return state_of(text, parsed)


def wrap_deployment(version: int, features: Sequence[str], deployment: bytes | memoryview) -> bytes:
    """Build the wrapper around a raw ``deployment`` text without touching its bytes."""
    head = b'{"version":' + str(version).encode()
    if features:
        head += b',"features":' + json.dumps(list(features), separators=(",", ":")).encode()
    return b"".join((head, b',"deployment":', deployment, b"}"))


@dataclass(frozen=True)
class TextEdit:
    """One edit of a delta: replace ``prev[start:end]`` with ``new_text``."""

    start: int
    end: int
    new_text: bytes


def parse_text_edits(value: object) -> list[TextEdit]:
    """Parse the CLI's ``deploymentDelta`` (gotextdiff TextEdits, offsets in bytes)."""
    if not isinstance(value, list):
        raise BadRequest("deploymentDelta must be a list of edits")
    edits = []
    for i, item in enumerate(value):
        try:
            span = item["Span"]
            start = span["start"]["offset"]
            end = span["end"]["offset"]
            new_text = item["NewText"]
        except (KeyError, TypeError):
            raise BadRequest(f"deploymentDelta[{i}] is not a text edit") from None
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise BadRequest(f"deploymentDelta[{i}] offsets must be integers")
        if not isinstance(new_text, str):
            raise BadRequest(f"deploymentDelta[{i}].NewText must be a string")
        try:
            encoded = new_text.encode()
        except UnicodeEncodeError:
            raise BadRequest(f"deploymentDelta[{i}].NewText is not valid Unicode") from None
        edits.append(TextEdit(start, end, encoded))
    return edits


def apply_text_edits(prev: bytes, edits: Sequence[TextEdit]) -> bytes:
    """Apply non-overlapping edits (in any order) to ``prev``; raise BadRequest if invalid."""
    parts: list[bytes] = []
    last = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if not 0 <= edit.start <= edit.end <= len(prev):
            raise BadRequest(
                f"edit span {edit.start}..{edit.end} is outside the previous checkpoint "
                f"({len(prev)} bytes)"
            )
        if edit.start < last:
            raise BadRequest(f"edit spans overlap at offset {edit.start}")
        parts.append(prev[last : edit.start])
        parts.append(edit.new_text)
        last = edit.end
    parts.append(prev[last:])
    return b"".join(parts)


def parse_deployment(text: bytes) -> dict[str, Any]:
    """Parse a stored checkpoint text (trusted: it passed validation when written)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("checkpoint is not a JSON object")
    return value


def count_resources(wrapper: dict[str, Any]) -> int:
    deployment = wrapper.get("deployment")
    if not isinstance(deployment, dict):
        return 0
    resources = deployment.get("resources")
    return len(resources) if isinstance(resources, list) else 0


# diffs.go's marshalSpannedDeployment (every CLI that sends delta checkpoints) writes pending
# operations under this key, which the CLI's own reader ignores, and only when there are
# more than nine of them. The stored text keeps the CLI's bytes (delta hashes cover them);
# what is read back (export, a journal's base) uses the key the reader knows.
_CLI_PENDING_KEY = "pendingOperations"
_PENDING_KEY = "pending_operations"


def readable_deployment(wrapper: dict[str, Any]) -> dict[str, Any]:
    """``wrapper`` with pending operations under the key the CLI reads (changed in place)."""
    deployment = wrapper.get("deployment")
    if isinstance(deployment, dict) and _CLI_PENDING_KEY in deployment:
        pending = deployment.pop(_CLI_PENDING_KEY)
        if pending and not deployment.get(_PENDING_KEY):
            deployment[_PENDING_KEY] = pending
    return wrapper


def readable_text(text: bytes) -> bytes:
    """``text`` as the CLI must read it: the stored bytes unless they hold pending
    operations under the delta writer's key (rare: then parsed and written anew)."""
    if f'"{_CLI_PENDING_KEY}":'.encode() not in text:
        return text
    wrapper = parse_deployment(text)
    deployment = wrapper.get("deployment")
    if not isinstance(deployment, dict) or _CLI_PENDING_KEY not in deployment:
        return text  # the key was in a resource's properties, not the deployment's
    readable = readable_deployment(wrapper)
    return json.dumps(readable, separators=(",", ":"), ensure_ascii=False).encode()
