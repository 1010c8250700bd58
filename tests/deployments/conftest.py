"""Fixtures for the deployment bundle checks: the repository, and damaged copies of it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from . import tools


@pytest.fixture(scope="session")
def repo() -> Path:
    return tools.REPO


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of every bundle in a temp dir, laid out as in the repository, free to break."""
    root = tmp_path / "checkout"
    shutil.copytree(
        tools.REPO / "deployments",
        root / "deployments",
        ignore=shutil.ignore_patterns("secrets", "__pycache__"),
    )
    shutil.copy2(tools.REPO / "Caddyfile", root / "Caddyfile")
    return root


@pytest.fixture
def edit() -> Callable[[Path, str, str], None]:
    """Replace text in a copied file; fails if the text is gone, so no check goes stale."""

    def replace(path: Path, old: str, new: str) -> None:
        text = path.read_text()
        assert old in text, f"{old!r} is no longer in {path}: update this test"
        path.write_text(text.replace(old, new, 1))

    return replace
