"""Engine events as the CLI prints them (pure: no I/O, no HTML).

Each stored event becomes zero or more ``Line``s, in the shape of the CLI's non-interactive
output (``pkg/backend/display``): a step's op symbol, the resource's type and name, and what
happened (``creating``, ``created``, ``**creating failed**``); diagnostics with their severity;
the program's own output. ``Summary`` collects what the CLI prints at the end: the
diagnostics by resource, the stack's outputs, the counts of changes and the duration.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# The CLI's color directives, e.g. <{%fg 1%}> and <{%reset%}>, and raw ANSI escapes.
_COLORS = re.compile(r"<\{%[^%]*%\}>|\x1b\[[0-9;]*m")

# deploy.Op -> (symbol, while running, when done, in a preview). pkg/resource/deploy/step.go
OPS: dict[str, tuple[str, str, str, str]] = {
    "same": (" ", "", "", ""),
    "create": ("+", "creating", "created", "create"),
    "update": ("~", "updating", "updated", "update"),
    "delete": ("-", "deleting", "deleted", "delete"),
    "replace": ("+-", "replacing", "replaced", "replace"),
    "create-replacement": (
        "++",
        "creating replacement",
        "created replacement",
        "create replacement",
    ),
    "delete-replaced": ("--", "deleting original", "deleted original", "delete original"),
    "read": (">", "reading", "read", "read"),
    "read-replacement": (
        ">>",
        "reading for replacement",
        "read for replacement",
        "read for replacement",
    ),
    "refresh": ("~", "refreshing", "refreshed", "refresh"),
    "read-discard": ("<", "discarding", "discarded", "discard"),
    "discard-replaced": ("<<", "discarding original", "discarded original", "discard original"),
    "remove-pending-replace": (
        "-",
        "removing pending replace",
        "removed pending replace",
        "remove pending replace",
    ),
    "import": ("=", "importing", "imported", "import"),
    "import-replacement": (
        "=>",
        "importing replacement",
        "imported replacement",
        "import replacement",
    ),
}
# How the CLI names each count in "Resources:" (display/summary).
CHANGE_WORDS = {
    "create": "created", "update": "updated", "delete": "deleted", "replace": "replaced",
    "read": "read", "refresh": "refreshed", "import": "imported", "same": "unchanged",
}  # fmt: skip
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True)
class Line:
    kind: str  # a CSS class: the op ("create", ...), "error", "warning", "info", "stdout"
    symbol: str
    text: str


@dataclass
class Summary:
    """What the CLI prints after the steps."""

    diagnostics: dict[str, list[Line]] = field(default_factory=dict)  # resource label -> lines
    outputs: dict[str, Any] | None = None
    changes: dict[str, int] | None = None
    duration_seconds: int | None = None
    cancelled: bool = False


def plain(text: str) -> str:
    """A message without the CLI's color directives."""
    return _COLORS.sub("", text)


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def urn_type(urn: str) -> str:
    parts = urn.split("::")
    return parts[-2].rsplit("$", 1)[-1] if len(parts) >= 2 else ""


def render(events: list[str], preview: bool, summary: Summary) -> list[Line]:
    """The lines of these events (stored JSON texts, in order); ``summary`` collects the rest."""
    lines: list[Line] = []
    for text in events:
        try:
            event = json.loads(text)
        except ValueError:
            continue
        if isinstance(event, dict):
            lines.extend(_event_lines(event, preview, summary))
    return lines


def _event_lines(event: dict[str, Any], preview: bool, summary: Summary) -> list[Line]:
    for kind, body in event.items():
        if not isinstance(body, dict):
            continue
        if kind == "resourcePreEvent":
            return _step(body.get("metadata"), preview, done=False)
        if kind == "resOutputsEvent":
            _collect_outputs(body.get("metadata"), summary)
            return _step(body.get("metadata"), preview, done=True)
        if kind == "resOpFailedEvent":
            return _failed(body.get("metadata"))
        if kind == "diagnosticEvent":
            return _diagnostic(body, summary)
        if kind == "policyEvent":
            return _policy(body, summary)
        if kind == "stdoutEvent":
            message = plain(str(body.get("message", ""))).rstrip("\n")
            return [Line("stdout", "", message)] if message else []
        if kind == "summaryEvent":
            changes = body.get("resourceChanges")
            if isinstance(changes, dict):
                summary.changes = {str(k): int(v) for k, v in changes.items() if _is_int(v)}
            if _is_int(body.get("durationSeconds")):
                summary.duration_seconds = int(body["durationSeconds"])
            return []
        if kind == "cancelEvent":
            summary.cancelled = True
            return [Line("error", "", "the update was cancelled")]
    return []


def _step(metadata: Any, preview: bool, *, done: bool) -> list[Line]:
    if not isinstance(metadata, dict):
        return []
    op = str(metadata.get("op", ""))
    if op == "same":
        return []  # the CLI does not list unchanged resources as they go by
    symbol, running, finished, planned = OPS.get(op, ("*", op, op, op))
    if preview:
        if not done:
            return []  # a preview prints each step once, when it is planned
        status = planned
    else:
        status = finished if done else running
    urn = str(metadata.get("urn", ""))
    return [Line(op, symbol, f"{metadata.get('type') or urn_type(urn)} {urn_name(urn)} {status}")]


def _failed(metadata: Any) -> list[Line]:
    if not isinstance(metadata, dict):
        return []
    op = str(metadata.get("op", ""))
    symbol, running, _, _ = OPS.get(op, ("*", op, op, op))
    urn = str(metadata.get("urn", ""))
    text = f"{metadata.get('type') or urn_type(urn)} {urn_name(urn)} **{running} failed**"
    return [Line("error", symbol, text)]


def _diagnostic(body: dict[str, Any], summary: Summary) -> list[Line]:
    severity = str(body.get("severity", "info"))
    message = plain(str(body.get("message", ""))).rstrip("\n")
    if not message or body.get("ephemeral"):
        return []
    urn = str(body.get("urn") or "")
    label = f"{urn_type(urn)} ({urn_name(urn)})" if urn else ""
    kind = severity if severity in ("error", "warning") else "info"
    line = Line(kind, "", f"{severity}: {message}" if severity != "info" else message)
    summary.diagnostics.setdefault(label, []).append(line)
    where = f"{label}: " if label else ""
    return [Line(kind, "", f"    {where}{line.text}")]


def _policy(body: dict[str, Any], summary: Summary) -> list[Line]:
    level = str(body.get("enforcementLevel", "advisory"))
    message = plain(str(body.get("message", ""))).rstrip("\n")
    kind = "error" if level == "mandatory" else "warning"
    line = Line(kind, "", f"{level}: [{body.get('policyName', '')}] {message}")
    summary.diagnostics.setdefault("policy violations", []).append(line)
    return [line]


def _collect_outputs(metadata: Any, summary: Summary) -> None:
    if not isinstance(metadata, dict) or metadata.get("type") != STACK_TYPE:
        return
    new = metadata.get("new")
    if isinstance(new, dict) and isinstance(new.get("outputs"), dict):
        summary.outputs = new["outputs"]


def change_lines(changes: dict[str, int]) -> list[Line]:
    """The "Resources:" block: ``+ 3 created``, ``2 unchanged``, in the CLI's order (the
    order of its ops, unchanged last)."""
    order = {op: rank for rank, op in enumerate([*(op for op in OPS if op != "same"), "same"])}
    ranked = sorted(changes.items(), key=lambda kv: order.get(kv[0], len(order)))
    lines = []
    for op, count in ranked:
        if count <= 0:
            continue
        word = CHANGE_WORDS.get(op, op)
        symbol = OPS.get(op, ("", "", "", ""))[0].strip()
        lines.append(Line(op, symbol, f"{count} {word}"))
    return lines


def duration(seconds: int) -> str:
    """The CLI's ``Duration:`` format: ``1m5s``, ``3s``."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def changes_text(changes: dict[str, int]) -> str:
    """The counts on one line, for tables: ``1 updated, 1 deleted`` (unchanged left out)."""
    return ", ".join(line.text for line in change_lines(changes) if line.kind != "same")
