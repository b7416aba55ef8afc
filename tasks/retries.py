"""When a failed task is worth retrying."""

from __future__ import annotations

from typing import Any

from dancegen.errors import ConfigError, InputError


def retry_unless_deterministic(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry store hiccups and lost workers, never bad input
    or a bad config, which fail the same way every time."""
    try:
        state.result()
    except (InputError, ConfigError):
        return False
    except Exception:
        return True
    return False
