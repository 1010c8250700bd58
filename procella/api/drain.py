"""Answers given before the request body was read keep the connection usable.

A refused lease (403), a wrong method (405) or a body over the limit by its
Content-Length (413) is answered without reading the body. An HTTP/1.1 server must then
either read the rest of the body or close the connection, and a close it does not announce
resets a client that sends its next request on that connection (hypercorn closes it
silently). So when a response starts before the body has all arrived, this ASGI
middleware waits for the rest, if at most ``DRAIN_MAX_BYTES`` remain and they come within
``DRAIN_SECONDS`` (the app's receiver reads and discards it meanwhile); otherwise the
response says ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

DRAIN_MAX_BYTES = 1024 * 1024
DRAIN_SECONDS = 5.0

# ASGI messages are dicts; Quart's types name each kind, and this needs none of them.
Message = Any
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]


class DrainRequestBody:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _BodyProgress(_content_length(scope))

        async def tracked_receive() -> Message:
            message = await receive()
            body.saw(message)
            return message

        async def announced_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not await body.drained():
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, tracked_receive, announced_send)


class _BodyProgress:
    """How much of the request body the app has received, and whether all of it."""

    def __init__(self, expected: int | None) -> None:
        self.expected = expected
        self.received = 0
        self.complete = False
        self.limit: int | None = None  # while draining: give up past this many bytes
        self._changed = asyncio.Event()

    def saw(self, message: Message) -> None:
        if message["type"] == "http.disconnect":
            self.complete = True  # nobody to keep the connection for
        elif message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        if self.complete or (self.limit is not None and self.received > self.limit):
            self._changed.set()

    async def drained(self) -> bool:
        """Wait for the rest of the body, within bounds; whether it all arrived."""
        if self.complete:
            return True
        if self.expected is not None and self.expected - self.received > DRAIN_MAX_BYTES:
            return False
        self.limit = self.received + DRAIN_MAX_BYTES
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), DRAIN_SECONDS)
        return self.complete


def _content_length(scope: Any) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
