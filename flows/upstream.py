"""Downstream deployments read what to work on from the upstream flow run that triggered them."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client

from dancegen.config import DancegenConfig, load_config


def upstream_parameters(flow_run_ref: str) -> dict:
    """Parameters of a flow run (an id, or an event's ``prefect.flow-run.<id>``)."""
    run_id = UUID(flow_run_ref.removeprefix("prefect.flow-run."))
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).parameters


def chain_head_parameters(flow_run_ref: str) -> dict:
    """Parameters of the first run up a trigger chain that names its store (``out``).

    build-dataset -> verify-dataset -> train-ldm stage 1 -> stage 2 -> stage 3 -> evaluate:
    each downstream run only knows the run that triggered it, so the store and config come
    from the head of the chain.
    """
    parameters = upstream_parameters(flow_run_ref)
    for _ in range(16):  # a chain is a few runs long; never loop forever on a bad reference
        if parameters.get("out"):
            return parameters
        if not parameters.get("upstream_flow_run"):
            break
        parameters = upstream_parameters(parameters["upstream_flow_run"])
    raise ValueError(f"no store (`out`) up the trigger chain of {flow_run_ref}")


def resolve_store_and_config(flow: str, out: str | None, config: DancegenConfig | dict | str,
                             overrides: list[str] | None, upstream_flow_run: str | None
                             ) -> tuple[str, DancegenConfig]:
    """The store and config of a flow that works on an existing store: as given, or (when
    triggered) those at the head of the trigger chain. A local store path is made absolute,
    as Ray workers run in their own directories."""
    if upstream_flow_run:
        parameters = chain_head_parameters(upstream_flow_run)
        out = parameters["out"]
        config = parameters.get("config", config)
        overrides = parameters.get("overrides", overrides)
    if out is None:
        raise ValueError(f"{flow} needs `out` or `upstream_flow_run`")
    if "://" not in out:
        out = str(Path(out).resolve())
    if isinstance(config, str):
        config = load_config(config, overrides)
    elif isinstance(config, dict):
        config = DancegenConfig.model_validate(config)
    return out, config
