"""The app instance's ``Services``, kept on ``app.extensions`` (not on ``g``)."""

from __future__ import annotations

from quart import current_app

from procella.services import Services

EXTENSION = "procella"


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION]
    return found
