"""Plan the segments of a dataset from an inputs root in the AIST++ layout."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.storage.aistpp import AistppInputs, SequenceInputs
from dancegen.storage.segments import Segment, segment_id


@dataclass
class Plan:
    """Segments to build, and the sequences whose inputs could not be read (with why)."""

    segments: list[Segment]
    failed: dict[str, str] = field(default_factory=dict)  # unit id -> reason
    sequences: int = 0
    smpl_scalings: list[float] = field(default_factory=list)  # of the usable sequences
    ignored: list[str] = field(default_factory=list)  # motion files that are no sequence

    @property
    def median_smpl_scaling(self) -> float | None:
        """Typical body scale of the inputs (given to pseudo-motions), None without motion."""
        return float(statistics.median(self.smpl_scalings)) if self.smpl_scalings else None


def window_starts(seconds: float, window: float, stride: float, limit: int | None) -> list[float]:
    """Start times of the whole windows that fit in ``seconds``."""
    count = max(0, math.floor((seconds - window) / stride + 1e-9) + 1)
    if limit is not None:
        count = min(count, limit)
    return [round(i * stride, 6) for i in range(count)]


def _sequence_segments(
    seq: SequenceInputs, inputs: AistppInputs, config: DancegenConfig, digests: dict[str, str],
    durations: dict[str, float],
) -> tuple[list[Segment], float]:
    if seq.music_file is None:
        raise InputError(f"no music file music/{seq.music_id}.* for sequence {seq.name}")
    motion = inputs.load_motion(seq.motion_file)
    if seq.music_file not in durations:  # decoded and checked once per track, not per sequence
        durations[seq.music_file] = inputs.audio_seconds(seq.music_file)
    music_seconds = durations[seq.music_file]
    data = config.dataset
    for what, key, seconds in (("music", seq.music_file, music_seconds),
                               ("motion", seq.motion_file, motion.seconds)):
        if seconds < data.segment_seconds:  # else: silently no segment and no failure
            raise InputError(f"{inputs.location.url}/{key}: {what} lasts {seconds:.3f} s, "
                             f"shorter than one {data.segment_seconds:g}-s segment")
    for key in (seq.motion_file, seq.music_file):
        if key not in digests:
            digests[key] = inputs.sha256(key)
    starts = window_starts(min(motion.seconds, music_seconds), data.segment_seconds,
                           data.stride_seconds, data.max_segments_per_sequence)
    source = inputs.source
    return [
        Segment(
            id=segment_id(seq.name, k), sequence=seq.name, source=source, split=seq.split,
            window=k, start_s=start, end_s=round(start + data.segment_seconds, 6),
            music_file=seq.music_file, music_sha256=digests[seq.music_file],
            motion_file=seq.motion_file, motion_sha256=digests[seq.motion_file],
            motion_fps=motion.fps,
        )
        for k, start in enumerate(starts)
    ], motion.scaling


def plan_segments_from(inputs_url: str, config: DancegenConfig) -> Plan:
    """Every window of every usable sequence; unreadable sequences are reported, not fatal."""
    inputs = AistppInputs(inputs_url)
    sequences = inputs.sequences()
    digests: dict[str, str] = {}
    durations: dict[str, float] = {}
    plan = Plan(segments=[], sequences=len(sequences), ignored=inputs.ignored_motions())
    for motion_file, reason in inputs.refused_motions().items():
        plan.failed[f"inputs/{motion_file}"] = reason
    for seq in sequences:
        try:
            segments, scaling = _sequence_segments(seq, inputs, config, digests, durations)
            plan.segments.extend(segments)
            plan.smpl_scalings.append(scaling)
        except InputError as error:
            plan.failed[f"inputs/{seq.name}"] = str(error)
    return plan


@task(name="plan-segments", cache_policy=NO_CACHE, persist_result=False)
def plan_segments(inputs_url: str, config: DancegenConfig) -> Plan:
    """Prefect task wrapper of :func:`plan_segments_from` (runs in the flow's process); says
    which motion files it ignored, so that a stray copy is seen, not silently dropped."""
    plan = plan_segments_from(inputs_url, config)
    if plan.ignored:
        get_run_logger().warning(
            "%s: ignored %d hidden or sub-folder motion file(s) (AIST++ keeps motions flat): %s",
            inputs_url, len(plan.ignored), ", ".join(plan.ignored))
    return plan
