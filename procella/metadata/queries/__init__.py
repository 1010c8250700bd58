"""Portable SQL, written once and run on any backend's ``Connection``.

Each module is a set of small async functions taking the connection as their first
argument, so a service composes several of them inside one transaction.
"""

import uuid


def new_id() -> str:
    """A fresh identifier for any row (random, so replicas never collide)."""
    return uuid.uuid4().hex
