"""Metrics, request ids and access lines, through the Quart test client.

Metrics are per process and the tests share the process, so each test compares a scrape
before with one after (``delta``) rather than absolute values.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator

import pytest
from quart import typing as quart_typing

from procella import create_app, logs
from procella.settings import Settings
from procella.workers.supervisor import Supervisor
from procella_testing.metrics_text import Samples, delta, label_values, parse, total
from tests.conftest import ADMIN_TOKEN
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_ok,
    expire_lease,
    journal_entry,
    quart_app,
    resource_state,
    services_of,
    started_app,
    untyped,
)

STACK_ROUTE = "/api/stacks/<org>/<project>/<stack>"
UPDATE_ROUTE = "/api/stacks/<org>/<project>/<stack>/<any(update, preview, refresh, destroy):kind>"


async def scrape(client: quart_typing.TestClientProtocol) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return parse(await response.get_data(as_text=True))


@pytest.fixture
def names() -> tuple[str, str]:
    """A project and stack name no label may ever show."""
    token = secrets.token_hex(4)
    return f"proj-{token}", f"stack-{token}"


async def test_metrics_label_requests_by_route_template(
    app: quart_typing.TestAppProtocol, api: Api, names: tuple[str, str]
) -> None:
    project, name = names
    stack = await api.new_stack(f"{DEFAULT_ORG}/{project}/{name}")
    before = await scrape(api.client)
    await api.run_update(stack, untyped(3))
    assert (await api.call("GET", f"/api/stacks/{stack}/no/such/path")).status_code == 404
    text = await (await api.client.get("/metrics")).get_data(as_text=True)
    moved = delta(before, parse(text))

    # No raw path, stack, project or token anywhere; every route is a template of the table.
    for secret in (project, name, api.token):
        assert secret not in text
    templates = {rule.rule for rule in quart_app(app).url_map.iter_rules()}
    assert label_values(moved, "route") <= templates | {"<unmatched>"}
    assert total(moved, "procella_http_requests_total", route="<unmatched>", status="404") == 1
    assert total(moved, "procella_http_requests_total", route=UPDATE_ROUTE, method="POST") == 1
    assert total(moved, "procella_http_request_duration_seconds_count", route=STACK_ROUTE) == 0
    checkpoint = UPDATE_ROUTE + "/<update_id>/checkpoint"
    assert total(moved, "procella_http_requests_total", route=checkpoint, status="204") == 1
    assert total(moved, "procella_http_request_body_bytes_total", route=checkpoint) > 0
    assert total(moved, "procella_http_response_body_bytes_total", route=UPDATE_ROUTE) > 0
    # The update: started, one whole checkpoint stored, succeeded.
    assert total(moved, "procella_updates_started_total", kind="update") == 1
    assert total(moved, "procella_step_stored_bytes_count", mode="whole") == 1
    assert total(moved, "procella_step_stored_bytes_sum", mode="whole") > 100
    assert total(moved, "procella_update_outcomes_total", kind="update", outcome="succeeded") == 1
    # The stores: statements by query function, checkouts, blob operations by backend.
    assert total(moved, "procella_db_query_seconds_count", statement="updates.get") >= 1
    statements = label_values(moved, "statement")
    assert statements & {"checkpoints.save_step", "checkpoints._save_step_pg"}
    assert all(re.fullmatch(r"[a-z_]+\.[a-z_]+", name) for name in statements), statements
    assert total(moved, "procella_db_checkout_seconds_count") > 5
    scraped = parse(text)
    assert label_values(scraped, "backend") & {"local", "s3"}
    assert ("procella_db_pool_max_connections", frozenset()) in scraped


async def test_active_updates_and_leases_come_from_the_database(api: Api) -> None:
    stack = await api.new_stack(f"{DEFAULT_ORG}/proj/dev")
    update = await api.started(stack)
    during = await scrape(api.client)
    assert total(during, "procella_updates_active", kind="update") == 1
    assert total(during, "procella_updates_active", kind="preview") == 0
    assert total(during, "procella_leases_active") == 1
    await assert_ok(await api.renew(update), 200)
    await assert_ok(await api.complete(update), 204)
    after = await scrape(api.client)
    assert total(after, "procella_updates_active") == 0
    assert total(after, "procella_leases_active") == 0
    assert total(delta(during, after), "procella_lease_renewals_total", result="renewed") == 1


async def test_journal_bytes_are_counted_by_mode(api: Api) -> None:
    stack = await api.new_stack(f"{DEFAULT_ORG}/proj/dev")
    update = await api.begin(await api.new_update(stack), {"journalVersion": 1})
    before = await scrape(api.client)
    entries = [journal_entry(1, 1, 1, state=resource_state("a"))]
    await assert_ok(await api.journal(update, entries), 204)
    moved = delta(before, await scrape(api.client))
    assert total(moved, "procella_step_stored_bytes_count", mode="journal") == 1
    assert total(moved, "procella_step_stored_bytes_sum", mode="journal") > 50


async def test_cancel_counts_an_aborted_update(api: Api) -> None:
    stack = await api.new_stack(f"{DEFAULT_ORG}/proj/dev")
    update = await api.started(stack, "refresh")
    before = await scrape(api.client)
    await assert_ok(await api.cancel(update), 204)
    moved = delta(before, await scrape(api.client))
    assert total(moved, "procella_update_outcomes_total", kind="refresh", outcome="aborted") == 1


async def test_request_id_is_echoed_when_sane_and_made_otherwise(
    client: quart_typing.TestClientProtocol,
) -> None:
    given = "req-1234.abc:def/ghi=="
    response = await client.get("/healthz", headers={"X-Request-Id": given})
    assert response.headers["X-Request-Id"] == given
    made = (await client.get("/healthz")).headers["X-Request-Id"]
    assert len(made) == 32 and made != given
    for bad in ("x" * 129, "has space", 'quote"d', "tab\there", "é"):
        response = await client.get("/healthz", headers={"X-Request-Id": bad})
        echoed = response.headers["X-Request-Id"]
        assert echoed != bad and len(echoed) == 32
    # Errors carry it too.
    response = await client.get("/api/nope", headers={"X-Request-Id": "err-1"})
    assert response.status_code == 404 and response.headers["X-Request-Id"] == "err-1"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "procella.access"]


async def test_access_line_fields(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    stack = await api.new_stack(f"{DEFAULT_ORG}/proj/dev")
    update = await api.started(stack)
    caplog.set_level(logging.INFO, logger="procella")
    caplog.clear()
    await api.call("GET", f"/api/stacks/{stack}", headers={"X-Request-Id": "get-stack-1"})
    await api.renew(update)
    get_line, renew_line = access_lines(caplog)
    assert get_line.levelno == logging.INFO
    fields = get_line.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == "get-stack-1"
    assert {k: fields[k] for k in ("method", "route", "status", "login")} == {
        "method": "GET",
        "route": STACK_ROUTE,
        "status": 200,
        "login": "admin",
    }
    assert (fields["org"], fields["project"], fields["stack"]) == (DEFAULT_ORG, "proj", "dev")
    assert fields["duration_ms"] >= 0 and fields["bytes_out"] > 0 and fields["bytes_in"] == 0
    assert f"route={STACK_ROUTE}" in get_line.getMessage()
    # A lease call: the update id, and the login of whoever holds the update.
    renewed = renew_line.fields  # type: ignore[attr-defined]
    assert renewed["update_id"] == update.id and renewed["login"] == "admin"
    assert renewed["bytes_in"] > 0


async def test_a_client_that_hangs_up_is_logged_as_499_not_500(
    app: quart_typing.TestAppProtocol, caplog: pytest.LogCaptureFixture
) -> None:
    # Half a body, then the connection closes: Quart cancels the handler and returns without
    # an answer, which is the client's doing, not a server error.
    body = b'{"stackName": "dev"}'
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/api/stacks/{DEFAULT_ORG}/proj-hangup",
        "raw_path": f"/api/stacks/{DEFAULT_ORG}/proj-hangup".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"token {ADMIN_TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages: list[dict[str, object]] = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    caplog.set_level(logging.INFO, logger="procella")
    caplog.clear()
    await app.app(scope, receive, send)  # type: ignore[attr-defined]
    assert not [m for m in sent if m["type"] == "http.response.start"]
    [line] = access_lines(caplog)
    assert line.fields["status"] == 499  # type: ignore[attr-defined]
    assert line.levelno == logging.INFO


async def test_probes_log_at_debug(
    client: quart_typing.TestClientProtocol, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="procella.access")
    await client.get("/healthz")
    (line,) = access_lines(caplog)
    assert line.levelno == logging.DEBUG


async def test_a_hostile_path_segment_cannot_forge_a_log_line(
    client: quart_typing.TestClientProtocol, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="procella.access")
    await client.get("/api/stacks/org/proj/dev%0Afake=1", headers={"Authorization": "token x"})
    (line,) = access_lines(caplog)
    assert "\n" not in line.getMessage()


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Procella's log lines as ``procella serve --log-format json`` writes them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RequestIdFilter())
    logger = logging.getLogger("procella")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_json_lines_carry_the_request_id(api: Api, json_lines: io.StringIO) -> None:
    stack = await api.new_stack(f"{DEFAULT_ORG}/proj/dev")
    update = await api.new_update(stack)
    response = await api.call(
        "POST", update.path, {"tags": None}, headers={"X-Request-Id": "start-42"}
    )
    await assert_ok(response, 200)
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == "start-42"]
    service = [line for line in mine if line["logger"] == "procella.updates.service"]
    assert service and update.id in service[0]["message"], lines
    (access,) = [line for line in mine if line["logger"] == "procella.access"]
    assert access["level"] == "INFO" and access["status"] == 200
    assert access["update_id"] == update.id and access["stack"] == "dev"
    assert access["time"].endswith("Z")


def logging_state() -> list[tuple[str, int, list[logging.Handler]]]:
    names = ("", "psycopg", "psycopg.pool", "aiosqlite", "botocore", "hypercorn.access")
    loggers = [logging.getLogger(name) for name in (*names, "procella", "procella.access")]
    return [(lg.name, lg.level, list(lg.handlers)) for lg in loggers]


async def test_a_host_that_mounts_the_app_keeps_its_logging(settings: Settings) -> None:
    before = logging_state()
    app = create_app(settings)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        response = await client.get("/api/user", headers={"Authorization": "token nope"})
        assert response.status_code == 401
        assert (await client.get("/api/nowhere")).status_code == 404
    assert logging_state() == before


async def test_a_metrics_listener_serves_metrics_alone(settings: Settings) -> None:
    app = create_app(settings.replace(listen_addr="127.0.0.1:9090", metrics_listen_addr=":9100"))
    main = {"server": ("127.0.0.1", 9090)}
    metrics = {"server": ("127.0.0.1", 9100)}
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/metrics", scope_base=metrics)).status_code == 200
        assert (await client.get("/metrics", scope_base=main)).status_code == 404
        assert (await client.get("/healthz", scope_base=metrics)).status_code == 404
        assert (await client.get("/healthz", scope_base=main)).status_code == 200


async def test_gc_cycles_and_what_they_collect(settings: Settings) -> None:
    async with started_app(settings) as app:
        api = Api(app.test_client())
        stack = await api.new_stack(f"{DEFAULT_ORG}/proj/dev")
        update = await api.started(stack, "destroy")
        await expire_lease(app, update.id)
        services = services_of(app)
        supervisor = Supervisor(services.meta, services.blobs, services.settings)
        before = await scrape(api.client)
        async with services.meta.exclusive("gc") as held:  # another replica holds the lock
            assert held and not await supervisor.gc_tick()
        assert await supervisor.gc_tick()
        after = await scrape(api.client)
    moved = delta(before, after)
    assert total(moved, "procella_gc_cycles_total", result="skipped") == 1
    assert total(moved, "procella_gc_cycles_total", result="ran") == 1
    assert total(moved, "procella_gc_cycle_duration_seconds_count") == 1
    assert total(moved, "procella_gc_collected_total", item="expired_leases") == 1
    assert total(moved, "procella_lease_expiries_total") == 1
    assert total(moved, "procella_update_outcomes_total", kind="destroy", outcome="expired") == 1
    assert total(after, "procella_gc_lock_held") == 0  # held only while a cycle runs
    assert total(after, "procella_gc_last_cycle_timestamp_seconds") > time.time() - 60
