"""Shared test fixtures: synthetic inputs, a local S3 server, Prefect's test server, local Ray.

The environment is set before Prefect or Ray is imported: Prefect reads its settings at import,
and Ray workers inherit the environment of the process that starts the cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="dancegen-tests-"))
os.environ.update(
    PREFECT_HOME=str(_HOME / "prefect"),
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_UI_ENABLED="false",
    PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore",
    RAY_AUTH_MODE="disabled",  # a throwaway local test cluster on loopback only
    RAY_DEDUP_LOGS="0",
    # S3 credentials for the local moto server only; never real ones
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
os.environ.pop("PREFECT_API_URL", None)

import boto3  # noqa: E402
import fault_report  # noqa: E402
import pytest  # noqa: E402
from ldm_helpers import short_config  # noqa: E402

from dancegen.config import DancegenConfig, load_config  # noqa: E402
from dancegen.fixtures import write_fixtures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic AIST++ stand-in, written once per session (treat as read-only)."""
    return write_fixtures(tmp_path_factory.mktemp("fixtures"))


@pytest.fixture
def inputs_copy(fixtures_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the fixtures for tests that damage or change inputs."""
    return Path(shutil.copytree(fixtures_dir, tmp_path / "inputs"))


@pytest.fixture
def config() -> DancegenConfig:
    """The embedded default config, without pseudo-motions (those need a trained EDGE: see
    test_edge_synthesis.py)."""
    return load_config(REPO / "configs/local-cpu.yaml", ["edge.synthesis.music=null"])


class S3Server:
    """moto's S3 server on a fixed loopback port, which a test may stop and start again
    (an outage): its buckets live in this process's memory and survive the restart."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 API (moto's server) on a loopback port, exported as AWS_ENDPOINT_URL."""
    server = S3Server()
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    yield server
    os.environ.pop("AWS_ENDPOINT_URL", None)
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> str:
    """The S3 server's endpoint URL."""
    return s3_server.endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket; returns its s3:// URL."""
    name = "dg-" + request.node.name.lower().replace("_", "-").replace("[", "-").strip("]")[:40]
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's test harness: a real temporary API server, started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint: str) -> Iterator[None]:
    """One local Ray for the session; RayTaskRunner reuses an initialised Ray.

    Started after the S3 server so that its workers inherit AWS_ENDPOINT_URL.
    """
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="prefect")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def built_store(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path,
                prefect_server: None, ray_cluster: None) -> Path:
    """The fixture dataset built with :func:`short_config`, once (treat as read-only)."""
    from prefect_ray import RayTaskRunner

    from dancegen.flows.build_dataset import build_dataset

    store = tmp_path_factory.mktemp("ldm") / "store.zarr"
    state = build_dataset.with_options(task_runner=RayTaskRunner())(
        inputs=str(fixtures_dir), out=str(store), config=short_config(), return_state=True)
    assert state.is_completed(), state.message
    return store


@pytest.fixture(scope="session")
def trained(built_store: Path) -> Path:
    """``built_store`` with the stand-in base and the three short LDM stages trained."""
    from dancegen.tasks.ldm_stand_in import build_stand_in_base
    from dancegen.tasks.ldm_train import train_stage

    config = short_config()
    build_stand_in_base(str(built_store), config)
    for stage in (1, 2, 3):
        train_stage(stage, str(built_store), config)
    return built_store


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand the fault tally to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_outcomes"] = [asdict(o) for o in fault_report.OUTCOMES]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """On the pytest-xdist controller: collect a finished worker's fault tally."""
    fault_report.add_from_worker(getattr(node, "workeroutput", {}).get("fault_outcomes", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault-injection tally (tests/fault_report.py), when fault tests ran."""
    lines = fault_report.table()
    if lines:
        terminalreporter.section("faults injected: units tried, lost, recomputed")
        for line in lines:
            terminalreporter.write_line(line)
