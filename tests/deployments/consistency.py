"""Cross-bundle rules: settings names, ports, health paths and shutdown timing must agree.

Each check returns a list of problems (empty when all is well), naming the bundle and the
value, so one failing assertion shows every disagreement at once. The expected values come
from procella.settings, the single list of what the server reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from procella.settings import SETTINGS, Settings

from . import render

SETTINGS_BY_ENV = {s.env: s for s in SETTINGS}
_DEFAULTS = Settings()
PORT = int(_DEFAULTS.listen_addr.rpartition(":")[2])
SHUTDOWN_SECONDS = float(_DEFAULTS.shutdown_timeout_seconds)
REQUEST_TIMEOUT_SECONDS = float(_DEFAULTS.request_timeout)
LIVENESS = "/healthz"
READINESS = "/readyz"

_NAME = re.compile(r"\bPROCELLA_[A-Z0-9_]+")
_URL = re.compile(r"https?://[^/\s'\"]+:(\d+)(/[^\s'\"]*)")
_TEXT_SUFFIXES = {"", ".yaml", ".yml", ".json", ".md", ".sh", ".dockerignore"}


# settings names ----------------------------------------------------------------------------


def bundle_text_files(root: Path) -> Iterator[Path]:
    """Every file a user reads or a tool loads: the bundles, their READMEs, the Caddyfile."""
    yield render.caddyfile(root)
    for path in sorted((root / "deployments").rglob("*")):
        # secrets/ holds files gen-secrets.sh wrote on this machine, not part of the bundle.
        if path.is_file() and "secrets" not in path.parts and path.suffix in _TEXT_SUFFIXES:
            yield path


def setting_of(name: str) -> str | None:
    """The setting ``name`` sets, directly or as its *_FILE variant; None if it is none."""
    if name in SETTINGS_BY_ENV:
        return name
    if name.endswith("_FILE") and name.removesuffix("_FILE") in SETTINGS_BY_ENV:
        return name.removesuffix("_FILE")
    return None


def unknown_setting_names(root: Path) -> list[str]:
    problems = []
    for path in bundle_text_files(root):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for name in _NAME.findall(line):
                if setting_of(name) is None:
                    where = path.relative_to(root)
                    problems.append(f"{where}:{number}: {name} is not in procella.settings")
    return problems


# environments of every bundle ----------------------------------------------------------------


def environments(root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, variables) for each place a bundle hands literal values to the server."""
    for profile in render.COMPOSE_PROFILES:
        for name, service in render.compose_model(root, profile)["services"].items():
            yield f"compose {profile}/{name}", service.get("environment") or {}
    for name, service in render.swarm_model(root)["services"].items():
        yield f"swarm {name}", service.get("environment") or {}
    for target in render.K8S_TARGETS:
        for doc in render.k8s_docs(root, target):
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "ConfigMap":
                yield f"k8s {target} ConfigMap/{name}", doc.get("data") or {}
            for container in _containers(doc):
                literal = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
                yield f"k8s {target} {kind}/{name}", literal
    task = render.ecs_json(root, "task-definition.json")
    for container in task["containerDefinitions"]:
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        yield f"ecs {container['name']}", env


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = spec.get("containers", [])
    return containers


def secrets_in_plain_values(root: Path) -> list[str]:
    """Secret settings must come from files or a secret store, never a literal value."""
    problems = []
    for where, env in environments(root):
        for name in env:
            setting = SETTINGS_BY_ENV.get(name)
            if setting is not None and setting.secret:
                problems.append(f"{where}: {name} is secret; use {name}_FILE or a secret ref")
    return problems


def _shutdown_seconds(env: dict[str, Any]) -> float:
    value = env.get("PROCELLA_SHUTDOWN_TIMEOUT_SECONDS")
    return float(value) if value is not None else SHUTDOWN_SECONDS


def _duration_seconds(text: str | int | float) -> float:
    """Compose durations ("45s", "1m30s") and plain numbers of seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts, f"cannot read duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# ports, health paths, shutdown timing ------------------------------------------------------


def _check_url(where: str, text: str, problems: list[str]) -> None:
    urls = _URL.findall(text)
    if not urls:
        problems.append(f"{where}: health check names no URL: {text!r}")
    for port, path in urls:
        if int(port) != PORT or path != LIVENESS:
            problems.append(f"{where}: health check uses :{port}{path}, want :{PORT}{LIVENESS}")


def _check_listen_addr(where: str, env: dict[str, Any], problems: list[str]) -> None:
    addr = env.get("PROCELLA_LISTEN_ADDR")
    if addr is not None and not str(addr).endswith(f":{PORT}"):
        problems.append(f"{where}: PROCELLA_LISTEN_ADDR={addr} but every bundle assumes {PORT}")


def _server_services(services: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in services.items():
        if "procella" in str(service.get("image", "")) and service.get("command") != ["migrate"]:
            yield name, service


def dockerfile_problems(root: Path) -> list[str]:
    problems: list[str] = []
    text = render.dockerfile(root).read_text()
    exposed = re.findall(r"^EXPOSE\s+(.+)$", text, re.MULTILINE)
    if [p.split("/")[0] for line in exposed for p in line.split()] != [str(PORT)]:
        problems.append(f"Dockerfile: EXPOSE {exposed}, want {PORT}")
    health = re.findall(r"^HEALTHCHECK(?:.*\\\n)*.*$", text, re.MULTILINE)
    if len(health) != 1:
        problems.append("Dockerfile: want exactly one HEALTHCHECK")
    for line in health:
        _check_url("Dockerfile HEALTHCHECK", line, problems)
    for addr in re.findall(r"PROCELLA_LISTEN_ADDR=(\S+)", text):
        _check_listen_addr("Dockerfile ENV", {"PROCELLA_LISTEN_ADDR": addr}, problems)
    return problems


def compose_problems(root: Path) -> list[str]:
    problems: list[str] = []
    for profile in render.COMPOSE_PROFILES:
        services = render.compose_model(root, profile)["services"]
        for name, service in _server_services(services):
            _check_server_service(f"compose {profile}/{name}", service, problems)
    cluster = render.compose_model(root, "cluster")["services"]
    caddy = cluster["caddy"]
    replicas = sorted(name for name, _ in _server_services(cluster))
    upstreams = sorted(str(caddy["environment"]["CADDY_UPSTREAMS"]).split())
    if upstreams != [f"{name}:{PORT}" for name in replicas]:
        problems.append(f"compose caddy: CADDY_UPSTREAMS {upstreams} != replicas {replicas}")
    return problems


def swarm_problems(root: Path) -> list[str]:
    problems: list[str] = []
    for name, service in _server_services(render.swarm_model(root)["services"]):
        _check_server_service(f"swarm {name}", service, problems)
    return problems


def _check_server_service(where: str, service: dict[str, Any], problems: list[str]) -> None:
    """A compose or swarm service running procella: port, health check, drain time."""
    env = service.get("environment") or {}
    _check_listen_addr(where, env, problems)
    _check_url(where, " ".join(service["healthcheck"]["test"]), problems)
    for mapping in service.get("ports", []):
        if int(mapping["target"]) != PORT:
            problems.append(f"{where}: publishes container port {mapping['target']}")
    grace = _duration_seconds(service.get("stop_grace_period", "10s"))
    if grace <= _shutdown_seconds(env):
        problems.append(f"{where}: stop_grace_period {grace}s <= the drain time")


def k8s_problems(root: Path) -> list[str]:
    problems: list[str] = []
    for target in render.K8S_TARGETS:
        docs = render.k8s_docs(root, target)
        config: dict[str, Any] = {}
        for doc in docs:
            if doc["kind"] == "ConfigMap":
                config.update(doc.get("data") or {})
        for doc in docs:
            if doc["kind"] == "Deployment":
                problems.extend(_deployment_problems(f"k8s {target}", doc, config))
            if doc["kind"] == "Service":
                for port in doc["spec"]["ports"]:
                    if port["targetPort"] not in ("http", PORT):
                        problems.append(f"k8s {target} Service: targetPort {port['targetPort']}")
    return problems


def _deployment_problems(where: str, doc: dict[str, Any], config: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    pod = doc["spec"]["template"]["spec"]
    for container in pod["containers"]:
        env = {**config, **{e["name"]: e.get("value") for e in container.get("env", [])}}
        _check_listen_addr(where, env, problems)
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if ports.get("http") != PORT:
            problems.append(f"{where}: container port 'http' is {ports.get('http')}, want {PORT}")
        expected = {
            "livenessProbe": LIVENESS,
            "startupProbe": LIVENESS,
            "readinessProbe": READINESS,
        }
        for probe, path in expected.items():
            get = container.get(probe, {}).get("httpGet", {})
            port = ports.get(get.get("port"), get.get("port"))
            if get.get("path") != path or port != PORT:
                problems.append(f"{where}: {probe} is {get}, want {path} on {PORT}")
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = sum(float(a) for a in pre_stop.get("command", [])[1:2] if a.isdigit())
        needed = _shutdown_seconds(env) + sleep
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= needed:
            problems.append(f"{where}: terminationGracePeriodSeconds {grace} <= {needed}")
    return problems


def ecs_problems(root: Path) -> list[str]:
    problems: list[str] = []
    task = render.ecs_json(root, "task-definition.json")
    for container in task["containerDefinitions"]:
        where = f"ecs {container['name']}"
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        _check_listen_addr(where, env, problems)
        _check_url(where, " ".join(container["healthCheck"]["command"]), problems)
        for mapping in container.get("portMappings", []):
            if mapping["containerPort"] != PORT:
                problems.append(f"{where}: containerPort {mapping['containerPort']}")
        if container.get("stopTimeout", 30) <= _shutdown_seconds(env):
            problems.append(f"{where}: stopTimeout {container.get('stopTimeout')} <= drain time")
    for balancer in render.ecs_json(root, "service.json").get("loadBalancers", []):
        if balancer["containerPort"] != PORT:
            problems.append(f"ecs service: load balancer port {balancer['containerPort']}")
    group = render.ecs_json(root, "target-group.json")
    if group["Port"] != PORT or group["HealthCheckPath"] != LIVENESS:
        problems.append(f"ecs target group: {group['Port']} {group['HealthCheckPath']}")
    attributes = render.ecs_json(root, "load-balancer-attributes.json")["Attributes"]
    idle = {a["Key"]: a["Value"] for a in attributes}.get("idle_timeout.timeout_seconds", "60")
    if float(idle) < REQUEST_TIMEOUT_SECONDS:
        problems.append(f"ecs load balancer: idle timeout {idle}s < {REQUEST_TIMEOUT_SECONDS}s")
    return problems


def caddy_problems(root: Path) -> list[str]:
    problems: list[str] = []
    for env in ((), tuple(sorted(render.caddy_env_from_compose(root).items()))):
        for _, proxy in render.reverse_proxies(render.caddy_model(root, env)):
            problems.extend(_proxy_problems(proxy))
    return problems


def _proxy_problems(proxy: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    uri = proxy.get("health_checks", {}).get("active", {}).get("uri")
    if uri != LIVENESS:
        problems.append(f"Caddyfile: active health check uri {uri}, want {LIVENESS}")
    transport = proxy.get("transport", {})
    for key in ("read_timeout", "write_timeout", "response_header_timeout"):
        seconds = transport.get(key, 0) / 1e9
        if seconds < REQUEST_TIMEOUT_SECONDS:
            problems.append(f"Caddyfile: {key} {seconds}s < {REQUEST_TIMEOUT_SECONDS}s")
    return problems


def port_path_and_timing_problems(root: Path) -> list[str]:
    return [
        *dockerfile_problems(root),
        *caddy_problems(root),
        *compose_problems(root),
        *swarm_problems(root),
        *k8s_problems(root),
        *ecs_problems(root),
    ]
