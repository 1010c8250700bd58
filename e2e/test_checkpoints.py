"""The three modes (journal, delta, whole checkpoints) really take their protocol paths.

A failed `checkpointdelta` call is invisible to the user (the CLI silently resends the same
sequence number with `checkpointverbatim`), and a server that answered journalVersion 0 would
silently get checkpoints, so the other tests would pass with a broken path. Here the CLI logs
every API call (`--logtostderr -v=10`) and the test counts them.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from names import Names

from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import Result
from procella_testing.pulumi_cli import PulumiCLI, Stack, engine_changes

# glog line of the CLI's HTTP client (pkg/backend/httpstate/client/api.go, level 10).
RESPONSE_LINE = re.compile(r"Pulumi API call response code \((\S+)\): (\d{3})")
CHECKPOINT_CALLS = ("checkpoint", "checkpointverbatim", "checkpointdelta", "journalentries")


def checkpoint_calls(result: Result) -> Counter[tuple[str, str]]:
    """(call, HTTP status) of every checkpoint request the CLI made."""
    calls: Counter[tuple[str, str]] = Counter()
    for url, status in RESPONSE_LINE.findall(result.stderr):
        call = url.split("?", 1)[0].rsplit("/", 1)[1]
        if call in CHECKPOINT_CALLS:
            calls[(call, status)] += 1
    return calls


def logged_up(stack: Stack, *flags: str) -> Result:
    return stack.ok("up", "--yes", "--skip-preview", "--json", "--logtostderr", "-v=10", *flags)


def test_capabilities_advertise_the_mode(server: ProcellaServer, pulumi: PulumiCLI) -> None:
    status, body = server.api("GET", "/api/capabilities")
    assert status == 200, (status, body)
    advertised = {c["capability"]: c for c in body["capabilities"]}
    delta = advertised.get("delta-checkpoint-uploads-v2")
    if server.delta:
        assert delta is not None, body
        assert delta.get("version") == 2, delta
        assert delta["configuration"]["checkpointCutoffSizeBytes"] == 0, delta
    else:
        assert delta is None and "delta-checkpoint-uploads" not in advertised, body


def test_checkpoint_requests_follow_the_mode(
    pulumi: PulumiCLI, server: ProcellaServer, names: Names, project_dir: Path
) -> None:
    stack = Stack(pulumi, names.stack(), project_dir).init()
    for flags, expected in (((), {"create": 8}), (("--config", "generation=2"), None)):
        result = logged_up(stack, *flags)
        if expected is not None:
            assert engine_changes(result) == expected
        calls = checkpoint_calls(result)
        assert calls, f"no checkpoint calls logged:\n{result.stderr[-3000:]}"
        failed = {call: n for call, n in calls.items() if not call[1].startswith("2")}
        assert not failed, f"checkpoint calls failed: {failed}"
        by_call = Counter({call: n for (call, _), n in calls.items()})
        if server.mode == "journal":
            assert by_call["journalentries"] >= 1, by_call
            assert set(by_call) == {"journalentries"}, by_call
        elif server.delta:
            # Cutoff 0: the first save of every update is verbatim, every later one a delta.
            assert by_call["checkpointverbatim"] == 1, by_call
            assert by_call["checkpointdelta"] >= 3, by_call
            assert by_call["checkpoint"] == 0, by_call
        else:
            assert by_call["checkpoint"] >= 3, by_call
            assert by_call["checkpointverbatim"] == by_call["checkpointdelta"] == 0, by_call
            assert by_call["journalentries"] == 0, by_call
        assert "falling back" not in result.stderr

    # The state the server assembled from those requests is the engine's final state.
    state = stack.resources()
    assert "charlie" not in state
    assert state["alpha"]["outputs"]["value"] == "a2"
    assert stack.up() == {"same": 7}
