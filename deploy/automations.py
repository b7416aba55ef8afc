"""Create or update the Prefect automations of deploy/automations.yaml on the Prefect server.

    python deploy/automations.py --block slack-webhook/dancegen-alerts

The server is the one of PREFECT_API_URL (with PREFECT_API_AUTH_STRING when it asks for auth).
Every `send-notification` action reports to the notification block named by ``--block``
(block type slug / block name). An automation whose name already exists on the server is
updated, the others are created: running it again after an edit is safe. Prefect's own
``prefect automation create --from-file`` cannot do this: it needs the block's id in the file
and creates a duplicate on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import yaml
from prefect.client.orchestration import PrefectClient, get_client
from prefect.events.schemas.automations import AutomationCore
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError

from dancegen.errors import ConfigError, DancegenError

AUTOMATIONS = Path(__file__).with_name("automations.yaml")
ACTION_LISTS = ("actions", "actions_on_trigger", "actions_on_resolve")


def parse_block(reference: str) -> tuple[str, str]:
    """(block type slug, block name) of ``slack-webhook/dancegen-alerts``."""
    slug, _, name = reference.partition("/")
    if not slug or not name or "/" in name:
        raise ConfigError(f"--block {reference!r}: expected BLOCK-TYPE-SLUG/NAME, "
                          "e.g. slack-webhook/dancegen-alerts")
    return slug, name


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _automation(spec: Any, block_document_id: UUID, path: Path) -> AutomationCore:
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: every entry of `automations:` must be a mapping")
    for key in ACTION_LISTS:
        for action in spec.get(key) or []:
            if isinstance(action, dict) and action.get("type") == "send-notification":
                action["block_document_id"] = str(block_document_id)
    try:
        return AutomationCore.model_validate(spec)
    except ValidationError as error:
        name = spec.get("name", "?")
        raise ConfigError(f"{path}: automation {name!r} is invalid: {_one_line(error)}") from None


def load_automations(path: Path, block_document_id: UUID) -> list[AutomationCore]:
    """The automations of ``path``, validated by Prefect, notifying ``block_document_id``."""
    data = yaml.safe_load(path.read_text())
    specs = data.get("automations") if isinstance(data, dict) else None
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"{path}: expected a non-empty list under `automations:`")
    automations = [_automation(spec, block_document_id, path) for spec in specs]
    names = [automation.name for automation in automations]
    if len(names) != len(set(names)):
        raise ConfigError(f"{path}: automation names must be unique, got {names}")
    return automations


async def notification_block_id(client: PrefectClient, slug: str, name: str) -> UUID:
    """The id of the block document ``slug/name``, which must be able to notify."""
    try:
        document = await client.read_block_document_by_name(
            name=name, block_type_slug=slug, include_secrets=False)
    except ObjectNotFound:
        raise ConfigError(f"notification block {slug}/{name} not found on the Prefect server; "
                          "create it under Blocks in the UI first") from None
    capabilities = document.block_schema.capabilities if document.block_schema else []
    if "notify" not in capabilities:
        raise ConfigError(f"block {slug}/{name} cannot send notifications; "
                          "name a notification block (slack-webhook, custom-webhook, ...)")
    return document.id


async def apply(client: PrefectClient,
                automations: list[AutomationCore]) -> list[tuple[str, UUID, str]]:
    """Create each automation, or update the one of the same name: (name, id, what was done)."""
    done = []
    for automation in automations:
        existing = await client.read_automations_by_name(automation.name)
        if len(existing) > 1:
            raise ConfigError(f"{len(existing)} automations are named {automation.name!r}; "
                              "delete all but one (prefect automation delete --id ...)")
        if existing:
            await client.update_automation(existing[0].id, automation)
            done.append((automation.name, existing[0].id, "updated"))
        else:
            done.append((automation.name, await client.create_automation(automation), "created"))
    return done


async def apply_file(path: Path, block: str) -> list[tuple[str, UUID, str]]:
    """Apply the automations of ``path`` with ``block`` (slug/name) as their notification block."""
    slug, name = parse_block(block)
    async with get_client() as client:
        try:
            block_id = await notification_block_id(client, slug, name)
            return await apply(client, load_automations(path, block_id))
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 401:
                raise
            raise ConfigError(f"the Prefect API at {client.api_url} refused the request (401): "
                              "set PREFECT_API_AUTH_STRING to the server's auth string") from None
        except httpx.TransportError as error:
            raise ConfigError(f"cannot reach the Prefect API at {client.api_url}: {error}; "
                              "set PREFECT_API_URL") from None


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", required=True, metavar="TYPE-SLUG/NAME",
                        help="notification block, e.g. slack-webhook/dancegen-alerts")
    parser.add_argument("--file", type=Path, default=AUTOMATIONS,
                        help="automations file (default: deploy/automations.yaml)")
    args = parser.parse_args(argv)
    try:
        done = asyncio.run(apply_file(args.file, args.block))
    except DancegenError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, automation_id, what in done:
        print(f"{what} automation {name} ({automation_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
