"""deploy/kuberay/raycluster.yaml: a RayCluster KubeRay accepts, with the project's security rules,
and deploy/kuberay/podmonitor.yaml, the Prometheus Operator's scrape config for its Pods.

Pure YAML checks, no cluster. Field names and rules are those of the ray.io/v1 API as of KubeRay
v1.5.1 (the oldest operator with ``spec.authOptions``): ray-operator/apis/ray/v1/raycluster_types.go
and the operator's validation (ray-operator/controllers/ray/utils/validation.go).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "kuberay" / "raycluster.yaml"
PODMONITOR = REPO / "deploy" / "kuberay" / "podmonitor.yaml"

PREFECT_API_URL = "http://prefect-server.dancegen.svc:4200/api"
S3_SECRET = "dancegen-s3"
IMAGE = "dancegen:latest"
HEAD_PORTS = {6379, 8265, 10001, 8080, 44217, 44227}  # GCS, dashboard, Ray Client, 3 x metrics
METRICS_PORT = 8080  # KubeRay's default --metrics-export-port
PREFECT_AUTH_SECRET = "dancegen-prefect"
SENSITIVE = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")

# json tags of the ray.io/v1 structs in KubeRay v1.5.1; an unknown key is a typo the API server
# would prune silently (or reject under strict field validation).
SPEC_FIELDS = {
    "authOptions", "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
    "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
    "workerGroupSpecs",
}
HEAD_GROUP_FIELDS = {
    "template", "headService", "enableIngress", "resources", "labels", "rayStartParams",
    "serviceType",
}
WORKER_GROUP_FIELDS = {
    "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
    "resources", "labels", "rayStartParams", "template", "scaleStrategy", "numOfHosts",
}
AUTOSCALER_FIELDS = {
    "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
    "upscalingMode", "version", "env", "envFrom", "volumeMounts",
}
AUTH_FIELDS = {"mode"}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@cache
def _documents() -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc is not None)


def _cluster(docs: tuple[dict[str, Any], ...] | None = None) -> dict[str, Any]:
    found = [d for d in (docs or _documents()) if d.get("kind") == "RayCluster"]
    assert len(found) == 1, f"expected exactly one RayCluster, found {len(found)}"
    return found[0]


def _groups(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, group spec) for the head group and every worker group."""
    yield "head", cluster["spec"]["headGroupSpec"]
    for group in cluster["spec"].get("workerGroupSpecs") or []:
        yield group.get("groupName", "?"), group


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def _ray_container(group: dict[str, Any]) -> dict[str, Any]:
    # KubeRay treats the first container as the Ray container (utils.RayContainerIndex == 0).
    return group["template"]["spec"]["containers"][0]


def _worker(name: str) -> dict[str, Any]:
    groups = dict(_groups(_cluster()))
    assert name in groups, f"worker group {name!r} missing"
    return groups[name]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env") or []}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a YAML tree, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _exposures(docs: tuple[dict[str, Any], ...]) -> list[str]:
    """Ways the manifest would make Ray ports reachable from outside the Kubernetes cluster."""
    problems = []
    for doc in docs:
        if doc.get("kind") == "Service":
            kind = (doc.get("spec") or {}).get("type", "ClusterIP")
            if kind != "ClusterIP":
                problems.append(f"Service {doc['metadata']['name']} has type {kind}")
        if doc.get("kind") == "Ingress":
            problems.append(f"Ingress {doc['metadata']['name']}")
    for node in _walk(list(docs)):
        if node.get("serviceType", "ClusterIP") != "ClusterIP":
            problems.append(f"serviceType {node['serviceType']}")
        if node.get("enableIngress") is True:
            problems.append("enableIngress: true")
        if node.get("hostNetwork") is True:
            problems.append("hostNetwork: true")
        if "hostPort" in node:
            problems.append(f"hostPort {node['hostPort']}")
        head_service = node.get("headService")
        if isinstance(head_service, dict):
            kind = (head_service.get("spec") or {}).get("type", "ClusterIP")
            if kind != "ClusterIP":
                problems.append(f"headService type {kind}")
    return problems


def _inline_secrets(docs: tuple[dict[str, Any], ...]) -> list[str]:
    """Env vars with secret-looking names set to a literal value, and Secret objects with data."""
    problems = []
    for doc in docs:
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"Secret {doc['metadata']['name']} carries data")
    for node in _walk(list(docs)):
        env = node.get("env")
        for var in env if isinstance(env, list) else []:
            name = str(var.get("name", "")).upper()
            if any(word in name for word in SENSITIVE) and "value" in var:
                problems.append(f"env {var['name']} has a literal value")
    return problems


def test_manifest_is_a_named_raycluster_for_ray_2_60() -> None:
    cluster = _cluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    name = cluster["metadata"]["name"]
    # the operator rejects names that are not DNS-1035 labels of at most 53 characters
    assert DNS_1035.match(name) and len(name) <= 53, name
    assert cluster["spec"]["rayVersion"] == "2.60.0"  # a string, and the image's Ray
    assert cluster["spec"]["enableInTreeAutoscaling"] is True


def test_only_documented_kuberay_fields_are_used() -> None:
    spec = _cluster()["spec"]
    assert set(spec) <= SPEC_FIELDS, set(spec) - SPEC_FIELDS
    assert set(spec["headGroupSpec"]) <= HEAD_GROUP_FIELDS
    for group in spec["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP_FIELDS, set(group) - WORKER_GROUP_FIELDS
    assert set(spec.get("autoscalerOptions") or {}) <= AUTOSCALER_FIELDS
    assert set(spec["authOptions"]) <= AUTH_FIELDS


def test_token_auth_is_on_and_left_to_the_operator() -> None:
    cluster = _cluster()
    assert cluster["spec"]["authOptions"]["mode"] == "token"
    # the operator refuses token auth below Ray 2.52.0
    major, minor = (int(part) for part in cluster["spec"]["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52)
    # The operator injects RAY_AUTH_MODE/RAY_AUTH_TOKEN from its generated Secret; a value set
    # here would shadow it (e.g. RAY_AUTH_MODE=disabled would silently turn auth off).
    for name, group in _groups(cluster):
        for container in _containers(group["template"]["spec"]):
            env = _env(container)
            assert "RAY_AUTH_MODE" not in env and "RAY_AUTH_TOKEN" not in env, name


def test_every_ray_start_params_is_a_map_of_strings() -> None:
    for name, group in _groups(_cluster()):
        params = group["rayStartParams"]
        assert isinstance(params, dict), f"{name}: rayStartParams must be a map"
        for key, value in params.items():
            assert isinstance(key, str) and isinstance(value, str), f"{name}: {key}={value!r}"
        # operator validation: node labels go in the group's `labels`, not rayStartParams, and
        # resources in either rayStartParams or the group's `resources`, never both
        assert "labels" not in params, name
        in_params = {"num-cpus", "num-gpus", "memory", "resources"} & set(params)
        assert not (in_params and group.get("resources")), name


def test_head_runs_no_tasks_and_exposes_the_ray_ports_in_its_one_container() -> None:
    head = _cluster()["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    containers = head["template"]["spec"]["containers"]
    assert len(containers) == 1
    (container,) = containers
    assert container["name"] == "ray-head"
    assert container["image"] == IMAGE
    assert {port["containerPort"] for port in container["ports"]} >= HEAD_PORTS
    names = [port["name"] for port in container["ports"]]
    assert len(names) == len(set(names)), "duplicate port names"


def test_worker_groups_are_well_formed_for_the_autoscaler() -> None:
    cluster = _cluster()
    groups = cluster["spec"]["workerGroupSpecs"]
    assert groups, "no worker groups"
    names = [group["groupName"] for group in groups]
    assert all(names) and len(names) == len(set(names)), names
    for group in groups:
        name = group["groupName"]
        lo, n, hi = group["minReplicas"], group["replicas"], group["maxReplicas"]
        assert all(isinstance(v, int) for v in (lo, n, hi)), name
        assert 0 <= lo <= n <= hi, f"{name}: min {lo}, replicas {n}, max {hi}"
        assert isinstance(group["rayStartParams"], dict), name
        assert group["template"]["spec"]["containers"], name
        assert _ray_container(group)["image"] == IMAGE, name
    for name, group in _groups(cluster):
        # autoscaler v2 (the default for Ray >= 2.47) requires restartPolicy Never or unset
        assert group["template"]["spec"].get("restartPolicy", "Never") == "Never", name


def test_gpu_group_matches_the_paper_setup_and_can_render_with_egl() -> None:
    group = _worker("gpu-workers")
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (1, 0, 8)
    assert group["rayStartParams"]["num-gpus"] == "1"
    container = _ray_container(group)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    env = _env(container)
    assert env["PYOPENGL_PLATFORM"]["value"] == "egl"
    capabilities = set(env["NVIDIA_DRIVER_CAPABILITIES"]["value"].split(","))
    assert {"compute", "utility", "graphics"} <= capabilities or "all" in capabilities
    tolerations = group["template"]["spec"].get("tolerations") or []
    assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)


def test_advertised_gpus_equal_the_gpus_kubernetes_allocates() -> None:
    for name, group in _groups(_cluster()):
        resources = _ray_container(group).get("resources") or {}
        limit = int((resources.get("limits") or {}).get("nvidia.com/gpu", 0))
        request = (resources.get("requests") or {}).get("nvidia.com/gpu")
        # Kubernetes requires extended-resource requests to equal limits when both are set
        assert request is None or int(request) == limit, name
        assert int(group["rayStartParams"].get("num-gpus", "0")) == limit, name


def test_ray_containers_size_themselves_and_share_memory() -> None:
    for name, group in _groups(_cluster()):
        pod = group["template"]["spec"]
        container = _ray_container(group)
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name} {kind}"
        shm = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
        assert len(shm) == 1, f"{name}: /dev/shm not mounted"
        volume = {v["name"]: v for v in pod.get("volumes", [])}[shm[0]["name"]]
        assert volume["emptyDir"]["medium"] == "Memory", name


def test_ray_containers_get_prefect_url_and_s3_credentials_from_the_secret() -> None:
    for name, group in _groups(_cluster()):
        container = _ray_container(group)
        refs = [src["secretRef"]["name"] for src in container.get("envFrom", [])
                if "secretRef" in src]
        assert S3_SECRET in refs, f"{name}: no envFrom secretRef {S3_SECRET}"
        url = _env(container)["PREFECT_API_URL"]
        assert url.get("value") == PREFECT_API_URL or "configMapKeyRef" in url.get(
            "valueFrom", {}), name


def test_nothing_is_exposed_outside_the_kubernetes_cluster() -> None:
    assert _cluster()["spec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    assert _exposures(_documents()) == []


def test_no_secret_values_inline() -> None:
    assert _inline_secrets(_documents()) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["spec"]["headGroupSpec"].update(serviceType="LoadBalancer"),
        lambda c: c["spec"]["headGroupSpec"].update(serviceType="NodePort"),
        lambda c: c["spec"]["headGroupSpec"].update(
            headService={"spec": {"type": "LoadBalancer"}}),
        lambda c: c["spec"]["headGroupSpec"].update(enableIngress=True),
        lambda c: _ray_container(c["spec"]["headGroupSpec"])["ports"][1].update(hostPort=8265),
    ],
    ids=["lb", "nodeport", "head-service-lb", "ingress", "host-port"],
)
def test_exposure_check_catches_a_public_head(mutate: Any) -> None:
    cluster = copy.deepcopy(_cluster())
    mutate(cluster)
    assert _exposures((cluster,)) != []
    extra = {"kind": "Service", "metadata": {"name": "ray"}, "spec": {"type": "LoadBalancer"}}
    assert _exposures((_cluster(), extra)) != []


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "RAY_AUTH_TOKEN", "DB_PASSWORD"])
def test_inline_secret_check_catches_a_literal_credential(name: str) -> None:
    cluster = copy.deepcopy(_cluster())
    worker = _ray_container(cluster["spec"]["workerGroupSpecs"][0])
    worker["env"].append({"name": name, "value": "hunter2"})
    assert _inline_secrets((cluster,)) != []
    secret = {"kind": "Secret", "metadata": {"name": S3_SECRET}, "stringData": {"k": "v"}}
    assert _inline_secrets((_cluster(), secret)) != []


def test_ray_containers_get_the_prefect_auth_string_from_a_secret() -> None:
    for name, group in _groups(_cluster()):
        var = _env(_ray_container(group))["PREFECT_API_AUTH_STRING"]
        assert "value" not in var, name
        ref = var["valueFrom"]["secretKeyRef"]
        # optional: a Prefect server without auth needs no Secret, and the Pods still start
        assert (ref["name"], ref["key"], ref.get("optional")) == (
            PREFECT_AUTH_SECRET, "auth_string", True), name


def test_head_tells_its_dashboard_where_prometheus_and_grafana_are() -> None:
    env = _env(_ray_container(_cluster()["spec"]["headGroupSpec"]))
    for var in ("RAY_PROMETHEUS_HOST", "RAY_GRAFANA_HOST"):
        url = env[var]["value"]
        assert re.fullmatch(r"http://[a-z0-9.-]+\.svc:\d+", url), f"{var}: in-cluster {url}"
    # what the browser loads the panels from: a kubectl port-forward on the operator's machine
    assert env["RAY_GRAFANA_IFRAME_HOST"]["value"].startswith("http://127.0.0.1:")


@cache
def _podmonitors() -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(PODMONITOR.read_text()) if doc is not None)


def _named_ports(group: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in _ray_container(group).get("ports", [])}


def test_podmonitors_scrape_every_ray_pod_on_ports_it_declares() -> None:
    cluster = _cluster()
    groups = dict(_groups(cluster))
    selected: dict[str, set[str]] = {}
    for monitor in _podmonitors():
        assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1",
                                                            "PodMonitor")
        spec = monitor["spec"]
        assert spec["namespaceSelector"]["matchNames"] == [cluster["metadata"]["namespace"]]
        labels = spec["selector"]["matchLabels"]
        assert labels["ray.io/cluster"] == cluster["metadata"]["name"]
        kind = labels["ray.io/node-type"]
        names = ["head"] if kind == "head" else [n for n in groups if n != "head"]
        ports = [endpoint["port"] for endpoint in spec["podMetricsEndpoints"]]
        for name in names:
            declared = _named_ports(groups[name])
            assert set(ports) <= set(declared), f"{name} does not declare {set(ports)}"
            selected.setdefault(name, set()).update(ports)
    assert set(selected) == set(groups), "every Ray Pod is scraped"
    assert selected["head"] == {"metrics", "as-metrics", "dash-metrics"}
    for name, group in groups.items():
        assert "metrics" in selected[name], name
        assert _named_ports(group)["metrics"] == METRICS_PORT, name
        assert group["rayStartParams"].get("metrics-export-port", str(METRICS_PORT)) == str(
            METRICS_PORT), name

