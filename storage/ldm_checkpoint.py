"""Where the LDM's training runs live in the store, in a diffusers-like layout.

    <store>/models/ldm/<run>/
        base/                      offline stand-ins for SD 1.5 (unet/), the VAE (vae/) and
                                   CLIP (image_encoder/), in the published folder layouts,
                                   with stand_in.json saying so (absent with real weights)
        stage<N>/checkpoint-<step>/<module>/config.json
                                  /<module>/diffusion_pytorch_model.safetensors
                                  /training_state.pt     optimizer, LR scheduler, step, RNG
        stage<N>/latest.json       {"step", "checkpoint", "done", "losses"}: written last,
                                   so a checkpoint folder without it never counts

Modules per stage: stage 1 ``m2penc``; stage 2 ``reference_unet``, ``denoising_unet`` (spatial
weights, SD 1.5 keys) and ``guidance_encoder_<type>``; stage 3 ``m2penc`` and
``motion_module`` (CHAMP's motion-module keys). Every file goes through
:class:`StoreLocation`'s atomic writes, local or S3.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dancegen.errors import StoreError
from dancegen.storage.location import StoreLocation

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


class LdmRun:
    """One named LDM training run (all three stages) in a store."""

    def __init__(self, store: str | StoreLocation, run_name: str) -> None:
        self.store = StoreLocation.parse(store) if isinstance(store, str) else store
        self.location = self.store.child("models", "ldm", run_name)
        self.name = run_name

    # -- progress -------------------------------------------------------------------------
    def state(self, stage: int) -> dict[str, Any] | None:
        """``latest.json`` of a stage, or None before its first checkpoint."""
        return self.location.read_json(f"stage{stage}/latest.json")

    def done(self, stage: int) -> bool:
        state = self.state(stage)
        return bool(state and state.get("done"))

    def require_done(self, stage: int) -> dict[str, Any]:
        """The finished stage's state; a clear error when it has not finished."""
        state = self.state(stage)
        if not state or not state.get("done"):
            raise StoreError(f"LDM stage {stage} of run {self.name!r} has not finished in "
                             f"{self.location.url}: run train-ldm stage {stage} first")
        return state

    # -- writing --------------------------------------------------------------------------
    def save(self, stage: int, step: int, modules: dict[str, tuple[dict, dict]],
             training_state: dict[str, Any], log: dict[str, Any], done: bool,
             keep: int = 2) -> str:
        """Write a checkpoint, then point ``latest.json`` at it; prune older checkpoints.

        ``modules``: name -> (config dict, state dict).
        """
        folder = f"stage{stage}/checkpoint-{step:07d}"
        for name, (config, state) in modules.items():
            self.location.write_bytes(f"{folder}/{name}/config.json",
                                      json.dumps(config, indent=1, sort_keys=True).encode())
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
            self.location.write_bytes(f"{folder}/{name}/{WEIGHTS_NAME}",
                                      save_safetensors(tensors))
        buffer = io.BytesIO()
        torch.save(training_state, buffer)
        self.location.write_bytes(f"{folder}/training_state.pt", buffer.getvalue())
        self.location.write_json(f"stage{stage}/latest.json",
                                 {"step": step, "checkpoint": folder, "done": done, **log})
        for old in self.checkpoints(stage)[:-keep]:
            self.location.delete_tree(old)
        return self.location.child(folder).url

    def checkpoints(self, stage: int) -> list[str]:
        """Checkpoint folders of a stage, oldest first (keys relative to the run)."""
        try:
            listed = self.location.ls(f"stage{stage}")
        except FileNotFoundError:
            return []
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in listed)
        return [f"stage{stage}/{n}" for n in names if n.startswith("checkpoint-")]

    # -- reading --------------------------------------------------------------------------
    def module_state(self, stage: int, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
        """(config, state dict) of a module in the stage's latest checkpoint."""
        state = self.state(stage)
        if state is None:
            raise StoreError(f"LDM stage {stage} of run {self.name!r} has no checkpoint")
        folder = state["checkpoint"]
        config = self.location.read_bytes(f"{folder}/{name}/config.json")
        weights = self.location.read_bytes(f"{folder}/{name}/{WEIGHTS_NAME}")
        if config is None or weights is None:
            raise StoreError(f"{self.location.url}/{folder}/{name} is incomplete")
        return json.loads(config), load_safetensors(weights)

    def training_state(self, stage: int) -> dict[str, Any] | None:
        """Optimizer, scheduler, step and RNG of the latest checkpoint (None before one)."""
        state = self.state(stage)
        if state is None:
            return None
        data = self.location.read_bytes(f"{state['checkpoint']}/training_state.pt")
        if data is None:
            raise StoreError(f"{self.location.url}/{state['checkpoint']} lacks training_state.pt")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    # -- offline stand-in base weights ----------------------------------------------------
    @property
    def base(self) -> StoreLocation:
        return self.location.child("base")

    def base_ready(self) -> bool:
        return self.base.read_json("stand_in.json") is not None
