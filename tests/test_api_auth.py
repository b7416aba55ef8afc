"""The Prefect API with auth, as docker-compose.yml runs it, and the automations applied to it.

A real ``prefect server start`` (its own PREFECT_HOME and a free port) with
PREFECT_SERVER_API_AUTH_STRING: a request without the string, or with a wrong one, is refused
with 401; basic auth as Prefect's client sends it (PREFECT_API_AUTH_STRING) is served; and
deploy/automations.py creates the automations of deploy/automations.yaml through it, then
updates them rather than adding duplicates.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import deploy_helpers
import pytest
from prefect.blocks.notifications import SlackWebhook
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

REPO = Path(__file__).resolve().parents[1]
AUTH = "dancegen:a-long-random-test-password"
BLOCK = "dancegen-alerts"
HEALTH_TIMEOUT_S = 180.0  # 10-17 s on an idle machine; minutes when the cores are shared
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class AuthServer:
    api: str
    client_env: dict[str, str]  # what a client process gets: the URL and the auth string


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, method: str = "GET", body: dict | None = None,
             authorization: str | None = None) -> tuple[int, Any]:
    """(status, decoded JSON) of one request; errors are returned, not raised."""
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _basic(auth: str) -> str:
    """The Authorization header Prefect's client sends for PREFECT_API_AUTH_STRING."""
    return "Basic " + base64.b64encode(auth.encode()).decode()


def _wait_healthy(api: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prefect server exited:\n{log.read_text()[-3000:]}"
        try:
            if _request(f"{api}/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"prefect server not healthy after {HEALTH_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    home = tmp_path_factory.mktemp("prefect-auth")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    server_env = {**clean, "PREFECT_HOME": str(home / "server"),
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                  "PREFECT_SERVER_API_AUTH_STRING": AUTH}
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(api, process, log_path)
        yield AuthServer(api, {**clean, "PREFECT_HOME": str(home / "client"),
                               "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": AUTH})
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def automations_script() -> ModuleType:
    return deploy_helpers.automations_script()


@pytest.mark.parametrize("authorization", [
    None, _basic("dancegen:wrong-password"), _basic("intruder:" + AUTH.split(":", 1)[1]),
    "Bearer " + AUTH, "Basic not-base64!",
], ids=["none", "wrong-password", "wrong-user", "bearer", "garbage"])
@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/admin/version", None),
    ("POST", "/flow_runs/filter", {}),
    ("POST", "/deployments/filter", {}),
    ("POST", "/automations/filter", {}),
], ids=["version", "flow-runs", "deployments", "automations"])
def test_the_api_refuses_requests_without_the_auth_string(
        auth_server: AuthServer, authorization: str | None, method: str, path: str,
        body: dict | None) -> None:
    status, payload = _request(auth_server.api + path, method, body, authorization)
    assert status == 401, payload
    assert payload == {"exception_message": "Unauthorized"}


def test_basic_auth_is_served_and_health_stays_open_for_probes(auth_server: AuthServer) -> None:
    status, version = _request(f"{auth_server.api}/admin/version", authorization=_basic(AUTH))
    assert (status, version) == (200, "3.9.1")
    status, runs = _request(f"{auth_server.api}/flow_runs/filter", "POST", {},
                            authorization=_basic(AUTH))
    assert (status, runs) == (200, [])
    # docker-compose.yml's healthcheck of prefect-server calls /api/health without the string
    assert _request(f"{auth_server.api}/health") == (200, True)


def test_prefect_client_sends_the_auth_string(auth_server: AuthServer) -> None:
    with temporary_settings(updates={PREFECT_API_URL: auth_server.api,
                                     PREFECT_API_AUTH_STRING: AUTH}), \
            get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("auth-probe")
    status, flow = _request(f"{auth_server.api}/flows/{flow_id}", authorization=_basic(AUTH))
    assert status == 200 and flow["name"] == "auth-probe"
    with temporary_settings(updates={PREFECT_API_URL: auth_server.api,
                                     PREFECT_API_AUTH_STRING: "dancegen:wrong"}), \
            get_client(sync_client=True) as client, \
            pytest.raises(PrefectHTTPStatusError, match="401"):
        client.read_flow(flow_id)


def _automations(api: str) -> dict[str, dict]:
    status, found = _request(f"{api}/automations/filter", "POST", {}, _basic(AUTH))
    assert status == 200, found
    return {automation["name"]: automation for automation in found}


def test_automations_are_created_then_updated_not_duplicated(
        auth_server: AuthServer, automations_script: ModuleType,
        capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings(updates={PREFECT_API_URL: auth_server.api,
                                     PREFECT_API_AUTH_STRING: AUTH}):
        block_id = SlackWebhook(url="https://hooks.slack.com/services/T0/B0/X").save(
            BLOCK, overwrite=True)
    expected = {a.name for a in automations_script.load_automations(
        automations_script.AUTOMATIONS, block_id)}
    # as documented: a process of its own, configured by the environment only
    first = subprocess.run(
        [sys.executable, "deploy/automations.py", "--block", f"slack-webhook/{BLOCK}"],
        cwd=REPO, env=auth_server.client_env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created automation") == len(expected) == 2, first.stdout
    created = _automations(auth_server.api)
    assert set(created) == expected

    with temporary_settings(updates={PREFECT_API_URL: auth_server.api,
                                     PREFECT_API_AUTH_STRING: AUTH}):
        assert automations_script.main(["--block", f"slack-webhook/{BLOCK}"]) == 0
    assert capsys.readouterr().out.count("updated automation") == 2
    updated = _automations(auth_server.api)
    assert {name: a["id"] for name, a in updated.items()} == {
        name: a["id"] for name, a in created.items()}, "a re-run must not duplicate"
    for automation in updated.values():
        (action,) = automation["actions"]
        assert action["type"] == "send-notification"
        assert action["block_document_id"] == str(block_id)
    stuck = updated["dancegen-build-stuck-running"]["trigger"]
    assert stuck["posture"] == "Proactive" and stuck["after"] == ["prefect.flow-run.Running"]
    assert stuck["within"] == 43200


@pytest.mark.parametrize(("block", "auth", "message"), [
    (f"slack-webhook/{BLOCK}-missing", AUTH,
     f"notification block slack-webhook/{BLOCK}-missing not found"),
    ("slack-webhook", AUTH, "expected BLOCK-TYPE-SLUG/NAME"),
    (f"slack-webhook/{BLOCK}", "dancegen:wrong", "refused the request (401)"),
], ids=["missing-block", "malformed-block", "wrong-auth"])
def test_automations_script_fails_with_one_line(
        auth_server: AuthServer, automations_script: ModuleType,
        capsys: pytest.CaptureFixture[str], block: str, auth: str, message: str) -> None:
    with temporary_settings(updates={PREFECT_API_URL: auth_server.api,
                                     PREFECT_API_AUTH_STRING: auth}):
        assert automations_script.main(["--block", block]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
