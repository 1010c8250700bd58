"""``Services``: what one app instance works with, built by the composition root
(``procella.app.open_services``) and used by the API, the console, the CLI and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from procella.auth.exchange import OidcService
from procella.auth.service import AuthService
from procella.auth.teams import TeamService
from procella.blobs.base import BlobStore
from procella.metadata.base import MetadataStore
from procella.secrets.service import SecretsService
from procella.settings import Settings
from procella.stacks.service import StackService
from procella.updates.service import UpdateService


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
