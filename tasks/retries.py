"""When a failed unit is worth retrying."""

from __future__ import annotations

from typing import Any

from dancegen.errors import ConfigError, InputError


def is_deterministic(error: BaseException) -> bool:
    """Bad input or a bad config: it fails the same way every time, so a retry cannot help
    (store hiccups, lost workers and timeouts are worth another try)."""
    return isinstance(error, (InputError, ConfigError))


def retry_unless_deterministic(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the error :func:`is_deterministic`."""
    try:
        state.result()
    except Exception as error:
        return not is_deterministic(error)
    return False
