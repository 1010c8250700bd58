"""Names no other e2e test uses: the tests of one worker share a server."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Names:
    """Unique names for one test (tests share a server). Orgs are 3-40 of [A-Za-z0-9_-]."""

    org: str
    project: str

    def stack(self, name: str = "dev", *, project: str | None = None) -> str:
        return f"{self.org}/{project or self.project}/{name}"
