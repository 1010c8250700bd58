"""The services one app instance works with, kept on ``app.extensions`` (not on ``g``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from quart import current_app

from procella.auth.exchange import OidcService
from procella.auth.service import AuthService
from procella.auth.teams import TeamService
from procella.blobs.base import BlobStore
from procella.metadata.base import MetadataStore
from procella.secrets.service import SecretsService
from procella.settings import Settings
from procella.stacks.service import StackService
from procella.updates.service import UpdateService

EXTENSION = "procella"


@dataclass
class Services:
    settings: Settings
    meta: MetadataStore
    blobs: BlobStore
    auth: AuthService
    teams: TeamService
    stacks: StackService
    updates: UpdateService
    secrets: SecretsService
    oidc: OidcService
    draining: bool = field(default=False)


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION]
    return found
