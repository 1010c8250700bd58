"""Top-level Caddyfile: `caddy validate`, and what its adapted JSON config does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import render, tools

LOCAL_CLUSTER = ["127.0.0.1:18001", "127.0.0.1:18002", "127.0.0.1:18003"]


def test_validates_with_defaults(repo: Path) -> None:
    tools.expect_ok(render.caddy(repo, "validate", {}))


def test_validates_with_the_compose_environment(repo: Path) -> None:
    tools.expect_ok(render.caddy(repo, "validate", render.caddy_env_from_compose(repo)))


def test_caddy_validate_rejects_a_broken_copy(copy: Path, edit) -> None:
    edit(render.caddyfile(copy), "lb_policy round_robin", "lb_policy round_robbin")
    proc = render.caddy(copy, "validate", {})
    assert proc.returncode != 0
    assert "round_robbin" in proc.stderr, proc.stderr


def test_defaults_are_the_local_process_cluster(repo: Path) -> None:
    model = render.caddy_model(repo)
    assert model["admin"]["listen"] == "127.0.0.1:20190"
    (server,) = model["apps"]["http"]["servers"].values()
    assert server["listen"] == ["127.0.0.1:18080"]
    dials = [u["dial"] for u in render.reverse_proxy(model)["upstreams"]]
    assert dials == LOCAL_CLUSTER


def test_addresses_come_from_the_environment(repo: Path) -> None:
    env = {
        "CADDY_UPSTREAMS": "a:9090 b:9090",
        "CADDY_PORT": "8081",
        "CADDY_BIND": "0.0.0.0",
        "CADDY_ADMIN": "127.0.0.1:20999",
    }
    model = render.caddy_model(repo, tuple(sorted(env.items())))
    assert model["admin"]["listen"] == "127.0.0.1:20999"
    (server,) = model["apps"]["http"]["servers"].values()
    assert server["listen"] == ["0.0.0.0:8081"]
    assert [u["dial"] for u in render.reverse_proxy(model)["upstreams"]] == ["a:9090", "b:9090"]


def test_round_robin_with_health_checks_retries_and_http11(repo: Path) -> None:
    model = render.caddy_model(repo)
    (server,) = model["apps"]["http"]["servers"].values()
    assert server["automatic_https"]["disable"] is True
    proxy = render.reverse_proxy(model)
    assert proxy["load_balancing"]["selection_policy"]["policy"] == "round_robin"
    _expect_health_checks_retries_and_http11(proxy)


def test_an_updates_requests_hash_on_its_lease_to_the_same_replicas(repo: Path) -> None:
    (lease, lease_proxy), (rest, rest_proxy) = render.reverse_proxies(render.caddy_model(repo))
    assert lease == [{"header": {"Authorization": ["update-token *"]}}]
    assert lease_proxy["load_balancing"]["selection_policy"] == {
        "policy": "header",
        "field": "Authorization",
    }
    assert rest is None
    _expect_health_checks_retries_and_http11(lease_proxy)
    # One set of replicas and settings: the routes differ only in how they pick one.
    for proxy in (lease_proxy, rest_proxy):
        del proxy["load_balancing"]["selection_policy"]
    assert lease_proxy == rest_proxy


def _expect_health_checks_retries_and_http11(proxy: dict[str, Any]) -> None:
    balancing = proxy["load_balancing"]
    # Without a try duration a dead replica answers 502 until the health check notices.
    assert balancing.get("try_duration", 0) > 0
    assert balancing.get("try_interval", 0) > 0
    active = proxy["health_checks"]["active"]
    assert active["uri"] == "/healthz"
    assert active["interval"] > 0
    assert proxy["transport"]["versions"] == ["1.1"]
