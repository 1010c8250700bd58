"""deployments/observability: the alert rules and the Prometheus configuration pass promtool;
every dashboard query is valid PromQL on metrics the server exports, and every metric is on
the dashboard; compose and Kubernetes expose /metrics where the scrape configuration looks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from procella import metrics

from . import render, tools

_METRIC = re.compile(r"\bprocella_[a-z_]+")
_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def observability(root: Path) -> Path:
    return root / "deployments" / "observability"


def dashboard(root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (observability(root) / "grafana-dashboard.json").read_text()
    )
    return loaded


def dashboard_exprs(root: Path) -> list[str]:
    return [t["expr"] for p in dashboard(root)["panels"] for t in p["targets"]]


def alert_exprs(root: Path) -> list[str]:
    rules = yaml.safe_load((observability(root) / "alerts.yaml").read_text())
    return [r["expr"] for group in rules["groups"] for r in group["rules"]]


def families() -> set[str]:
    """The metric families the server exports (procella.metrics)."""
    return {m.name for m in metrics.REGISTRY.collect() if m.name.startswith("procella_")}


def family_of(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families():
            return name.removesuffix(suffix)
    return name


def check_rules(path: Path) -> Any:
    return tools.run([tools.promtool(), "check", "rules", path])


def test_alert_rules_pass_promtool(repo: Path) -> None:
    out = tools.expect_ok(check_rules(observability(repo) / "alerts.yaml"))
    assert "SUCCESS: 6 rules found" in out, out


def test_promtool_rejects_a_broken_rule(copy: Path, edit) -> None:
    alerts = observability(copy) / "alerts.yaml"
    edit(alerts, "time() - max(procella_gc_last_cycle_timestamp_seconds) > 900", "time() - max(")
    proc = check_rules(alerts)
    assert proc.returncode != 0
    assert "parse error" in proc.stdout + proc.stderr


def test_prometheus_configuration_passes_promtool(repo: Path, tmp_path: Path) -> None:
    # The file names the rules where the compose service mounts them; point it here.
    config = (observability(repo) / "prometheus.yaml").read_text()
    mounted = "/etc/prometheus/alerts.yaml"
    assert mounted in config
    local = tmp_path / "prometheus.yaml"
    local.write_text(config.replace(mounted, str(observability(repo) / "alerts.yaml")))
    tools.expect_ok(tools.run([tools.promtool(), "check", "config", local]))


def test_every_dashboard_query_is_valid_promql(repo: Path, tmp_path: Path) -> None:
    # promtool parses queries in rule files: one recording rule per panel query.
    exprs = [e.replace("$__rate_interval", "5m") for e in dashboard_exprs(repo)]
    rules = [{"record": f"procella:dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    tools.expect_ok(check_rules(path))


def test_queries_use_only_exported_metrics_and_show_them_all(repo: Path) -> None:
    used = {
        family_of(m) for e in dashboard_exprs(repo) + alert_exprs(repo) for m in _METRIC.findall(e)
    }
    assert used - families() == set(), "not exported by procella.metrics"
    shown = {family_of(m) for e in dashboard_exprs(repo) for m in _METRIC.findall(e)}
    assert families() - shown == set(), "exported but on no dashboard panel"


def test_dashboard_is_a_grafana_dashboard(repo: Path) -> None:
    board = dashboard(repo)
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    [source] = board["templating"]["list"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and refs, panel["title"]


def _metrics_port(env: dict[str, Any]) -> str:
    return str(env["PROCELLA_METRICS_LISTEN_ADDR"]).rpartition(":")[2]


def test_compose_prometheus_scrapes_every_replica_on_its_metrics_listener(repo: Path) -> None:
    services = render.compose_model(repo, "cluster")["services"]
    replicas = sorted(name for name in services if name.startswith("procella-"))
    ports = {_metrics_port(services[name]["environment"]) for name in replicas}
    [port] = ports
    config = yaml.safe_load((observability(repo) / "prometheus.yaml").read_text())
    [job] = config["scrape_configs"]
    [targets] = [c["targets"] for c in job["static_configs"]]
    assert sorted(targets) == [f"{name}:{port}" for name in replicas]
    mounts = {Path(v["source"]).name: v["target"] for v in services["prometheus"]["volumes"]}
    assert mounts["prometheus.yaml"] == "/etc/prometheus/prometheus.yaml"
    assert mounts["alerts.yaml"] in config["rule_files"]
    # Published only on the loopback interface; replicas' metrics not published at all.
    assert all(p["host_ip"] == "127.0.0.1" for p in services["prometheus"]["ports"])
    assert all("ports" not in services[name] for name in replicas)
    for name in replicas:
        assert services[name]["environment"]["PROCELLA_TRUSTED_PROXIES"]


@pytest.mark.parametrize("target", render.K8S_TARGETS)
def test_kubernetes_pods_announce_their_metrics_port(repo: Path, target: str) -> None:
    docs = render.k8s_docs(repo, target)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: str(p["containerPort"]) for p in container["ports"]}
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == ports["metrics"] == _metrics_port(config["data"])
    [service] = [d for d in docs if d["kind"] == "Service"]
    assert "metrics" not in {p.get("targetPort") for p in service["spec"]["ports"]}
