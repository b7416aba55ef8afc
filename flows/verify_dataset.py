"""Verify a dataset version after a build: completeness and checksums of every shard.

Deployed downstream of ``build-dataset`` (prefect.yaml): a completed build triggers it.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State

from dancegen.config import load_config
from dancegen.flows.upstream import upstream_parameters
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.verify import verify_dataset as verify


def _build_target(flow_run_ref: str) -> tuple[str, str]:
    """(store, version) that a ``build-dataset`` flow run wrote, from its parameters."""
    parameters = upstream_parameters(flow_run_ref)
    config = parameters.get("config", "configs/local-cpu.yaml")
    if isinstance(config, str):
        version = load_config(config, parameters.get("overrides")).dataset.version
    else:
        version = config["dataset"]["version"]
    return parameters["out"], version


@flow(name="verify-dataset")
def verify_dataset(
    out: str | None = None, version: str = "v1", upstream_flow_run: str | None = None
) -> State:
    """Check every shard of ``out``/``version``; Failed when any is incomplete or damaged.

    With ``upstream_flow_run`` (a flow-run id or event resource id ``prefect.flow-run.<id>``,
    as the deployment trigger passes it), the store and version are those that run built.
    """
    logger = get_run_logger()
    if upstream_flow_run:
        out, version = _build_target(upstream_flow_run)
    if out is None:
        raise ValueError("verify-dataset needs `out` or `upstream_flow_run`")
    logger.info("verifying %s version %s", out, version)
    report = verify(DatasetStore(out, version))
    lines = [f"# Verify `{out}` / `{version}`", "", report.summary()]
    lines += [f"- incomplete `{unit}`" for unit in report.incomplete]
    lines += [f"- damaged `{unit}`: {reason}" for unit, reason in report.damaged.items()]
    create_markdown_artifact("\n".join(lines), key="dataset-verify", description=report.summary())
    for unit, reason in report.damaged.items():
        logger.error("damaged %s: %s", unit, reason)
    logger.info(report.summary())
    state = Completed if report.ok else Failed
    return state(message=report.summary(), data=asdict(report))
