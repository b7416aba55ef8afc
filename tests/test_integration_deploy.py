"""End to end as an operator runs it: a real `prefect server start`, a real `ray start --head`
cluster, a local S3 server; deploy from prefect.yaml, run the build through a Prefect worker
on the cluster, check the store, and check that its completion triggered the verify flow.

Everything runs as subprocesses with their own environment, so nothing here depends on the
in-process Prefect test harness used by the other tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dancegen.storage.dataset import DatasetStore
from dancegen.storage.location import StoreLocation

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _api(url: str, path: str, body: dict | None = None) -> object:
    request = urllib.request.Request(
        f"{url}{path}", data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _healthy(url: str) -> bool:
    try:
        return _api(url, "/health") is True
    except OSError:
        return False


@pytest.fixture
def operator_env(tmp_path: Path, s3_endpoint: str) -> Iterator[dict[str, str]]:
    """A Prefect server and a Ray head started like an operator would, torn down after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_"))}
    api = f"http://127.0.0.1:{_free_port()}/api"
    ray_port = _free_port()
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        RAY_AUTH_MODE="disabled",  # loopback-only test cluster
        RAY_ADDRESS=f"127.0.0.1:{ray_port}",
        AWS_ENDPOINT_URL=s3_endpoint,
    )
    processes: list[subprocess.Popen] = []
    log = (tmp_path / "services.log").open("wb")

    def start(*args: str) -> subprocess.Popen:
        process = subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        processes.append(process)
        return process

    start(str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
          "--port", api.split(":")[2].split("/")[0])
    ray_temp = Path("/tmp") / f"dgray{ray_port}"  # short: Ray's socket paths have a length cap
    # --block keeps the head's processes under this command, in a process group of its own:
    # teardown stops exactly this cluster (`ray stop` would also kill the test session's Ray)
    start(str(BIN / "ray"), "start", "--head", "--block", "--port", str(ray_port),
          "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
          "--temp-dir", str(ray_temp))
    try:
        _wait(lambda: _healthy(api), 120, "the Prefect server")
        _wait(lambda: _listening(ray_port), 120, "the Ray head")
        yield env
    finally:
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)  # then SIGKILL: a slow stop is not the subject
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        shutil.rmtree(ray_temp, ignore_errors=True)
        log.close()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal a service and every process it started (its own session, see ``start``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _flow_runs(api: str, flow_name: str) -> list[dict]:
    return _api(api, "/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}}})


def test_deploy_run_on_cluster_and_trigger_verify(operator_env: dict[str, str],
                                                  fixtures_dir: Path, s3_bucket: str,
                                                  tmp_path: Path) -> None:
    env, api = operator_env, operator_env["PREFECT_API_URL"]
    inputs, out = f"{s3_bucket}/aistpp", f"{s3_bucket}/datasets/it.zarr"
    StoreLocation.parse(inputs).fs.put(f"{fixtures_dir}/", inputs.removeprefix("s3://"),
                                       recursive=True)
    _prefect(env, "work-pool", "create", "dancegen", "--type", "process")
    # the build and the flow it triggers; the LDM stages and evaluation further down the chain
    # would keep the worker training after the verify run (their tests are test_ldm_training's)
    _prefect(env, "deploy", "--name", "build-dataset-nightly", "--name", "verify-after-build")
    params = {"inputs": inputs, "out": out, "config": "configs/local-cpu.yaml",
              "overrides": ["stages=[motion, music]", "edge.synthesis.music=null"]}
    _prefect(env, "deployment", "run", "build-dataset/build-dataset-nightly",
             "--params", json.dumps(params))

    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "dancegen", "--type", "process"],
        env=env, cwd=REPO, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def finished(name: str) -> dict | None:
            runs = [r for r in _flow_runs(api, name) if r["state_type"] in (
                "COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
            return runs[0] if runs else None

        build = _wait(lambda: finished("build-dataset"), 400, "the build run", interval=3)
        assert build["state_type"] == "COMPLETED", build["state"]
        verify = _wait(lambda: finished("verify-dataset"), 200, "the triggered verify run",
                       interval=3)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)  # it usually stops in a second or two; once it took 120+
        except subprocess.TimeoutExpired:  # a slow shutdown on a busy machine is not the subject
            worker.kill()
            worker.wait()
        worker_log.close()
    assert verify["state_type"] == "COMPLETED", verify["state"]
    assert verify["parameters"]["upstream_flow_run"] == f"prefect.flow-run.{build['id']}"
    dataset = DatasetStore(out, "v1")
    shards = len(dataset.shard_ranges())
    assert len(dataset.records("motion")) == len(dataset.records("music")) == shards == 4
    assert not dataset.failures()
