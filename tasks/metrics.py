"""Ray custom metrics of the dataset build, shown on the Ray dashboard (Prometheus/Grafana).

Counters are created lazily, once per process (driver or worker), and only when the process
is connected to Ray: ``ray.util.metrics`` needs a running Ray, which unit tests of a stage's
computation do not have.
"""

from __future__ import annotations

import functools
from typing import Any

import ray


@functools.cache
def _instruments() -> dict[str, Any]:
    from ray.util.metrics import Counter, Gauge

    stage = ("stage",)
    return {
        "segments": Counter("dancegen_segments_produced",
                            "Segments written to the store", tag_keys=stage),
        "frames": Counter("dancegen_frames_produced",
                          "Frames written to the store (segments x frames)", tag_keys=stage),
        "bytes": Counter("dancegen_bytes_written",
                         "Uncompressed bytes written to the store", tag_keys=stage),
        "failures": Counter("dancegen_units_failed", "Shard units that failed", tag_keys=stage),
        "queue": Gauge("dancegen_queue_depth",
                       "Shard units of the running build not finished yet", tag_keys=("store",)),
    }


def record_shard(stage: str, segments: int, frames: int, nbytes: int) -> None:
    """Count one written shard."""
    if ray.is_initialized():
        tags = {"stage": stage}
        _instruments()["segments"].inc(segments, tags)
        _instruments()["frames"].inc(frames, tags)
        _instruments()["bytes"].inc(nbytes, tags)


def record_failure(stage: str) -> None:
    """Count one failed unit."""
    if ray.is_initialized():
        _instruments()["failures"].inc(1, {"stage": stage})


def set_queue_depth(store: str, units: int) -> None:
    """Units of the build on ``store`` that are pending or running."""
    if ray.is_initialized():
        _instruments()["queue"].set(units, {"store": store})
