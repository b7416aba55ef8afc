"""prefect.yaml: every deployment validates with Prefect's own models and its flow loads;
the verify flow finds the store of the build run that triggered it through the real API.
deploy/automations.yaml: the automations validate with Prefect's models, and the server's own
trigger logic matches them to the state-change events of exactly the chain's runs.
(tests/test_api_auth.py applies them to a real server.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from deploy_helpers import automations_script
from prefect.cli.deploy._models import DeploymentConfig
from prefect.events import DeploymentTriggerTypes
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, Posture
from prefect.flows import load_flow_from_entrypoint
from prefect.server.events.schemas.automations import EventTrigger as ServerEventTrigger
from prefect.server.events.schemas.events import ReceivedEvent
from prefect_ray import RayTaskRunner
from pydantic import TypeAdapter

from dancegen.config import DancegenConfig
from dancegen.flows.build_dataset import UPDATED_EVENT, build_dataset
from dancegen.flows.verify_dataset import verify_dataset

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
NAMES = {d["name"] for d in DEPLOYMENTS}
TERMINAL = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Crashed",
                                                      "Cancelled")}


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
        # verify waits for a build that wrote something; the training chain for its verify
        wanted = UPDATED_EVENT if upstream == "build-dataset-nightly" \
            else "prefect.flow-run.Completed"
        assert wanted in parsed.expect


def test_scheduled_build_is_incremental_and_single_writer() -> None:
    build = next(d for d in DEPLOYMENTS if d["entrypoint"].endswith(":build_dataset"))
    assert build["schedules"] and build["concurrency_limit"] == 1
    assert (REPO / build["parameters"]["config"]).exists()


BLOCK_ID = uuid.uuid4()
SCRIPT = automations_script()
AUTOMATIONS = {a.name: a for a in SCRIPT.load_automations(SCRIPT.AUTOMATIONS, BLOCK_ID)}


def _server_trigger(automation: AutomationCore) -> ServerEventTrigger:
    """The trigger as the server evaluates it (its own model, with its matching logic)."""
    return ServerEventTrigger.model_validate(automation.trigger.model_dump(mode="json"))


def _state_event(state: str, deployment: str | None) -> ReceivedEvent:
    """A flow-run state-change event as the server emits it (server/models/events.py)."""
    related = [{"prefect.resource.id": f"prefect.flow.{uuid.uuid4()}",
                "prefect.resource.role": "flow", "prefect.resource.name": "build-dataset"}]
    if deployment:
        related.append({"prefect.resource.id": f"prefect.deployment.{uuid.uuid4()}",
                        "prefect.resource.role": "deployment",
                        "prefect.resource.name": deployment})
    return ReceivedEvent(
        occurred=datetime.now(UTC), event=f"prefect.flow-run.{state}", id=uuid.uuid4(),
        resource={"prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}",
                  "prefect.resource.name": "witty-otter", "prefect.state-name": state},
        related=related)


def test_automations_validate_and_notify_the_given_block() -> None:
    assert set(AUTOMATIONS) == {"dancegen-run-failed-or-crashed", "dancegen-build-stuck-running"}
    for automation in AUTOMATIONS.values():
        assert automation.enabled and automation.actions
        for action in automation.actions:
            assert isinstance(action, SendNotification), type(action)
            assert action.block_document_id == BLOCK_ID
            assert "{{ flow_run.name }}" in action.subject + action.body


def test_failed_or_crashed_runs_of_every_deployment_are_reported() -> None:
    automation = AUTOMATIONS["dancegen-run-failed-or-crashed"]
    assert automation.trigger.posture == Posture.Reactive
    assert automation.trigger.threshold == 1 and automation.trigger.within == timedelta(0)
    assert automation.trigger.for_each == {"prefect.resource.id"}  # one report per run
    trigger = _server_trigger(automation)
    for name in NAMES:
        for state in ("Failed", "Crashed"):
            assert trigger.covers(_state_event(state, name)), f"{state} run of {name}"
        for state in ("Running", "Completed", "Cancelled"):
            assert not trigger.covers(_state_event(state, name)), f"{state} run of {name}"
    assert not trigger.covers(_state_event("Failed", "someone-elses-deployment"))
    assert not trigger.covers(_state_event("Failed", None))  # a CLI run: not the chain's


def test_a_build_stuck_running_is_reported_proactively_before_the_next_night() -> None:
    automation = AUTOMATIONS["dancegen-build-stuck-running"]
    scheduled = [d["name"] for d in DEPLOYMENTS if d.get("schedules")]
    assert scheduled == ["build-dataset-nightly"]
    trigger = _server_trigger(automation)
    assert trigger.posture == Posture.Proactive and trigger.threshold == 1
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.starts_after("prefect.flow-run.Running")
    assert all(trigger.expects(event) for event in TERMINAL)
    assert not trigger.expects("prefect.flow-run.Running")
    assert trigger.covers(_state_event("Running", "build-dataset-nightly"))
    assert not trigger.covers(_state_event("Running", "train-edge"))
    # the schedule is daily: a run stuck for a day would already block the next one
    assert timedelta(hours=1) <= trigger.within < timedelta(days=1)


def test_automations_file_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "automations.yaml"
    bad.write_text(yaml.safe_dump({"automations": [
        {"name": "x", "trigger": {"type": "event", "posture": "Sometimes"},
         "actions": [{"type": "send-notification", "body": "hi"}]}]}))
    with pytest.raises(SCRIPT.ConfigError, match=r"automation 'x' is invalid: ") as error:
        SCRIPT.load_automations(bad, BLOCK_ID)
    assert "\n" not in str(error.value)
    bad.write_text("automations: []\n")
    with pytest.raises(SCRIPT.ConfigError, match="expected a non-empty list"):
        SCRIPT.load_automations(bad, BLOCK_ID)


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
