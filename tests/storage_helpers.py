"""Small builders shared by the storage tests (a segment table, a layout, shard data)."""

from __future__ import annotations

import numpy as np

from dancegen.config import DancegenConfig
from dancegen.storage import Layout, arrays_of, dims_for
from dancegen.storage.segments import Segment, segment_id

STAGES = ("motion", "music")


def make_segments(count: int, sequence: str = "gBR_sBM_cAll_d01_mBR0_ch01") -> list[Segment]:
    return [
        Segment(segment_id(sequence, k), sequence, "synthetic", "train", k, 5.0 * k,
                5.0 * k + 5.0, "music/mBR0.wav", "a" * 64, f"motions/{sequence}.pkl",
                "b" * 64, 60.0)
        for k in range(count)
    ]


def layout(config: DancegenConfig) -> Layout:
    return Layout(dims_for(config), config.storage.shard_segments,
                  config.storage.compression_level, {"fps": 30, "config_name": config.name},
                  config.storage.chunk_frames)


def shard_data(config: DancegenConfig, stage: str, rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dims = dims_for(config)
    return {
        spec.name: (rng.random((rows, *spec.resolve(dims))) * 200).astype(spec.dtype)
        for spec in arrays_of(stage)
    }
