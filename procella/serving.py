"""``procella serve``: hypercorn, the logging of the process, and the metrics of its workers.

This is the one place that configures logging and the C allocator (``procella.memory``;
``create_app`` never does either). With several
worker processes, each configures its own (``worker_app``), and the serve command gives
them a fresh ``PROMETHEUS_MULTIPROC_DIR`` for the run, so a scrape of any worker reports
the sum of all of them; the directory is removed when the server exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from procella import logs, memory
from procella.settings import Settings

if TYPE_CHECKING:
    from quart import Quart

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; the exit code."""
    logs.configure(settings.log_level, settings.log_format)
    memory.configure()
    config = _hypercorn_config(settings)
    if settings.workers == 1:
        # A `_created` twin of every counter and histogram doubles each scrape for nothing;
        # the switch is process-wide, so only the command that owns the process flips it
        # (a multiprocess scrape has no such series).
        from prometheus_client import disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]
        asyncio.run(_serve_in_process(settings, config))
        return 0
    from hypercorn.run import run

    config.workers = settings.workers
    # Workers are new processes (spawned): each rebuilds the settings from the environment.
    config.application_path = "procella.serving:worker_app()"
    with metrics_directory():
        return int(run(config))


def worker_app() -> Quart:
    """The app of one worker process of ``procella serve --workers N``."""
    from procella.app import create_app

    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    memory.configure()
    return _trimming_memory(create_app(settings))


@contextmanager
def metrics_directory() -> Iterator[str]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for the workers of this run, removed after.

    Set before any worker starts (prometheus_client reads it at import). An operator's own
    directory is used as it is and left in place.
    """
    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        yield existing
        return
    path = tempfile.mkdtemp(prefix="procella-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _hypercorn_config(settings: Settings) -> Any:
    from hypercorn.config import Config

    host, port = settings.listen_host_port
    config = Config()
    config.bind = [f"{host}:{port}"]
    if settings.metrics_host_port is not None:
        # The app answers /metrics only on this port, and nothing else there.
        metrics_host, metrics_port = settings.metrics_host_port
        config.bind.append(f"{metrics_host}:{metrics_port}")
    config.graceful_timeout = settings.shutdown_timeout_seconds
    # hypercorn logs through our handlers (logs.configure), not handlers of its own. Its
    # access log would repeat ours (procella.access), so it stays off.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    config.keep_alive_timeout = 75  # longer than the idle timeouts of common load balancers
    return config


async def _serve_in_process(settings: Settings, config: Any) -> None:
    """Serve until SIGTERM or SIGINT, then drain: /readyz fails at once, the listener
    closes, in-flight requests get up to PROCELLA_SHUTDOWN_TIMEOUT_SECONDS, and only then
    do the workers stop and the stores close."""
    from hypercorn.asyncio import serve as hypercorn_serve

    from procella.app import create_app, mark_draining

    app = _trimming_memory(create_app(settings))
    stop = asyncio.Event()

    def on_signal() -> None:
        mark_draining(app)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)


def _trimming_memory(app: Quart) -> Quart:
    """The app, telling ``procella.memory`` when each request has ended (its answer sent,
    so what it held is freed), and trimming after requests while it serves."""
    inner = app.asgi_app

    async def marking(scope: Any, receive: Any, send: Any) -> None:
        try:
            await inner(scope, receive, send)
        finally:
            if scope["type"] == "http":
                memory.request_ended()

    app.asgi_app = marking  # type: ignore[method-assign]
    tasks: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start_trimming() -> None:
        tasks.append(asyncio.create_task(memory.trim_after_requests()))

    @app.after_serving
    async def stop_trimming() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return app
