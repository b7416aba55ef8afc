"""Verify a dataset version after a build: completeness of every shard, and the checksums of
the shards written since the last check (``full``: of every shard), read back by Ray tasks.

Deployed downstream of ``build-dataset`` (prefect.yaml): a build that wrote something emits
``dancegen.dataset.updated``, which triggers it; a build with nothing to do does not.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from dancegen.config import load_config
from dancegen.flows.fanout import run_bounded
from dancegen.flows.upstream import upstream_parameters
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.verify import ShardCheck, check_shards
from dancegen.storage.verify import verify_dataset as verify

CHECKS_PER_TASK = 16  # shards one task reads back: few task runs, still spread over workers
TASKS_IN_FLIGHT = 64


@task(name="check-shards", cache_policy=NO_CACHE, persist_result=False)
def check_shards_task(out: str, version: str, checks: list[ShardCheck]) -> dict[str, str | None]:
    """Read a batch of shards back on a Ray worker: unit -> damage reason, or None."""
    return check_shards(DatasetStore(out, version), checks)


def _on_ray(out: str, version: str):
    """A checker that reads the shards back in Ray tasks, a batch per task."""
    def checker(checks: list[ShardCheck]) -> dict[str, str | None]:
        batches = [checks[i:i + CHECKS_PER_TASK] for i in range(0, len(checks), CHECKS_PER_TASK)]

        def submit(batch: list[ShardCheck]):
            with remote_options(num_cpus=1):
                return check_shards_task.submit(out, version, batch)

        outcome: dict[str, str | None] = {}
        for batch, result in run_bounded(batches, submit, TASKS_IN_FLIGHT):
            if isinstance(result, BaseException):  # the task itself failed: say so per shard
                outcome.update({c.unit: f"not checked ({type(result).__name__}: {result})"
                                for c in batch})
            else:
                outcome.update(result)
        return outcome
    return checker


def _build_target(flow_run_ref: str) -> tuple[str, str]:
    """(store, version) that a ``build-dataset`` flow run wrote, from its parameters."""
    parameters = upstream_parameters(flow_run_ref)
    config = parameters.get("config", "configs/local-cpu.yaml")
    if isinstance(config, str):
        version = load_config(config, parameters.get("overrides")).dataset.version
    else:
        version = config["dataset"]["version"]
    return parameters["out"], version


@flow(name="verify-dataset", task_runner=RayTaskRunner())
def verify_dataset(
    out: str | None = None, version: str = "v1", upstream_flow_run: str | None = None,
    full: bool = False,
) -> State:
    """Check every shard of ``out``/``version`` is complete and read back those written
    since the last check (``full``: all); Failed when any is incomplete or damaged.

    With ``upstream_flow_run`` (a flow-run id or event resource id ``prefect.flow-run.<id>``,
    as the deployment trigger passes it), the store and version are those that run built.
    """
    logger = get_run_logger()
    if upstream_flow_run:
        out, version = _build_target(upstream_flow_run)
    if out is None:
        raise ValueError("verify-dataset needs `out` or `upstream_flow_run`")
    logger.info("verifying %s version %s (%s)", out, version,
                "every shard" if full else "shards written since the last check")
    report = verify(DatasetStore(out, version), full=full, checker=_on_ray(out, version))
    lines = [f"# Verify `{out}` / `{version}`", "", report.summary()]
    lines += [f"- incomplete `{unit}`" for unit in report.incomplete]
    lines += [f"- damaged `{unit}`: {reason}" for unit, reason in report.damaged.items()]
    create_markdown_artifact("\n".join(lines), key="dataset-verify", description=report.summary())
    for unit, reason in report.damaged.items():
        logger.error("damaged %s: %s", unit, reason)
    logger.info(report.summary())
    state = Completed if report.ok else Failed
    return state(message=report.summary(), data=asdict(report))
