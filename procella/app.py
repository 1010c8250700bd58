"""The composition root: ``create_app`` is the only place that names concrete backends.

``create_app()`` does no network or database I/O; the stores open when the app starts
serving (``while_serving``) and close after it stops. Serve it with ``procella serve``,
or with ``hypercorn "procella.app:create_app()"``, or mount it in your own ASGI host.
It never configures logging (``procella serve`` does, in ``procella.serving``): a host
that mounts it keeps its own.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator

from quart import Quart

from procella import console
from procella.api import errors, observe, routes
from procella.api.context import EXTENSION
from procella.api.drain import DrainRequestBody
from procella.auth.exchange import OidcService
from procella.auth.service import AuthService
from procella.auth.teams import TeamService
from procella.blobs import open_blob_store
from procella.metadata import open_metadata_store
from procella.secrets.crypto import StackCrypto
from procella.secrets.keys import load_master_key
from procella.secrets.service import SecretsService
from procella.services import Services
from procella.settings import Settings
from procella.stacks.service import StackService
from procella.state.cache import CheckpointCache
from procella.state.states import States
from procella.state.texts import CheckpointTexts
from procella.updates.service import UpdateService
from procella.workers.supervisor import Supervisor


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    app = Quart("procella")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        BODY_TIMEOUT=settings.request_timeout,
        RESPONSE_TIMEOUT=settings.request_timeout,
    )
    app.register_blueprint(routes.blueprint())
    console.register(app)  # the web console, at the paths the CLI links to (not under /api)
    observe.register(app, settings)
    errors.register(app)
    app.asgi_app = DrainRequestBody(app.asgi_app)  # type: ignore[method-assign]
    # Outermost: the request id and the timing cover everything the app does.
    app.asgi_app = observe.ObserveRequests(  # type: ignore[method-assign]
        app.asgi_app, settings.trusted_proxy_networks
    )

    @app.while_serving
    async def lifespan() -> AsyncGenerator[None, None]:
        services = await open_services(settings)
        app.extensions[EXTENSION] = services
        supervisor = Supervisor(services.meta, services.blobs, settings)
        supervisor.start()
        try:
            yield
        finally:
            services.draining = True
            await supervisor.stop()
            await close_services(services)

    return app


def mark_draining(app: Quart) -> None:
    """From now on /readyz fails, so load balancers stop sending new requests here."""
    services: Services | None = app.extensions.get(EXTENSION)
    if services is not None:
        services.draining = True


async def open_services(settings: Settings, *, bootstrap: bool = True) -> Services:
    """Open the stores (migrating them unless disabled) and build the services."""
    meta = open_metadata_store(settings)
    blobs = open_blob_store(settings)
    await meta.open()
    try:
        await blobs.open()
        if settings.migrate_on_start:
            await meta.migrate()
        auth = AuthService(meta, settings.auth_cache_seconds)
        if bootstrap:
            outcome = await auth.ensure_admin(settings.default_org, settings.admin_token)
            if outcome.generated_token:
                _announce_admin_token(outcome.generated_token, settings.default_org)
        texts = CheckpointTexts(
            blobs,
            settings.checkpoint_inline_max_bytes,
            CheckpointCache(settings.checkpoint_cache_bytes),
        )
        states = States(meta, texts)
        stacks = StackService(meta, states)
        crypto = StackCrypto(load_master_key(settings))
        return Services(
            settings=settings,
            meta=meta,
            blobs=blobs,
            auth=auth,
            teams=TeamService(meta, auth),
            stacks=stacks,
            updates=UpdateService(
                meta, stacks, states, settings.lease_max_seconds, settings.journaling
            ),
            secrets=SecretsService(
                stacks, crypto, stable_across_updates=settings.secrets_stable_across_updates
            ),
            oidc=OidcService(meta, auth, settings),
        )
    except BaseException:
        await blobs.close()
        await meta.close()
        raise


async def close_services(services: Services) -> None:
    await services.blobs.close()
    await services.meta.close()


def _announce_admin_token(token: str, org: str) -> None:
    print(
        "\n"
        "  Procella generated the site administrator's access token (shown only once):\n\n"
        f"      export PULUMI_ACCESS_TOKEN={token}\n\n"
        f"  It may create stacks in any organization; its default organization is '{org}'.\n"
        "  Set PROCELLA_ADMIN_TOKEN to choose the token yourself.\n",
        file=sys.stderr,
        flush=True,
    )
