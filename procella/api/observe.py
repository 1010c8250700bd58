"""Every request observed: its id, its access line, its metrics; and ``GET /metrics``.

``ObserveRequests`` is the outermost ASGI middleware. It takes the request id from
``X-Request-Id`` when the value is sane (a proxy such as Caddy may set one) or makes one,
binds it for the logs (``procella.logs``), returns it in the response, counts body bytes
both ways, and at the end writes one access line and the request metrics. What only the
app knows (route template, stack, update, caller) it learns through ``logs.note``, from
the hook below and from the authentication helpers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

from quart import Quart, Response, current_app, request

from procella import logs, metrics
from procella.api.context import EXTENSION
from procella.api.drain import ASGIApp, Message, Receive, Send
from procella.api.errors import error_response
from procella.errors import ProcellaError
from procella.services import Services
from procella.settings import Settings
from procella.updates.models import UPDATE_KINDS

access_log = logging.getLogger("procella.access")
log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
# Printable, no spaces or quotes, bounded: safe in a log line and a response header.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
UNMATCHED = "<unmatched>"
Network = IPv4Network | IPv6Network
METRICS_ROUTE = "/metrics"
# Probes arrive every few seconds from each load balancer and scraper: their access lines
# go at DEBUG, so INFO shows the traffic that matters.
_PROBES = frozenset({"/healthz", "/readyz", METRICS_ROUTE})
_VIEW_ARGS = ("org", "project", "stack", "update_id")


class ObserveRequests:
    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        context = logs.RequestContext(
            request_id(headers), client_address(scope, headers, self.trusted_proxies)
        )
        exchange = _Exchange()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.bytes_in += len(message.get("body", b""))
            elif message["type"] == "http.disconnect":
                # Quart cancels the handler and returns without an answer: a hang-up too.
                exchange.cancelled = True
            return message

        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
                header = (REQUEST_ID_HEADER, context.request_id.encode())
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body":
                exchange.bytes_out += len(message.get("body", b""))
            await send(message)

        token = logs.bind(context)
        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, counting_receive, tagging_send)
        except asyncio.CancelledError:
            exchange.cancelled = True  # the client went away
            raise
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            try:
                exchange.finish(scope["method"], scope.get("path", ""), context)
            finally:
                logs.unbind(token)


def request_id(headers: Any) -> str:
    """The caller's ``X-Request-Id`` if sane, else a new one."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(text):
                return str(text)
            break
    return uuid.uuid4().hex


def client_address(scope: Any, headers: Any, trusted: Sequence[Network]) -> str:
    """The caller's address: the peer's, or, when the peer is a trusted proxy, the nearest
    address in ``X-Forwarded-For`` that is not one (each proxy appends the one it saw)."""
    peer = scope.get("client")
    address = str(peer[0]) if peer else ""
    if not trusted or not _is_trusted(address, trusted):
        return address
    forwarded = [
        hop.strip()
        for name, value in headers
        if name.lower() == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
    ]
    for hop in reversed(forwarded):
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address[:64]


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class _Exchange:
    """What went over the wire for one request."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.status: int | None = None
        self.cancelled = False
        self.bytes_in = 0
        self.bytes_out = 0

    def finish(self, raw_method: str, path: str, context: logs.RequestContext) -> None:
        seconds = time.perf_counter() - self.started
        method = metrics.method_label(raw_method)
        route = context.fields.get("route", UNMATCHED)
        # No answer: the client hung up (499, as nginx logs it) or the app failed (500).
        status = self.status or (499 if self.cancelled else 500)
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_DURATION.labels(method, route, str(status)).observe(seconds)
        metrics.HTTP_BYTES_IN.labels(method, route).inc(self.bytes_in)
        metrics.HTTP_BYTES_OUT.labels(method, route).inc(self.bytes_out)
        level = logging.DEBUG if route in _PROBES else logging.INFO
        if access_log.isEnabledFor(level):
            fields: dict[str, object] = {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                **{k: v for k, v in context.fields.items() if k != "route"},
            }
            if route == UNMATCHED:  # no template to tell what was asked for
                fields["path"] = path
            _log_access(level, fields, context.request_id)


def _log_access(level: int, fields: dict[str, object], request_id: str) -> None:
    # The text line gets the request id from RequestIdFilter, as every line does.
    message = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
    access_log.log(level, message, extra={"fields": {**fields, "request_id": request_id}})


_PLAIN = re.compile(r"[\w.:/<>@+=-]*")


def _text(value: object) -> str:
    """A value for a key=value line: as is when plain, else JSON-quoted (URL segments may
    hold spaces or newlines, which must not split or forge a line)."""
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def register(app: Quart, settings: Settings) -> None:
    """``GET /metrics``, and the hook that tells the access line what route was matched."""
    metrics_port = settings.metrics_host_port[1] if settings.metrics_host_port else None
    app.add_url_rule(METRICS_ROUTE, "metrics", metrics_view, methods=["GET"])

    @app.before_request
    async def observe_route() -> Response | None:
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        if metrics_port is not None and (route == METRICS_ROUTE) != _on_port(metrics_port):
            # With a metrics listener, /metrics is there only, and nothing else is.
            logs.note(route=UNMATCHED)
            return error_response(404, "not found")
        args = request.view_args or {}
        logs.note(route=route, **{k: args[k] for k in _VIEW_ARGS if isinstance(args.get(k), str)})
        return None


def _on_port(port: int) -> bool:
    """Whether the request came in on the listener bound to ``port``."""
    server = request.scope.get("server")
    return server is not None and server[1] == port


async def metrics_view() -> Response:
    services: Services | None = current_app.extensions.get(EXTENSION)
    if services is not None:
        await _count_running_updates(services)
    return Response(metrics.render(), content_type=metrics.CONTENT_TYPE)


async def _count_running_updates(services: Services) -> None:
    """Set the cluster-wide gauges from the database: one grouped count per scrape."""
    try:
        rows = await services.updates.running_counts()
    except ProcellaError as exc:  # the database is down: serve the other metrics anyway
        log.warning("metrics: cannot count running updates: %s", exc.message)
        return
    counts = dict.fromkeys(UPDATE_KINDS, 0)
    live = 0
    for kind, is_preview, lease_live, n in rows:
        label = metrics.update_kind(kind, is_preview)
        if label in counts:
            counts[label] += n
        live += n if lease_live else 0
    for kind, n in counts.items():
        metrics.UPDATES_ACTIVE.labels(kind).set(n)
    metrics.LEASES_ACTIVE.set(live)
