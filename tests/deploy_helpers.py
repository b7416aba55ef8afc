"""The deploy folder's scripts, loaded as modules (deploy/ is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def automations_script() -> ModuleType:
    """``deploy/automations.py`` as a module: its loaders and ``main`` are what tests call."""
    spec = importlib.util.spec_from_file_location("deploy_automations",
                                                  REPO / "deploy" / "automations.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
