"""``dancegen dataset plan``: what a config's dataset will take, before building it.

Segments and frames from the planned seconds of motion, raw bytes per stage from the data
contract, and the Jukebox extraction: analytic FLOPs per second of music, and device hours
from a measured cost (the config's, from the target GPU, or one measured here).
"""

from __future__ import annotations

import numpy as np

from dancegen.config import DancegenConfig
from dancegen.models.jukebox_prior import JukeboxPriorConfig
from dancegen.models.jukebox_vqvae import JukeboxVQVAEConfig
from dancegen.storage.contract import ARRAYS, dims_for
from dancegen.tasks.jukebox_cost import CostMeasurement, flops_per_music_second


def stage_bytes(config: DancegenConfig, segments: int) -> dict[str, int]:
    """Raw (uncompressed) bytes of each stage's arrays for ``segments`` segments."""
    dims, out = dims_for(config), {}
    for spec in ARRAYS.values():
        size = int(np.prod(spec.resolve(dims))) * np.dtype(spec.dtype).itemsize * segments
        out[spec.stage] = out.get(spec.stage, 0) + size
    return out


def plan_report(config: DancegenConfig, measured: CostMeasurement | None) -> str:
    """The planner's text."""
    planning, data = config.planning, config.dataset
    seconds = planning.aistpp_seconds + planning.pseudo_seconds
    segments = int(seconds // data.segment_seconds)
    frames = segments * data.segment_frames
    lines = [
        f"plan for config {config.name}: {seconds:,.0f} s of motion and music (AIST++ "
        f"{planning.aistpp_seconds:,.0f} s + pseudo-motions {planning.pseudo_seconds:,.0f} s)",
        f"  {segments:,} segments of {data.segment_seconds:g} s, {frames / 1e6:.2f} M frames at "
        f"{data.fps} fps, {config.render.width}x{config.render.height}",
        "  raw bytes per stage (before compression):",
    ]
    for stage, size in stage_bytes(config, segments).items():
        mark = "" if stage in config.stages else "  (stage not configured)"
        lines.append(f"    {stage:<10} {size / 1e9:12,.1f} GB{mark}")
    flops = flops_per_music_second(JukeboxPriorConfig(), JukeboxVQVAEConfig(), config.jukebox)
    lines += [
        f"  Jukebox features (5B top prior, layer {config.jukebox.layer}, "
        f"{config.jukebox.chunk_seconds:g}-s chunks): {flops / 1e12:.2f} TFLOP per second of music",
    ]
    if planning.jukebox_seconds_per_music_second is not None:
        cost = planning.jukebox_seconds_per_music_second
        lines.append(f"    measured on the target GPU (config): {cost:.3f} s per s of music -> "
                     f"{seconds * cost / 3600:,.1f} GPU hours for {seconds:,.0f} s of music")
    if measured is not None:
        hours = seconds * measured.estimate_5b / 3600
        lines.append(
            f"    measured here ({measured.device}): a {measured.probe_width}-wide probe runs at "
            f"{measured.flops_per_second / 1e9:,.0f} GFLOP/s -> 5B at "
            f"{measured.estimate_5b:.2f} s per s of music, {hours:,.1f} device hours")
    lines.append(f"    upper bound: every segment's music; the per-track cache extracts each "
                 f"track once. Features: {frames * 4800 * 2 / 1e9:,.1f} GB (float16)")
    return "\n".join(lines)
