"""Logging: one line per record, key=value friendly, configured once per process."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=FORMAT)
    root.setLevel(level.upper())
    # Their DEBUG output is a flood of event hooks and socket details, not ours to show.
    for noisy in ("botocore", "aiobotocore", "urllib3", "aiosqlite", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
