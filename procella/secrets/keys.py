"""Where the master key comes from: the settings, or (embedded default only) a key file."""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from procella.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "encryption.key"


def load_master_key(settings: Settings) -> bytes:
    """The 32-byte master key. Settings.validate() already refused a cluster without one."""
    if settings.encryption_key:
        return bytes.fromhex(settings.encryption_key)
    path = Path(settings.data_dir) / KEY_FILE
    key = _read_or_create(path)
    log.warning(
        "PROCELLA_ENCRYPTION_KEY is not set: using the generated key in %s. Back it up: "
        "without it no stack secret can be decrypted.",
        path,
    )
    return key


def _read_or_create(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when several server processes start at once, exactly one creates it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return _read(path)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    for _ in range(50):  # another process may be between creating and writing the file
        if text:
            break
        time.sleep(0.1)
        text = path.read_text().strip()
    return bytes.fromhex(text)
