"""Where an evaluation of a trained LDM lives: beside the checkpoint it evaluated.

    <store>/models/ldm/<run>/eval/<stage-3 checkpoint>-<settings hash>/
        clips/<segment id>.json      one test clip's metrics; written last, so it marks the
                                     clip done (a re-run skips it)
        failures/<segment id>.json   why a clip failed (cleared when it succeeds)
        features/<segment id>.npz    I3D features of its FVD clips (real, generated)
        videos/<segment id>.mp4      the generated clip with its music
        samples/<segment id>.png     ground-truth frames above generated ones
        metrics.json                 the aggregate (Table 1's columns) and what was missing
        report.md, report.html, plots/*.png

The settings hash covers the dataset snapshot evaluated (its test clips), the dataset,
generation and evaluation config sections (less the number of clips and of sample frames), so
changing the sampler, the metric weights or the data evaluates afresh instead of mixing, while
evaluating more clips adds to the same evaluation.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import PurePosixPath
from typing import Any

import imageio.v3 as iio
import numpy as np

from dancegen.config import DancegenConfig
from dancegen.storage.dataset import one_line
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.storage.location import StoreLocation


def evaluation_settings_hash(config: DancegenConfig, snapshot_id: str) -> str:
    """What the clips' videos and metrics depend on: the snapshot, the dataset, the sampler and
    the metric settings; not how many clips are evaluated nor how many frames the report
    shows."""
    payload = {"snapshot": snapshot_id, "dataset": config.dataset.model_dump(mode="json"),
               "generation": config.generation.model_dump(mode="json"),
               "evaluation": config.evaluation.model_dump(
                   mode="json", exclude={"max_clips", "sample_frames"})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class EvaluationRun:
    """One evaluation of one stage-3 checkpoint under one set of settings."""

    def __init__(self, store: str, config: DancegenConfig, checkpoint: str,
                 snapshot_id: str) -> None:
        run = LdmRun(store, config.ldm.run_name)
        self.snapshot_id = snapshot_id
        settings = evaluation_settings_hash(config, snapshot_id)
        self.name = f"{PurePosixPath(checkpoint).name}-{settings}"
        self.location: StoreLocation = run.location.child("eval", self.name)

    @property
    def url(self) -> str:
        return self.location.url

    def url_of(self, key: str) -> str:
        return self.location.child(key).url

    # -- per clip ---------------------------------------------------------------------------
    def clip(self, clip_id: str) -> dict[str, Any] | None:
        return self.location.read_json(f"clips/{clip_id}.json")

    def clips(self) -> dict[str, dict[str, Any]]:
        """Finished clips by id."""
        return {name.removesuffix(".json"): record
                for name, record in self.location.list_json("clips").items()}

    def write_clip(self, clip_id: str, record: dict[str, Any]) -> None:
        """Mark a clip done (its video, sample and features are written before)."""
        self.location.write_json(f"clips/{clip_id}.json", record)
        self.location.delete(f"failures/{clip_id}.json")

    def record_failure(self, clip_id: str, reason: str) -> None:
        """Record why a clip failed (one line, as the dataset's failure records)."""
        self.location.write_json(f"failures/{clip_id}.json",
                                 {"clip": clip_id, "reason": one_line(reason)})

    def failures(self) -> dict[str, str]:
        return {name.removesuffix(".json"): record["reason"]
                for name, record in self.location.list_json("failures").items()}

    def write_features(self, clip_id: str, **arrays: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.location.write_bytes(f"features/{clip_id}.npz", buffer.getvalue())

    def features(self, clip_id: str) -> dict[str, np.ndarray] | None:
        data = self.location.read_bytes(f"features/{clip_id}.npz")
        if data is None:
            return None
        with np.load(io.BytesIO(data)) as arrays:
            return {name: arrays[name] for name in arrays.files}

    def write_png(self, key: str, image: np.ndarray) -> str:
        """Write an (H, W, 3) uint8 image; returns its key."""
        return self.write_png_bytes(key, iio.imwrite("<bytes>", image, extension=".png"))

    def write_png_bytes(self, key: str, data: bytes) -> str:
        """Write an encoded PNG; returns its key (the report links keys)."""
        self.location.write_bytes(key, data)
        return key

    # -- aggregate --------------------------------------------------------------------------
    def write_summary(self, metrics: dict[str, Any]) -> None:
        self.location.write_json("metrics.json", metrics)

    def summary(self) -> dict[str, Any] | None:
        return self.location.read_json("metrics.json")

    def write_text(self, key: str, text: str) -> None:
        self.location.write_bytes(key, text.encode())
