"""deployments/k8s: rendered by a real kustomize, then `kubernetes-validate --strict`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from . import render, tools

BASE_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "Job",
}
CLUSTER_SCOPED = {"Namespace"}


def _by_kind(repo: Path, target: str) -> dict[str, dict[str, Any]]:
    docs = render.k8s_docs(repo, target)
    return {doc["kind"]: doc for doc in docs}


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = doc["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("version", render.K8S_VERSIONS)
@pytest.mark.parametrize("target", render.K8S_TARGETS)
def test_rendered_manifests_pass_strict_validation(repo: Path, target: str, version: str) -> None:
    rendered = tools.expect_ok(render.kustomize_build(repo, target))
    tools.expect_ok(render.kubernetes_validate(rendered, version))


def test_kubernetes_validate_rejects_an_unknown_field(copy: Path, edit) -> None:
    edit(
        render.k8s_dir(copy, "base") / "deployment.yaml",
        "  revisionHistoryLimit: 5\n",
        "  revisionHistoryLimit: 5\n  replica: 3\n",
    )
    rendered = tools.expect_ok(render.kustomize_build(copy, "base"))
    proc = render.kubernetes_validate(rendered, render.K8S_VERSIONS[-1])
    assert proc.returncode != 0
    assert "replica" in proc.stdout + proc.stderr


def test_kubernetes_validate_rejects_a_wrong_type(copy: Path, edit) -> None:
    edit(render.k8s_dir(copy, "base") / "pdb.yaml", "maxUnavailable: 1", "maxUnavailable: [1]")
    rendered = tools.expect_ok(render.kustomize_build(copy, "base"))
    proc = render.kubernetes_validate(rendered, render.K8S_VERSIONS[0])
    assert proc.returncode != 0


def test_kustomize_rejects_a_missing_resource(copy: Path, edit) -> None:
    edit(
        render.k8s_dir(copy, "base") / "kustomization.yaml",
        "  - hpa.yaml\n",
        "  - hpa.yaml\n  - no-such-file.yaml\n",
    )
    proc = render.kustomize_build(copy, "base")
    assert proc.returncode != 0
    assert "no-such-file.yaml" in proc.stderr, proc.stderr


def test_base_has_every_required_resource(repo: Path) -> None:
    assert set(_by_kind(repo, "base")) == BASE_KINDS


def test_deployment_is_replicated_hardened_and_bounded(repo: Path) -> None:
    deployment = _by_kind(repo, "base")["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = _pod(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"] == ["serve"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_secrets_are_read_from_mounted_files(repo: Path) -> None:
    kinds = _by_kind(repo, "base")
    secret_keys = set(kinds["Secret"]["stringData"])
    for kind in ("Deployment", "Job"):
        pod = _pod(kinds[kind])
        (container,) = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        files = {
            f"{mounts[v['name']]}/{item['path']}": item["key"]
            for v in pod["volumes"]
            if "secret" in v
            for item in v["secret"]["items"]
        }
        assert set(files.values()) <= secret_keys
        for env in container["env"]:
            if env["name"].endswith("_FILE"):
                assert env["value"] in files, f"{kind}: {env['name']} names no mounted file"


def test_only_server_pods_receive_traffic_or_count_for_disruption(repo: Path) -> None:
    kinds = _by_kind(repo, "base")
    server = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    migrate = kinds["Job"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        kinds["Service"]["spec"]["selector"],
        kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        kinds["Deployment"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= server.items()
        assert not selector.items() <= migrate.items(), "the migration pod would be selected"


def test_migration_job_and_autoscaler(repo: Path) -> None:
    kinds = _by_kind(repo, "base")
    job = _pod(kinds["Job"])
    assert job["containers"][0]["args"] == ["migrate"]
    assert job["restartPolicy"] == "Never"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 3
    assert kinds["ConfigMap"]["data"]["PROCELLA_MIGRATE_ON_START"] == "false"


def test_overlay_namespaces_everything_and_drops_the_example_secret(repo: Path) -> None:
    docs = render.k8s_docs(repo, "overlays/production")
    assert "Secret" not in {d["kind"] for d in docs}
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == "procella", doc["metadata"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    image = _pod(deployment)["containers"][0]["image"]
    assert ":" in image and not image.endswith(":latest"), image


def test_example_secret_cannot_start_a_server(repo: Path) -> None:
    # Placeholders must be invalid, so a forgotten example fails loudly instead of running
    # with a published key.
    path = render.k8s_dir(repo, "base") / "secret.example.yaml"
    key = yaml.safe_load(path.read_text())["stringData"]["encryption-key"]
    with pytest.raises(ValueError):
        assert len(bytes.fromhex(key)) == 32
