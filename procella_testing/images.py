"""Local container images for the tests that start containers, built once per machine.

No image registry is reachable here, so nothing is pulled:

* the base image is Debian bookworm made by ``debootstrap`` and ``docker import``, with
  Debian's python3 (3.11, the interpreter CI tests on); it stands in for
  ``python:3.11-slim-bookworm``, the default of the Dockerfile's ``PYTHON_IMAGE`` argument;
* the project's image is ``deployments/Dockerfile`` built unchanged on that base (only
  ``--build-arg PYTHON_IMAGE=<base>``), tagged ``procella:local`` as compose.yaml names it;
* the third-party services are stand-ins built from Debian packages and moto
  (``tests/standins/<name>/``): PostgreSQL, an S3 server that answers MinIO's command line,
  Caddy and Prometheus.

Images are tagged with a key made of everything they are built from, so a tag that exists
is up to date and is reused; the engine's data root (kept outside the repository by
.ci/run) holds them and BuildKit's layer cache between runs.

Builds reach the package registries with host networking (the engine runs without a
bridge). A container inherits none of the host's pip configuration, so the host's index
URL is passed as a build argument and its CA bundle as a BuildKit secret: both exist only
while a build step runs, and no image keeps them.

``python -m procella_testing.images [base|procella|standins|all]`` builds and prints each
tag, its size and the time it took.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STANDINS = REPO / "tests" / "standins"
CACHE = Path(os.environ.get("PROCELLA_CACHE_DIR", Path.home() / ".cache" / "procella"))

PROJECT_IMAGE = "procella:local"  # the tag compose.yaml and the docs use
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("PROCELLA_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What python:3.11-slim-bookworm offers the Dockerfile: python3 with venv and pip, and CA
# certificates for pip; nothing else (no compiler).
BASE_PACKAGES = ("ca-certificates", "python3", "python3-venv")
# Bump to rebuild the base when how it is made changes.
BASE_RECIPE = "1"
STANDIN_NAMES = ("postgres", "s3", "caddy", "prometheus")


class ImageError(RuntimeError):
    pass


def _run(args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(list(args), env=env, text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ImageError(
            f"$ {' '.join(args)}\nexit code {proc.returncode}\n{proc.stdout[-4000:]}"
            f"\n{proc.stderr[-4000:]}"
        )


def engine_available() -> str | None:
    """None if a Docker engine answers; else why not, in words a person can act on."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    proc = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return (
            "no Docker engine answers (start one: apt-get install docker.io, then as root "
            f"`dockerd --bridge=none --iptables=false`; .ci/run does): {proc.stderr.strip()}"
        )
    return None


def require_engine() -> None:
    problem = engine_available()
    if problem:
        raise ImageError(problem)


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time on this machine (pytest-xdist workers ask together)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def exists(tag: str) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    return proc.returncode == 0


def inspect(tag: str) -> dict[str, object]:
    out = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, text=True, check=True
    ).stdout
    found: dict[str, object] = json.loads(out)[0]
    return found


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _tree_key(*roots: Path) -> list[bytes]:
    """The relative paths and contents of every file under ``roots``, sorted."""
    parts = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts:
                continue
            parts += [str(path.relative_to(REPO)).encode(), path.read_bytes()]
    return parts


# --- how builds reach the registries ------------------------------------------------------


def _pip_config() -> dict[str, str]:
    """The host's pip settings that matter to a build: index URL and CA bundle."""
    found: dict[str, str] = {}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    )
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in ("index-url", "cert"):
            found[name] = value.strip().strip("'\"")
    # The environment wins over files, as it does for pip itself.
    for name, variable in (("index-url", "PIP_INDEX_URL"), ("cert", "PIP_CERT")):
        if os.environ.get(variable):
            found[name] = os.environ[variable]
    return found


def registry_build_args() -> list[str]:
    """Build arguments and secrets that let a build's pip reach the host's index."""
    pip = _pip_config()
    args = []
    if "index-url" in pip:
        args += ["--build-arg", f"PIP_INDEX_URL={pip['index-url']}"]
    if "cert" in pip and Path(pip["cert"]).is_file():
        args += ["--secret", f"id=pip-ca,src={pip['cert']}"]
        args += ["--build-arg", "PIP_CERT=/run/secrets/pip-ca"]
    return args


def build_client() -> tuple[list[str], dict[str, str]]:
    """A docker build command that uses BuildKit (the Dockerfile uses RUN --mount).

    Docker 23+ clients build with BuildKit through the buildx plugin. Without that plugin
    they fall back to the legacy builder, which cannot build the Dockerfile; Debian
    bookworm has no buildx package, but its docker.io client (20.10) talks to the engine's
    built-in BuildKit when DOCKER_BUILDKIT=1 is set.
    """
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False)
    if buildx.returncode == 0:
        return ["docker", "buildx", "build", "--load"], env
    for client in ("/usr/bin/docker", "docker"):
        if shutil.which(client):
            proc = subprocess.run(
                [client, "version", "--format", "{{.Client.Version}}"],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.stdout.startswith("20.10."):
                return [client, "build"], env
    raise ImageError(
        "no BuildKit-capable docker client: install the docker-buildx plugin, or Debian's "
        "docker.io package (its client builds with BuildKit when DOCKER_BUILDKIT=1)"
    )


def build(tag: str, context: Path, *args: str, dockerfile: Path | None = None) -> None:
    command, env = build_client()
    full = [*command, "--network", "host", "--progress", "plain", "-t", tag]
    if dockerfile is not None:
        full += ["-f", str(dockerfile)]
    full += [*registry_build_args(), *args, str(context)]
    _run(full, env=env)


# --- the images ---------------------------------------------------------------------------


def base_tag() -> str:
    key = _key(BASE_RECIPE, DEBIAN_SUITE, DEBIAN_MIRROR, *BASE_PACKAGES)
    return f"procella-local/python:3.11-{DEBIAN_SUITE}-{key}"


def ensure_base() -> str:
    """Debian bookworm with python3, made by debootstrap (needs root) and imported."""
    tag = base_tag()
    if exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is missing (Debian: apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="procella-rootfs-", dir=CACHE) as tmp:
        root = Path(tmp) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(root),
                DEBIAN_MIRROR,
            ]
        )
        # Package lists and downloaded .debs only make the image bigger.
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for path in (root / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.wait()
        if tar.returncode != 0 or imported.returncode != 0:
            raise ImageError(f"docker import failed: {imported.stderr}")
    return tag


def ensure_procella(tag: str = PROJECT_IMAGE) -> str:
    """deployments/Dockerfile on the local base, exactly as a user builds it. BuildKit's
    cache makes a rebuild of an unchanged tree take seconds, so it always runs."""
    base = ensure_base()
    build(
        tag,
        REPO,
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        dockerfile=REPO / "deployments" / "Dockerfile",
    )
    return tag


def standin_tag(name: str) -> str:
    return f"procella-local/{name}:{_key(base_tag(), *_tree_key(STANDINS / name))}"


def ensure_standin(name: str) -> str:
    tag = standin_tag(name)
    if not exists(tag):
        build(tag, STANDINS / name, "--build-arg", f"BASE={ensure_base()}")
    # The stable name tests/containers/compose.standins.yaml uses.
    _run(["docker", "tag", tag, f"procella-local/{name}:standin"])
    return tag


def image_size_mb(tag: str) -> float:
    return int(str(inspect(tag)["Size"])) / 1e6


def main(argv: Sequence[str]) -> int:
    what = argv[0] if argv else "all"
    if what not in ("base", "procella", "standins", "all"):
        print(__doc__)
        return 2
    require_engine()
    steps: list[tuple[str, Callable[[], str]]] = [("base", ensure_base)]
    if what in ("procella", "all"):
        steps.append(("procella", ensure_procella))
    if what in ("standins", "all"):
        steps += [(name, functools.partial(ensure_standin, name)) for name in STANDIN_NAMES]
    for label, step in steps:
        started = time.monotonic()
        with build_lock():
            tag = step()
        took = time.monotonic() - started
        print(f"{label:12} {tag:60} {image_size_mb(tag):7.1f} MB  {took:6.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
