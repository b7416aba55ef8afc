"""Downstream deployments read what to work on from the upstream flow run that triggered them."""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client


def upstream_parameters(flow_run_ref: str) -> dict:
    """Parameters of a flow run (an id, or an event's ``prefect.flow-run.<id>``)."""
    run_id = UUID(flow_run_ref.removeprefix("prefect.flow-run."))
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).parameters


def chain_head_parameters(flow_run_ref: str) -> dict:
    """Parameters of the first run up a trigger chain that names its store (``out``).

    build-dataset -> train-ldm stage 1 -> stage 2 -> stage 3: each downstream run only knows
    the run that triggered it, so the store and config come from the head of the chain.
    """
    parameters = upstream_parameters(flow_run_ref)
    for _ in range(16):  # a chain is a few runs long; never loop forever on a bad reference
        if parameters.get("out"):
            return parameters
        if not parameters.get("upstream_flow_run"):
            break
        parameters = upstream_parameters(parameters["upstream_flow_run"])
    raise ValueError(f"no store (`out`) up the trigger chain of {flow_run_ref}")
