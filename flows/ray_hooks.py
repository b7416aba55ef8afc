"""Set-up run in every Ray worker process that dancegen's local Ray starts.

Kept tiny (logging only): Ray imports it at each worker's start.
"""

from __future__ import annotations

import logging


def quiet_without_dashboard() -> None:
    """Silence Ray Train's placement-group cleaner, which polls the state API every second.

    The state API lives in the dashboard, which the embedded default does not start
    (``ray.include_dashboard: false``); the cleaner then logs a warning per second for the
    whole of every training stage, drowning the run's own output. Its real job (removing a
    dead controller's placement group) only matters on a long-lived cluster, which runs the
    dashboard.
    """
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner"
                      ).setLevel(logging.ERROR)
