"""Procella: a self-hosted backend for the Pulumi CLI.

``create_app(settings=None)`` returns the Quart (ASGI) application.
"""

from procella.app import create_app
from procella.settings import Settings

__version__ = "0.1.0"
__all__ = ["Settings", "__version__", "create_app"]
