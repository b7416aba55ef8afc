"""EDGE checkpoints: read the published ``checkpoint.pt`` and write dancegen's own, local or S3.

EDGE saves ``torch.save({"ema_state_dict", "model_state_dict", "optimizer_state_dict",
"normalizer"})`` where ``normalizer`` is a pickled ``dataset.preprocess.Normalizer`` holding a
``dataset.scaler.MinMaxScaler`` (``scale_``, ``min_`` tensors). Nothing of EDGE needs to be
importable here: the file is read with ``weights_only=True`` and two stand-in classes that
carry EDGE's module paths, so a checkpoint can never run code on load.

dancegen's checkpoints use the same keys and state-dict layout, store the normaliser as plain
tensors (``{"scale_", "min_", "feature_range", "clip"}``) and add a ``dancegen`` entry: model
sizes, training step, RNG states, the training set's body scale. EDGE's model sizes are not
all in its state dict (the head count is not), so they are inferred from tensor shapes and
EDGE's published head count unless the file says otherwise.
"""

from __future__ import annotations

import dataclasses
import io
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from dancegen.errors import InputError
from dancegen.models.edge import EdgeModelConfig
from dancegen.models.edge_normalizer import MinMaxNormalizer
from dancegen.storage.location import StoreLocation, split_url

REQUIRED_KEYS = ("ema_state_dict", "model_state_dict", "normalizer")
EDGE_NUM_HEADS = 8


class _EdgeNormalizer:
    """Stand-in for EDGE's ``dataset.preprocess.Normalizer`` (attributes only, no code)."""


class _EdgeMinMaxScaler:
    """Stand-in for EDGE's ``dataset.scaler.MinMaxScaler`` (attributes only, no code)."""


_EdgeNormalizer.__module__, _EdgeNormalizer.__qualname__ = "dataset.preprocess", "Normalizer"
_EdgeMinMaxScaler.__module__, _EdgeMinMaxScaler.__qualname__ = "dataset.scaler", "MinMaxScaler"
# EDGE's dataset/preprocess.py imports the scaler, so pickles may name either module
_PreprocessScaler = type("MinMaxScaler", (_EdgeMinMaxScaler,), {"__module__": "dataset.preprocess"})
SAFE_GLOBALS = [_EdgeNormalizer, _EdgeMinMaxScaler, _PreprocessScaler]


@dataclass
class EdgeCheckpoint:
    """A loaded checkpoint: everything needed to sample, or to resume training."""

    model_config: EdgeModelConfig
    ema_state: dict[str, torch.Tensor]
    model_state: dict[str, torch.Tensor]
    normalizer: MinMaxNormalizer
    optimizer_state: dict[str, Any] | None = None
    dancegen: dict[str, Any] = field(default_factory=dict)  # absent in EDGE's own files

    @property
    def step(self) -> int:
        """Training steps behind this checkpoint (0 when unknown, e.g. EDGE's release)."""
        return int(self.dancegen.get("step", 0))


def read_checkpoint_bytes(url: str) -> bytes:
    """The file's bytes; a missing file is an InputError naming it."""
    location, name = split_url(url)
    data = location.read_bytes(name)
    if data is None:
        raise InputError(f"EDGE checkpoint not found: {url}")
    return data


def _normalizer(entry: Any, where: str) -> MinMaxNormalizer:
    if isinstance(entry, _EdgeNormalizer):      # EDGE's pickled Normalizer
        entry = vars(getattr(entry, "scaler", None) or _EdgeMinMaxScaler())
    if not isinstance(entry, dict) or not {"scale_", "min_"} <= set(entry):
        raise InputError(f"{where}: 'normalizer' has no scale_/min_ (not an EDGE normalizer)")
    if tuple(entry.get("feature_range", (-1, 1))) != (-1, 1):
        raise InputError(f"{where}: normalizer range {entry['feature_range']} is not (-1, 1)")
    return MinMaxNormalizer(torch.as_tensor(entry["scale_"]), torch.as_tensor(entry["min_"]))


def infer_model_config(state: dict[str, torch.Tensor], num_heads: int = EDGE_NUM_HEADS,
                       dropout: float = 0.1) -> EdgeModelConfig:
    """Model sizes from a DanceDecoder state dict's tensor shapes."""
    try:
        latent, nfeats = state["input_projection.weight"].shape
        cond_dim = state["cond_projection.weight"].shape[1]
        ff_size = state["cond_encoder.0.linear1.weight"].shape[0]
        seq_len = state["null_cond_embed"].shape[1]
    except KeyError as missing:
        raise InputError(f"not a DanceDecoder state dict: no {missing}") from None
    pattern = re.compile(r"seqTransDecoder\.stack\.(\d+)\.")
    layers = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return EdgeModelConfig(cond_feature_dim=int(cond_dim), seq_len=int(seq_len),
                           nfeats=int(nfeats), latent_dim=int(latent), ff_size=int(ff_size),
                           num_layers=len(layers), num_heads=num_heads, dropout=dropout)


def load_checkpoint(url: str, map_location: str | torch.device = "cpu") -> EdgeCheckpoint:
    """Read an EDGE ``checkpoint.pt`` (published or dancegen's) from a path or S3 URL."""
    blob = read_checkpoint_bytes(url)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            content = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except Exception as error:
        raise InputError(f"{url}: not a readable EDGE checkpoint ({error})") from None
    if not isinstance(content, dict) or not set(REQUIRED_KEYS) <= set(content):
        got = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise InputError(f"{url}: an EDGE checkpoint needs keys {list(REQUIRED_KEYS)}, got {got}")
    extra = dict(content.get("dancegen") or {})
    if "model_config" in extra:
        config = EdgeModelConfig(**extra["model_config"])
    else:
        config = infer_model_config(content["ema_state_dict"])
    return EdgeCheckpoint(
        model_config=config, ema_state=content["ema_state_dict"],
        model_state=content["model_state_dict"],
        normalizer=_normalizer(content["normalizer"], url),
        optimizer_state=content.get("optimizer_state_dict"), dancegen=extra,
    )


def checkpoint_bytes(checkpoint: EdgeCheckpoint) -> bytes:
    """Serialise in EDGE's key layout (plus the ``dancegen`` entry)."""
    normalizer = checkpoint.normalizer.state()
    content = {
        "ema_state_dict": {k: v.detach().cpu() for k, v in checkpoint.ema_state.items()},
        "model_state_dict": {k: v.detach().cpu() for k, v in checkpoint.model_state.items()},
        "optimizer_state_dict": checkpoint.optimizer_state or {},
        "normalizer": {"scale_": normalizer["scale"], "min_": normalizer["offset"],
                       "feature_range": (-1, 1), "clip": True},
        "dancegen": {**checkpoint.dancegen, "model_config": checkpoint.model_config.to_dict()},
    }
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


def save_checkpoint(checkpoint: EdgeCheckpoint, url: str) -> None:
    """Write whole or not at all (temp file + rename locally, one PUT on S3)."""
    location, name = split_url(url)
    location.write_bytes(name, checkpoint_bytes(checkpoint))


class EdgeRun:
    """A training run's files in the store, ``<store>/models/edge/<run>/``::

        checkpoint.pt              the finished run's weights in EDGE's layout (what synthesis
                                   loads); written once training reaches its step count
        checkpoints/step-NNNNNNNN.pt   resumable checkpoints (optimizer, RNG, step); last few kept
        train.json                 progress: step, latest checkpoint, loss history, timings
        windows/<key>.pt           the prepared training windows, keyed by inputs and settings

    ``train.json`` is written after the checkpoint it names, so it never points at a file
    that is not complete.
    """

    KEEP = 3  # resumable checkpoints kept (each holds weights, EMA and optimizer moments)

    def __init__(self, store: str | StoreLocation, run_name: str) -> None:
        self.store = store if isinstance(store, StoreLocation) else StoreLocation.parse(store)
        self.location = self.store.child("models", "edge", run_name)

    @property
    def checkpoint_url(self) -> str:
        """The published checkpoint (EMA weights) of the run."""
        return self.location.child("checkpoint.pt").url

    def state(self) -> dict[str, Any] | None:
        """``train.json``, or None before the first checkpoint."""
        return self.location.read_json("train.json")

    def latest(self) -> EdgeCheckpoint | None:
        """The newest resumable checkpoint, or None."""
        state = self.state()
        if not state or not state.get("checkpoint"):
            return None
        return load_checkpoint(self.location.child(state["checkpoint"]).url)

    def save(self, checkpoint: EdgeCheckpoint, state: dict[str, Any], publish: bool) -> None:
        """Write a resumable checkpoint, then ``train.json``; prune old ones.

        ``publish`` (at the end of training) also writes ``checkpoint.pt`` for synthesis:
        weights and normaliser only, so that a run still in progress is never sampled from.
        """
        key = f"checkpoints/step-{checkpoint.step:08d}.pt"
        self.location.write_bytes(key, checkpoint_bytes(checkpoint))
        if publish:
            slim = dataclasses.replace(
                checkpoint, optimizer_state={},
                dancegen={k: v for k, v in checkpoint.dancegen.items() if k != "rng"})
            self.location.write_bytes("checkpoint.pt", checkpoint_bytes(slim))
        self.location.write_json("train.json", {**state, "checkpoint": key})
        for old in self.checkpoints()[: -self.KEEP]:
            self.location.delete(old)

    def checkpoints(self) -> list[str]:
        """Keys of the resumable checkpoints, oldest first."""
        try:
            names = self.location.ls("checkpoints")
        except FileNotFoundError:
            return []
        return sorted(f"checkpoints/{posixpath.basename(n)}" for n in names if n.endswith(".pt"))

    def read_windows(self, key: str) -> bytes | None:
        """Cached training windows, or None."""
        return self.location.read_bytes(f"windows/{key}.pt")

    def write_windows(self, key: str, data: bytes) -> None:
        """Cache training windows."""
        self.location.write_bytes(f"windows/{key}.pt", data)
