"""Kubernetes manifests: the kustomize overlays render offline and the rendered objects
carry the production guarantees (resources, probes, non-root, autoscaling, disruption
budget). Rendering uses ``kubectl kustomize`` (or a standalone ``kustomize``); the
Kubeflow kustomization needs a remote base, so only its structure is checked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
OVERLAYS = ("dev", "prod")


def _kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl is installed: cannot render the overlays")


def render(path: Path) -> list[dict[str, Any]]:
    """Render a kustomization offline into its objects."""
    proc = subprocess.run(
        [*_kustomize_command(), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, dict[tuple[str, str], Any]]:
    overlay: str = request.param
    objects = render(DEPLOY / "k8s" / "overlays" / overlay)
    return overlay, {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_overlay_contains_both_services(
    rendered: tuple[str, dict[tuple[str, str], Any]],
) -> None:
    _, objects = rendered
    expected = {
        ("Namespace", "driftline"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("ServiceAccount", "mlflow"),
        ("Deployment", "driftline-serve"),
        ("Service", "driftline-serve"),
        ("ServiceAccount", "driftline-serve"),
        ("HorizontalPodAutoscaler", "driftline-serve"),
        ("PodDisruptionBudget", "driftline-serve"),
        ("ConfigMap", "driftline-alert-rules"),
        ("ConfigMap", "driftline-grafana-dashboard"),
    }
    assert set(objects) == expected
    for (kind, _), obj in objects.items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == "driftline"


def test_scoring_deployment_is_production_ready(
    rendered: tuple[str, dict[tuple[str, str], Any]],
) -> None:
    overlay, objects = rendered
    deployment = objects[("Deployment", "driftline-serve")]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "driftline-serve"
    (container,) = pod["containers"]

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"name": "http", "containerPort": 8000} in container["ports"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"].endswith(".amazonaws.com/driftline-platform:0.1.0")

    service = objects[("Service", "driftline-serve")]
    assert service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    role = objects[("ServiceAccount", "driftline-serve")]["metadata"]["annotations"]
    assert role["eks.amazonaws.com/role-arn"].endswith(f"driftline-{overlay}-serving")


def test_overlay_mounts_the_alert_rules_and_the_dashboard(
    rendered: tuple[str, dict[tuple[str, str], Any]],
) -> None:
    """The ConfigMaps hold deploy/monitoring's files unchanged (the promtool unit tests
    stay out); the dashboard carries the label the Grafana sidecar looks for."""
    _, objects = rendered
    monitoring = DEPLOY / "monitoring"
    rules = objects[("ConfigMap", "driftline-alert-rules")]
    assert rules["data"] == {"alerts.yaml": (monitoring / "alerts.yaml").read_text()}
    dashboard = objects[("ConfigMap", "driftline-grafana-dashboard")]
    assert dashboard["data"] == {
        "grafana-dashboard.json": (monitoring / "grafana-dashboard.json").read_text()
    }
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_scoring_autoscaling_and_disruption_budget(
    rendered: tuple[str, dict[tuple[str, str], Any]],
) -> None:
    overlay, objects = rendered
    deployment = objects[("Deployment", "driftline-serve")]
    hpa = objects[("HorizontalPodAutoscaler", "driftline-serve")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "driftline-serve",
    }
    assert 1 <= hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]

    pdb = objects[("PodDisruptionBudget", "driftline-serve")]["spec"]
    assert pdb["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    if overlay == "prod":
        # A drain never takes the service below two ready replicas.
        assert pdb["minAvailable"] == 2 and hpa["minReplicas"] >= 3
    else:
        assert pdb["maxUnavailable"] == 1


def test_mlflow_server_uses_external_stores(
    rendered: tuple[str, dict[tuple[str, str], Any]],
) -> None:
    _, objects = rendered
    pod = objects[("Deployment", "mlflow")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    args = " ".join(container["args"])
    assert "--backend-store-uri=$(DRIFTLINE_MLFLOW_TRACKING_URI)" in args
    assert "--default-artifact-root=$(DRIFTLINE_MLFLOW_ARTIFACT_URI)" in args
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"driftline-settings", "driftline-db"}
    assert {"requests", "limits"} <= set(container["resources"])


def test_airflow_values_use_external_postgres_and_baked_dags() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "airflow-values.yaml").read_text())
    assert values["executor"] in {"KubernetesExecutor", "CeleryExecutor"}
    assert values["postgresql"]["enabled"] is False
    assert values["data"]["metadataSecretName"]
    assert values["images"]["airflow"]["repository"].endswith("/driftline-platform")
    assert values["dags"]["gitSync"]["enabled"] is False
    assert values["dags"]["persistence"]["enabled"] is False
    extra = yaml.safe_load(values["extraEnvFrom"])
    assert {next(iter(s.values()))["name"] for s in extra} == {"driftline-settings", "driftline-db"}
    # The IRSA trust policy names these service accounts (infra/terraform/modules/iam).
    for component in ("scheduler", "workers", "triggerer", "apiServer"):
        annotations = values[component]["serviceAccount"]["annotations"]
        assert annotations["eks.amazonaws.com/role-arn"].endswith("-airflow")


def test_kubeflow_kustomization_pins_upstream_release() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubeflow" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "kubeflow"
    (base,) = kustomization["resources"]
    assert base.startswith("github.com/kubeflow/pipelines/manifests/kustomize/")
    assert "?ref=" in base and not base.endswith("?ref=master")
    (patch,) = kustomization["patches"]
    assert patch["target"] == {"kind": "ServiceAccount", "name": "pipeline-runner"}
