"""docker-compose.yml: the stack's services, loopback-only ports, secrets only from the environment.

The static checks read the file with PyYAML (anchors and merge keys resolved): Prefect API auth
on every client, the application's own S3 user, the preflight that refuses placeholder secrets
(its script is run here), and Prometheus + Grafana wired to Ray's metrics. When a
`docker-compose` binary is installed (Debian's package validates without a Docker engine), the
file is also validated by compose itself, once with .env.example and once without any secrets.
One slow test checks against a real Ray that the dancegen dashboard queries the metric names
Ray really exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"

PREFLIGHT_SCRIPT = REPO / "deploy" / "preflight.sh"
S3_POLICY = REPO / "deploy" / "minio" / "dancegen-policy.json"
MONITORING = REPO / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "dancegen.json"
METRICS_SOURCE = REPO / "tasks" / "metrics.py"

SERVICES = {
    "preflight", "postgres", "prefect-server", "minio", "minio-init", "ray-head",
    "ray-gpu-worker", "prefect-worker", "prometheus", "grafana",
}
ONE_SHOT = {"preflight", "minio-init"}  # run to completion; everything else is long-running
RAY_NODES = {"ray-head", "ray-gpu-worker", "prefect-worker"}
MINIO_ROOT = {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
SECRETS = {
    "RAY_AUTH_TOKEN", "POSTGRES_PASSWORD", *MINIO_ROOT, "PREFECT_API_AUTH_STRING",
    "DANCEGEN_S3_ACCESS_KEY", "DANCEGEN_S3_SECRET_KEY", "GRAFANA_ADMIN_PASSWORD",
}
NOT_SECRET = {"DANCEGEN_TORCH"}  # the only variable that may have a default
RAY_TMP = "/tmp/ray"  # Ray's temp dir on the head: service discovery file, generated dashboards
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|AUTH_STRING", re.IGNORECASE)
# ${VAR}, ${VAR:?msg}, ${VAR:-default}, $VAR; `$$` is compose's escape for a literal `$`
VARIABLE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
ONLY_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[?-][^}]*)?\}")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, Any]:
    return _compose()["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _published(service: dict[str, Any]) -> list[tuple[str, int | None]]:
    """(host ip, container port) of every published port, short or long syntax."""
    out: list[tuple[str, int | None]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            target = port.get("target")
            out.append((str(port.get("host_ip", "")), int(target) if target else None))
            continue
        spec = str(port).split("/")[0]
        parts = spec.rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else ""
        container = parts[-1]
        out.append((host_ip, int(container) if container.isdigit() else None))
    return out


def _env_example_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.add(line.split("=", 1)[0].removeprefix("export ").strip())
    return names


def _strings(node: Any) -> list[str]:
    """Every key and scalar of the parsed file (comments are not part of it)."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [str(node)] if node is not None else []


def _referenced(node: Any | None = None) -> set[str]:
    """Variables referenced in ``node`` (default: the whole file)."""
    node = _compose() if node is None else node
    return {a or b for text in _strings(node) for a, b in VARIABLE.findall(text)}


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only) of every short-syntax volume."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = str(volume).split(":")
        out[target] = (source, "ro" in mode)
    return out


def _host_port(service: dict[str, Any], container: int) -> int:
    for port in service.get("ports", []):
        *_, host, target = str(port).split(":")
        if int(target) == container:
            return int(host)
    raise AssertionError(f"container port {container} is not published")


def test_compose_publishes_only_on_loopback_and_keeps_secrets_out() -> None:
    services = _services()
    assert {"prefect-server", "ray-head"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    token = services["ray-head"]["environment"]["RAY_AUTH_TOKEN"]
    assert token.startswith("${"), "the Ray token must come from the environment, not the file"
    assert services["ray-head"]["environment"]["RAY_AUTH_MODE"] == "token"


def test_the_stack_has_its_services() -> None:
    assert set(_services()) >= SERVICES


def test_long_syntax_ports_are_loopback_too() -> None:
    for name, service in _services().items():
        for host_ip, _ in _published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes a port beyond loopback"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no", f"{name} is one-shot; do not restart it"
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name}: no healthcheck"


def test_no_secret_has_a_literal_value() -> None:
    for name, service in _services().items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert ONLY_REFERENCE.fullmatch(value), (
                    f"{name}: {key} must be only a ${{VAR}} reference, not a literal")
            # credentials inside URLs (user:password@host) come from the environment too
            for password in re.findall(r"://[^/:@\s]+:([^@\s]+)@", value):
                assert ONLY_REFERENCE.fullmatch(password), f"{name}: {key} embeds a password"


def test_secrets_are_required_not_defaulted() -> None:
    text = COMPOSE_FILE.read_text()
    assert _referenced() == SECRETS | NOT_SECRET
    for var in sorted(SECRETS):
        uses = re.findall(r"\$\{" + var + r"(:?[?-]?)", text)
        assert uses, f"{var} is not used"
        assert all(use == ":?" for use in uses), f"{var} must be ${{{var}:?message}}"


def test_ray_publishes_only_its_dashboard() -> None:
    services = _services()
    for name, service in services.items():
        ports = {port for _, port in _published(service)}
        assert not ports & {6379, 10001}, f"{name} publishes Ray's GCS or client port"
        if name in RAY_NODES:
            assert ports <= {8265}, f"{name} publishes {ports - {8265}}"
    assert 8265 in {port for _, port in _published(services["ray-head"])}
    for name in RAY_NODES:
        env = _environment(services[name])
        assert env.get("RAY_AUTH_MODE") == "token", f"{name} must use Ray token auth"
        assert ONLY_REFERENCE.fullmatch(env.get("RAY_AUTH_TOKEN", "")), name


def test_gpu_worker_reserves_an_nvidia_device_with_graphics() -> None:
    worker = _services()["ray-gpu-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    nvidia = [d for d in devices if d.get("driver") == "nvidia"]
    assert nvidia and "gpu" in nvidia[0].get("capabilities", [])
    assert nvidia[0].get("count", nvidia[0].get("device_ids")), "reserve at least one GPU"
    env = _environment(worker)
    assert "graphics" in env["NVIDIA_DRIVER_CAPABILITIES"].split(","), "EGL needs graphics"
    assert env["PYOPENGL_PLATFORM"] == "egl"
    assert "--num-gpus" in str(worker["command"])


def test_services_reach_prefect_and_s3_from_the_environment() -> None:
    services = _services()
    for name in RAY_NODES:
        env = _environment(services[name])
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert ONLY_REFERENCE.fullmatch(env[key]), f"{name}: {key}"
    worker = services["prefect-worker"]
    assert _environment(worker)["RAY_ADDRESS"] == "auto"
    command = str(worker["command"])
    assert "ray start --address ray-head:6379 --num-cpus 0 --num-gpus 0" in command
    assert "prefect worker start" in command
    db_url = _environment(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert db_url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in db_url


def test_every_variable_is_listed_in_env_example() -> None:
    env_example = ENV_EXAMPLE.read_text()
    assert "copy to .env; never commit .env" in env_example
    missing = _referenced() - _env_example_names()
    assert not missing, f"list {sorted(missing)} in .env.example"


def _compose_env() -> dict[str, str]:
    """This environment without the stack's variables or COMPOSE_*: the env file decides."""
    skip = _referenced()
    return {k: v for k, v in os.environ.items() if k not in skip and not k.startswith("COMPOSE_")}


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("the docker-compose binary is not installed "
                    "(apt-get install docker-compose) to validate the file with compose itself")
    return exe


def _config(env_file: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f docker-compose.yml --env-file ENV config -q` from the repository root."""
    exe = _docker_compose()
    command = [exe, "-f", "docker-compose.yml", "--env-file", env_file, "config", "-q"]
    return subprocess.run(command, cwd=REPO, env=_compose_env(), capture_output=True, text=True,
                          timeout=120)


def test_docker_compose_accepts_the_file_with_env_example() -> None:
    result = _config(".env.example")
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _config(str(empty))
    assert result.returncode != 0
    assert "in .env (see .env.example)" in result.stderr + result.stdout


# --- Prefect API auth -----------------------------------------------------------------------

def test_the_prefect_server_requires_auth_and_every_client_sends_it() -> None:
    services = _services()
    server = _environment(services["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"]
    assert _referenced(server) == {"PREFECT_API_AUTH_STRING"}
    clients = {name for name, service in services.items()
               if "PREFECT_API_URL" in _environment(service)}
    # prefect-ray runs the task engine in the Ray workers: every Ray node is an API client
    assert clients >= RAY_NODES | {"prefect-worker"}
    # every container of the dancegen image runs Prefect code
    assert clients >= {name for name, s in services.items() if s.get("image") == "dancegen:local"}
    for name in clients:
        assert _environment(services[name]).get("PREFECT_API_AUTH_STRING") == server, name


# --- S3: the application's own user ---------------------------------------------------------

def test_dancegen_services_get_the_application_s3_user_not_minio_root() -> None:
    services = _services()
    for name in RAY_NODES:
        env = _environment(services[name])
        assert _referenced(env["AWS_ACCESS_KEY_ID"]) == {"DANCEGEN_S3_ACCESS_KEY"}, name
        assert _referenced(env["AWS_SECRET_ACCESS_KEY"]) == {"DANCEGEN_S3_SECRET_KEY"}, name
    holders = {name for name, service in services.items() if _referenced(service) & MINIO_ROOT}
    assert holders == {"minio", "minio-init", "preflight"}


def test_minio_init_creates_the_user_with_a_policy_for_the_bucket_only() -> None:
    init = _services()["minio-init"]
    command = " ".join(init["command"])
    bucket = re.search(r"mc mb --ignore-existing local/([a-z0-9.-]+)", command).group(1)
    policy_path = next(target for target, (source, read_only) in _mounts(init).items()
                       if (REPO / source).resolve() == S3_POLICY and read_only)
    steps = [
        f"mc admin policy create local dancegen-rw {policy_path}",
        'mc admin user add local "$$DANCEGEN_S3_ACCESS_KEY" "$$DANCEGEN_S3_SECRET_KEY"',
        'mc admin policy attach local dancegen-rw --user "$$DANCEGEN_S3_ACCESS_KEY"',
    ]
    positions = [command.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), command
    policy = json.loads(S3_POLICY.read_text())
    allowed = {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"]
        assert set([resources] if isinstance(resources, str) else resources) <= allowed
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert action.startswith("s3:") and "*" not in action, action


def test_every_bind_mount_is_a_file_of_the_repository() -> None:
    for name, service in _services().items():
        for target, (source, _) in _mounts(service).items():
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} -> {target} is missing"


# --- preflight: placeholder secrets stop the stack ------------------------------------------

def test_preflight_runs_before_everything_and_checks_every_secret() -> None:
    services = _services()
    preflight = services["preflight"]
    for name, service in services.items():
        if name != "preflight":
            condition = (service.get("depends_on") or {}).get("preflight", {}).get("condition")
            assert condition == "service_completed_successfully", f"{name} must wait for it"
    assert preflight["entrypoint"][-1] == "/preflight.sh"
    source, read_only = _mounts(preflight)["/preflight.sh"]
    assert (REPO / source).resolve() == PREFLIGHT_SCRIPT and read_only
    env = _environment(preflight)
    assert set(preflight["command"]) == set(env) == SECRETS
    for name, value in env.items():
        assert _referenced(value) == {name}, f"preflight gets {name} from .env"


def _env_example_values() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def _preflight(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """deploy/preflight.sh as the preflight service runs it, with ``values`` as its environment."""
    command = ["sh", str(PREFLIGHT_SCRIPT), *_services()["preflight"]["command"]]
    return subprocess.run(command, env={"PATH": os.environ["PATH"], **values},
                          capture_output=True, text=True, timeout=30)


def test_preflight_refuses_every_change_me_placeholder_of_env_example() -> None:
    values = _env_example_values()
    placeholders = {name for name, value in values.items() if "change-me" in value}
    assert placeholders >= SECRETS - {"MINIO_ROOT_USER", "DANCEGEN_S3_ACCESS_KEY"}
    result = _preflight(values)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr  # one line, naming each variable
    named = set(re.search(r"placeholders in:([^;]*);", result.stderr).group(1).split())
    assert named == placeholders, result.stderr
    # one placeholder left among real values is enough to stop the stack
    real = {name: f"{name.lower()}-0123456789abcdef" for name in SECRETS}
    result = _preflight({**real, "GRAFANA_ADMIN_PASSWORD": "change-me-grafana-password"})
    assert result.returncode == 1 and "GRAFANA_ADMIN_PASSWORD" in result.stderr
    assert "RAY_AUTH_TOKEN" not in result.stderr


def test_preflight_passes_real_values_and_refuses_root_as_the_application_user() -> None:
    real = {name: f"{name.lower()}-0123456789abcdef" for name in SECRETS}
    result = _preflight(real)
    assert result.returncode == 0, result.stderr
    result = _preflight({**real, "DANCEGEN_S3_ACCESS_KEY": real["MINIO_ROOT_USER"]})
    assert result.returncode == 1
    assert "DANCEGEN_S3_ACCESS_KEY equals MINIO_ROOT_USER" in result.stderr


def test_preflight_refuses_a_name_that_is_not_a_variable() -> None:
    result = subprocess.run(["sh", str(PREFLIGHT_SCRIPT), "X;touch /tmp/owned"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "is not a variable name" in result.stderr


# --- monitoring: Prometheus and Grafana on Ray's metrics -------------------------------------

def test_prometheus_scrapes_the_nodes_ray_lists_in_its_shared_temp_dir() -> None:
    services = _services()
    head_source, head_read_only = _mounts(services["ray-head"])[RAY_TMP]
    assert not head_source.startswith(".") and not head_read_only  # a named volume Ray writes
    for name in ("prometheus", "grafana"):
        assert _mounts(services[name])[RAY_TMP] == (head_source, True), name
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    prometheus = services["prometheus"]
    config_file = next(arg.split("=", 1)[1] for arg in prometheus["command"]
                       if arg.startswith("--config.file="))
    source, _ = _mounts(prometheus)[config_file]
    config = yaml.safe_load((REPO / source).read_text())
    files = [path for job in config["scrape_configs"] for sd in job.get("file_sd_configs", [])
             for path in sd["files"]]
    assert files == [f"{RAY_TMP}/prom_metrics_service_discovery.json"]


def test_grafana_is_provisioned_with_prometheus_and_both_sets_of_dashboards() -> None:
    services = _services()
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    provisioning = REPO / mounts["/etc/grafana/provisioning"][0]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["name"] == "Prometheus"  # Ray's default
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())[
        "providers"]
    paths = {provider["name"]: provider["options"]["path"] for provider in providers}
    assert paths["ray"] == f"{RAY_TMP}/session_latest/metrics/grafana/dashboards"
    assert (REPO / mounts[paths["dancegen"]][0]).resolve() == DASHBOARD.parent
    env = _environment(grafana)
    assert _referenced(env["GF_SECURITY_ADMIN_PASSWORD"]) == {"GRAFANA_ADMIN_PASSWORD"}
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ALLOW_EMBEDDING"] == "true"  # the Ray dashboard embeds its panels


def test_the_ray_dashboard_knows_prometheus_and_grafana() -> None:
    services = _services()
    head = _environment(services["ray-head"])
    assert "RAY_PROMETHEUS_NAME" not in head  # then "Prometheus", the provisioned source's name
    assert head["RAY_PROMETHEUS_HOST"] == "http://prometheus:9090"
    assert head["RAY_GRAFANA_HOST"] == "http://grafana:3000"
    # the browser loads the panels: the loopback port Grafana is published on
    port = _host_port(services["grafana"], 3000)
    assert head["RAY_GRAFANA_IFRAME_HOST"] == f"http://127.0.0.1:{port}"
    assert _host_port(services["prometheus"], 9090) == 9090


def _exported_metric_names() -> set[str]:
    """Names under which Ray exports tasks/metrics.py's metrics: ray_<name>, counters + _total."""
    found = re.findall(r'\b(Counter|Gauge)\(\s*"(dancegen_\w+)"', METRICS_SOURCE.read_text())
    assert len(found) >= 5, "tasks/metrics.py's instruments not found"
    return {f"ray_{name}_total" if kind == "Counter" else f"ray_{name}" for kind, name in found}


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dancegen_dashboard_has_a_panel_for_every_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {name for expr in _dashboard_queries() for name in re.findall(r"ray_dancegen_\w+",
                                                                               expr)}
    assert queried == _exported_metric_names()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_ray_exports_the_metric_names_the_dashboard_queries() -> None:
    import ray

    from dancegen.tasks import metrics

    @ray.remote
    def write_a_shard() -> None:
        metrics.record_shard("motion", segments=2, frames=300, nbytes=4096)
        metrics.record_failure("motion")

    ray.get(write_a_shard.remote())
    metrics.set_queue_depth("s3://dancegen/datasets/test.zarr", 3)
    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    wanted, deadline, seen = _exported_metric_names(), time.monotonic() + 90, set()
    while time.monotonic() < deadline:  # Ray exports every few seconds
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        seen = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                if line.startswith("ray_dancegen_")}
        if wanted <= seen:
            break
        time.sleep(2)
    assert wanted <= seen, f"Ray exported {sorted(seen)}; the dashboard queries {sorted(wanted)}"
