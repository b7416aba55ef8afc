"""docker-compose.yml: services present and nothing published beyond loopback."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_compose_publishes_only_on_loopback_and_keeps_secrets_out() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"prefect-server", "ray-head"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    token = services["ray-head"]["environment"]["RAY_AUTH_TOKEN"]
    assert token.startswith("${"), "the Ray token must come from the environment, not the file"
    assert services["ray-head"]["environment"]["RAY_AUTH_MODE"] == "token"
