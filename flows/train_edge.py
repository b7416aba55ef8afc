"""Train EDGE, the music-to-motion diffusion model behind the pseudo-motions.

    inputs (AIST++ layout) --train-edge-model on a Ray worker--> <store>/models/edge/<run>/

The training task runs with the resources of ``ray.stages.edge_train`` (a GPU on a cluster)
and checkpoints into the store; re-running the flow after an interruption resumes from the
last checkpoint, and a run that already reached ``edge.train.steps`` returns at once.
While it trains, the flow publishes its progress (``edge-training-progress``) and the loss
table so far (``edge-training``) from the store's ``train.json`` at each checkpoint
(flows/reports.py); the summary artifact follows under the same key at the end.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from dancegen.config import DancegenConfig, load_config
from dancegen.flows.reports import TrainingProgress, loss_table
from dancegen.storage.edge_checkpoint import EdgeRun
from dancegen.tasks.edge_train import train_edge_model


def loss_markdown(run: EdgeRun, result: dict) -> str:
    """The run's summary artifact: settings, speed and the loss curve as a table."""
    lines = [
        f"# EDGE training `{run.location.url}`", "",
        f"{result['steps']} steps (resumed from {result['resumed_from']}), "
        f"{result['windows']} windows, {result['steps_per_second']:.2f} steps/s, "
        f"loss {result['first_loss']:.4f} -> {result['last_loss']:.4f}", "",
        loss_table(run.state() or {}),
    ]
    return "\n".join(lines)


@flow(name="train-edge", task_runner=RayTaskRunner())
def train_edge(
    inputs: str,
    out: str,
    config: DancegenConfig | str = "configs/local-cpu.yaml",
    overrides: list[str] | None = None,
) -> State:
    """Train ``config.edge`` on the train split of ``inputs``; checkpoints go to ``out``."""
    if isinstance(config, str):
        config = load_config(config, overrides)
    logger = get_run_logger()
    run = EdgeRun(out, config.edge.run_name)
    with remote_options(**config.ray.resources("edge_train").ray_options()):
        # a lost worker is retried; the retry resumes from the last checkpoint in the store
        future = train_edge_model.with_options(retries=config.ray.retries).submit(
            inputs, out, config)
    progress = TrainingProgress("edge-training", f"EDGE training {config.edge.run_name}",
                                config.edge.train.steps, run.state)
    try:
        with progress:
            result = future.result()
    except Exception as error:  # the task's own state holds the traceback
        return Failed(message=f"EDGE training failed: {type(error).__name__}: {error}")
    headline = (f"EDGE {config.edge.run_name}: {result['steps']} steps, loss "
                f"{result['first_loss']:.4f} -> {result['last_loss']:.4f}, "
                f"{result['steps_per_second']:.2f} steps/s; checkpoint {result['checkpoint']}")
    create_markdown_artifact(loss_markdown(run, result), key="edge-training",
                             description=headline)
    logger.info(headline)
    return Completed(message=headline, data=result)
