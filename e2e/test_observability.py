"""An operator's view of a real `pulumi up`: the metrics of every replica, added up, show
the update, the bytes its steps stored and its requests by route; a request id sent
through the load balancer comes back and is in a replica's log line."""

from __future__ import annotations

import secrets
import urllib.request
from pathlib import Path

import pytest
from names import Names

from procella.api.routes import ROUTES
from procella_testing.cluster import Cluster
from procella_testing.metrics_text import Samples, add, delta, label_values, parse, total
from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import poll
from procella_testing.pulumi_cli import PulumiCLI, Stack

# The subject is metrics and request IDs, not how the CLI sends the state: one mode (conftest).
pytestmark = pytest.mark.any_mode

UPDATE = "/api/stacks/<org>/<project>/<stack>/<any(update, preview, refresh, destroy):kind>"
# The step route each mode takes, and the mode its stored bytes are counted under.
STEP_ROUTE = {
    "journal": ("/<update_id>/journalentries", "journal"),
    "delta": ("/<update_id>/checkpointdelta", "delta"),
    "full": ("/<update_id>/checkpoint", "whole"),
}


def replicas(server: ProcellaServer | Cluster) -> list[ProcellaServer]:
    """The live replicas: test_cluster.py kills one of the shared cluster's on purpose."""
    if not isinstance(server, Cluster):
        return [server]
    return server.live_replicas()


def scrape(server: ProcellaServer | Cluster) -> tuple[Samples, str]:
    """Every replica's /metrics (straight, not through the proxy), added up; and the texts."""
    texts = []
    for replica in replicas(server):
        with urllib.request.urlopen(replica.url + "/metrics", timeout=10) as response:
            assert response.status == 200
            texts.append(response.read().decode())
    return add(parse(text) for text in texts), "\n".join(texts)


def test_metrics_show_an_up(
    pulumi: PulumiCLI, server: ProcellaServer | Cluster, names: Names, project_dir: Path
) -> None:
    stack = Stack(pulumi, names.stack(), project_dir).init()
    before, _ = scrape(server)
    assert stack.up() == {"create": 8}
    after, texts = scrape(server)
    moved = delta(before, after)

    assert total(moved, "procella_updates_started_total", kind="update") >= 1
    assert total(moved, "procella_update_outcomes_total", kind="update", outcome="succeeded") >= 1
    step_route, mode = STEP_ROUTE[server.mode]
    assert total(moved, "procella_step_stored_bytes_count", mode=mode) >= 1
    assert total(moved, "procella_step_stored_bytes_sum", mode=mode) > 0
    assert total(moved, "procella_http_requests_total", route=UPDATE + step_route) >= 1
    assert total(moved, "procella_http_request_body_bytes_total", route=UPDATE + step_route) > 0
    complete = UPDATE + "/<update_id>/complete"
    assert total(moved, "procella_http_requests_total", route=complete, status="204") >= 1
    assert total(moved, "procella_db_query_seconds_count", statement="updates.get") >= 1
    # Labels are templates, never the stack's names.
    for name in (names.org, names.project):
        assert name not in texts
    templates = {rule for _, rule, _ in ROUTES} | {"/metrics", "<unmatched>"}
    assert label_values(moved, "route") <= templates


def test_a_request_id_comes_back_and_is_logged(server: ProcellaServer | Cluster) -> None:
    request_id = f"e2e-{secrets.token_hex(8)}"
    request = urllib.request.Request(
        server.url + "/api/user",
        headers={"Authorization": f"token {server.admin_token}", "X-Request-Id": request_id},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["X-Request-Id"] == request_id

    def logged() -> list[str]:
        lines = []
        for replica in replicas(server):
            text = replica.log_path.read_text(errors="replace")
            lines += [line for line in text.splitlines() if request_id in line]
        return lines

    (line,) = poll(logged, timeout=10, message=f"a log line with {request_id}")
    assert "procella.access" in line and "route=/api/user" in line and "status=200" in line
