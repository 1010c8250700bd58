"""Versioned schema migrations, one folder of numbered SQL files per backend.

A migration is applied once, inside a transaction, and recorded by file name in
``schema_migrations``. Files are never edited after release: a change is a new file.
"""

from __future__ import annotations

import sqlite3
from importlib import resources

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)"
)


def load(dialect: str) -> list[tuple[str, list[str]]]:
    """``[(file name, [statement, ...]), ...]`` in the order they must be applied."""
    folder = resources.files(__package__).joinpath(dialect)
    found = sorted(
        (entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")
    )
    return [(name, split_statements(text)) for name, text in found]


def split_statements(script: str) -> list[str]:
    """Split a script into complete statements (our migrations hold no procedural code)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and line.strip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements
