"""docker-compose.yml: the stack's services, loopback-only ports, secrets only from the environment.

The static checks read the file with PyYAML (anchors and merge keys resolved). When a
`docker-compose` binary is installed (Debian's package validates without a Docker engine), the
file is also validated by compose itself, once with .env.example and once without any secrets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"

SERVICES = {
    "postgres", "prefect-server", "minio", "minio-init", "ray-head", "ray-gpu-worker",
    "prefect-worker",
}
ONE_SHOT = {"minio-init"}  # runs to completion; everything else is long-running
RAY_NODES = {"ray-head", "ray-gpu-worker", "prefect-worker"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
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


def _referenced() -> set[str]:
    return {a or b for text in _strings(_compose()) for a, b in VARIABLE.findall(text)}


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
    for var in ("RAY_AUTH_TOKEN", "POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
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
