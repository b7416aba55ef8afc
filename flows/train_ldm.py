"""Train one stage of M2PEnc + the CHAMP-style LDM with Ray Train; the flow is the driver.

    dataset store --stage 1: M2PEnc-----------------------> <store>/models/ldm/<run>/stage1
                  --stage 2: image stage (ref U-Net, guidance encoders, U-Net) --> stage2
                  --stage 3: temporal layers + M2PEnc (needs 1 and 2) ---------> stage3

Each stage is a ``TorchTrainer`` with ``training.workers`` DDP ranks of ``ray.stages.ldm_train``
resources (a GPU each on a cluster). Ray Train restarts a failed worker group up to
``ray.retries`` times (any error: a missing weight file fails each restart the same way, then
the flow ends Failed with it), and each restart resumes from the last checkpoint in the store;
a re-run of a finished stage returns at once, one with more steps configured resumes.
Offline (``ldm.stand_in``), stage 2 first writes the stand-in base models to the store, as a
Ray task. While a stage trains, the flow publishes its progress (``ldm-stage<N>-progress``)
and the loss table so far (``ldm-stage<N>``) from the stage's ``latest.json`` at each
checkpoint (flows/reports.py); the summary artifact follows under the same key at the end.

Deployed, each stage is triggered by the completion of the one before it (stage 1 by the
verification of a finished build) and takes the store and config from the build run at the
head of that trigger chain (flows/upstream.py).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)

from dancegen.config import DancegenConfig, StageResources
from dancegen.flows.reports import TrainingProgress, loss_table
from dancegen.flows.upstream import resolve_store_and_config
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.tasks.ldm_stand_in import build_stand_in_base
from dancegen.tasks.ldm_train import ray_train_worker


@task(name="build-stand-in-base", cache_policy=NO_CACHE)
def stand_in_base(out: str, config: DancegenConfig) -> dict:
    """Offline stand-ins for SD 1.5 / VAE / CLIP, written to the store once."""
    return build_stand_in_base(out, config)


def worker_resources(resources: StageResources) -> dict[str, float]:
    """Ray Train's ``resources_per_worker`` from a stage's Ray resources."""
    wanted = {"CPU": resources.num_cpus}
    if resources.num_gpus:
        wanted["GPU"] = resources.num_gpus
    if resources.memory_mb is not None:
        wanted["memory"] = resources.memory_mb * 1024 * 1024
    return wanted


class TrainerWithoutDashboard(TorchTrainer):
    """A ``TorchTrainer`` for the local Ray dancegen starts without a dashboard.

    Ray Train's placement-group cleaner watches the controller through the state API, which
    lives in the dashboard: without one, each of its calls can only time out, and stopping it
    at the end of ``fit`` waits that timeout out (about 12 s per training run). Its real job,
    removing a dead controller's placement group, only matters on a long-lived cluster, which
    runs the dashboard and gets the default trainer.
    """

    def _create_default_callbacks(self) -> list:
        return [callback for callback in super()._create_default_callbacks()
                if not isinstance(callback, PlacementGroupCleanerCallback)]


def trainer_class(config: DancegenConfig) -> type[TorchTrainer]:
    """The trainer for the config's Ray: without the cleaner on a local Ray with no dashboard."""
    local_without_dashboard = config.ray.address is None and not config.ray.include_dashboard
    return TrainerWithoutDashboard if local_without_dashboard else TorchTrainer


def _headline(stage: int, config: DancegenConfig, run: LdmRun, state: dict) -> str:
    losses = state["losses"]
    return (f"LDM stage {stage} ({config.ldm.run_name}): {state['step']} steps, loss "
            f"{losses[0][1]:.4f} -> {losses[-1][1]:.4f}; {run.location.url}/"
            f"{state['checkpoint']}")


@flow(name="train-ldm", task_runner=RayTaskRunner())
def train_ldm(
    stage: int,
    out: str | None = None,
    config: DancegenConfig | str = "configs/local-cpu.yaml",
    overrides: list[str] | None = None,
    upstream_flow_run: str | None = None,
    inputs: str | None = None,  # unused; accepted so every dancegen flow takes the same args
) -> State:
    """Train stage 1, 2 or 3 on the dataset in ``out`` (or the upstream run's store)."""
    out, config = resolve_store_and_config("train-ldm", out, config, overrides,
                                           upstream_flow_run)
    if stage not in (1, 2, 3):
        raise ValueError(f"stage must be 1, 2 or 3, not {stage}")
    logger = get_run_logger()
    run = LdmRun(out, config.ldm.run_name)
    state = run.state(stage)
    if state and state["step"] >= config.training.stage(stage).steps:
        # nothing left to train: no workers started (more steps configured: it resumes)
        return Completed(message=_headline(stage, config, run, state), data=state)
    if stage == 3 and not (run.done(1) and run.done(2)):
        return Failed(message=f"stage 3 needs finished stages 1 and 2 in {run.location.url}")
    if stage > 1 and config.ldm.stand_in is not None:
        with remote_options(**config.ray.resources("ldm_train").ray_options()):
            base = stand_in_base.submit(out, config).result()
        logger.info("stand-in base weights (NOT SD 1.5): VAE loss %s -> %s",
                    base["vae_losses"][0], base["vae_losses"][-1])
    resources = config.ray.resources("ldm_train")
    trainer = trainer_class(config)(
        ray_train_worker,
        train_loop_config={"stage": stage, "store": out,
                           "config": config.model_dump(mode="json")},
        scaling_config=ScalingConfig(
            num_workers=config.training.workers, use_gpu=bool(resources.num_gpus),
            resources_per_worker=worker_resources(resources)),
        run_config=RunConfig(
            name=f"{config.ldm.run_name}-stage{stage}",
            failure_config=FailureConfig(max_failures=config.ray.retries)),
    )
    progress = TrainingProgress(f"ldm-stage{stage}", f"LDM stage {stage} ({config.ldm.run_name})",
                                config.training.stage(stage).steps, lambda: run.state(stage))
    try:
        with progress:
            result = trainer.fit()
        error = result.error
    except Exception as failure:  # Ray Train raises once its restarts are used up
        error = failure
    state = run.state(stage)
    if error is not None or not state or not state.get("done"):
        last = f" (last checkpoint: step {state['step']})" if state else ""
        return Failed(message=f"LDM stage {stage} failed{last}: {type(error).__name__}: "
                              f"{error}")
    headline = _headline(stage, config, run, state)
    create_markdown_artifact(f"# {headline}\n\n{loss_table(state)}",
                             key=f"ldm-stage{stage}", description=headline)
    logger.info(headline)
    return Completed(message=headline, data=state)

