"""deployments/Dockerfile: hadolint, plus the image rules hadolint cannot know."""

from __future__ import annotations

import re
from pathlib import Path

from . import render, tools


def _final_stage(text: str) -> str:
    return text[text.rindex("\nFROM ") :]


def test_hadolint_passes(repo: Path) -> None:
    tools.expect_ok(render.hadolint(repo))


def test_hadolint_rejects_a_broken_copy(copy: Path, edit) -> None:
    edit(render.dockerfile(copy), "WORKDIR /src\n", "WORKDIR /src\nRUN cd /tmp && echo broken\n")
    proc = render.hadolint(copy)
    assert proc.returncode != 0
    assert "DL3003" in proc.stdout, proc.stdout


def test_multi_stage_slim_base(repo: Path) -> None:
    text = render.dockerfile(repo).read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2, "want a build and a final stage"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.1[1-9]-slim\S*", base.group(1)), base


def test_final_stage_has_no_build_tools_and_runs_as_non_root(repo: Path) -> None:
    final = _final_stage(render.dockerfile(repo).read_text())
    for tool in ("apt-get", "gcc", "build-essential", "pip wheel", "COPY procella"):
        assert tool not in final, f"{tool!r} in the final stage"
    user = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert user and re.fullmatch(r"[1-9]\d*(:\d+)?", user[-1]), user


def test_entrypoint_healthcheck_and_configuration(repo: Path) -> None:
    final = _final_stage(render.dockerfile(repo).read_text())
    assert 'ENTRYPOINT ["procella"]' in final
    assert 'CMD ["serve"]' in final
    assert "HEALTHCHECK" in final
    # Configuration only through PROCELLA_*; the rest is Python's own runtime switches and
    # PATH, which puts the server's venv first.
    names = re.findall(r"^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]*)=", final, re.MULTILINE)
    assert names, "expected ENV lines in the final stage"
    for name in names:
        assert name == "PATH" or name.startswith(("PROCELLA_", "PYTHON", "PIP_")), name


def test_dockerignore_lets_every_copied_path_through(repo: Path) -> None:
    # BuildKit reads <Dockerfile>.dockerignore; a COPY source it excludes breaks the build.
    text = render.dockerfile(repo).read_text()
    ignore = (repo / "deployments" / "Dockerfile.dockerignore").read_text().split()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
        for source in line.split()[:-1]:
            allowed = {f"!{source}", f"!{source.rstrip('/')}/", f"!{source.rstrip('/')}"}
            assert allowed & set(ignore), f"COPY {source} is excluded by the .dockerignore"
