"""prefect.yaml: every deployment validates with Prefect's own models and its flow loads;
the verify flow finds the store of the build run that triggered it through the real API."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import DeploymentConfig
from prefect.events import DeploymentTriggerTypes
from prefect.flows import load_flow_from_entrypoint
from prefect_ray import RayTaskRunner
from pydantic import TypeAdapter

from dancegen.config import DancegenConfig
from dancegen.flows.build_dataset import build_dataset
from dancegen.flows.verify_dataset import verify_dataset

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("spec", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_validates_and_its_flow_loads(spec: dict) -> None:
    deployment = DeploymentConfig.model_validate(spec)
    flow = load_flow_from_entrypoint(deployment.entrypoint)
    accepted = set(flow.parameters.properties)
    assert set(deployment.parameters) <= accepted, "unknown parameters in prefect.yaml"
    if not spec.get("triggers"):  # a scheduled run has nothing but its own parameters
        assert set(flow.parameters.required or []) <= set(deployment.parameters)
    for trigger in spec.get("triggers", []):
        parsed = TypeAdapter(DeploymentTriggerTypes).validate_python(trigger)
        assert set(trigger.get("parameters", {})) <= accepted
        upstream = trigger["match_related"]["prefect.resource.name"]
        assert upstream in {d["name"] for d in DEPLOYMENTS}, f"trigger on unknown {upstream}"
        assert "prefect.flow-run.Completed" in parsed.expect


def test_scheduled_build_is_incremental_and_single_writer() -> None:
    build = next(d for d in DEPLOYMENTS if d["entrypoint"].endswith(":build_dataset"))
    assert build["schedules"] and build["concurrency_limit"] == 1
    assert (REPO / build["parameters"]["config"]).exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "ray_cluster")
def test_verify_reads_the_upstream_run(fixtures_dir: Path, tmp_path: Path,
                                       config: DancegenConfig) -> None:
    out = str(tmp_path / "store.zarr")
    overrides = ["stages=[motion]", "dataset.version=v7", "edge.synthesis.music=null"]
    build = build_dataset.with_options(task_runner=RayTaskRunner())(
        inputs=str(fixtures_dir), out=out, config="configs/local-cpu.yaml",
        overrides=overrides, return_state=True)
    assert build.is_completed(), build.message
    state = verify_dataset(upstream_flow_run=f"prefect.flow-run.{build.state_details.flow_run_id}",
                           return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert report["version"] == "v7" and report["checked"] == 4 and not report["damaged"]
