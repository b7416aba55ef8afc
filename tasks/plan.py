"""Plan the segments of a dataset from an inputs root in the AIST++ layout."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.storage.aistpp import AistppInputs, SequenceInputs
from dancegen.storage.input_facts import InputFacts
from dancegen.storage.location import StoreLocation
from dancegen.storage.segments import Segment, segment_id


@dataclass
class Plan:
    """Segments to build, and the sequences whose inputs could not be read (with why)."""

    segments: list[Segment]
    failed: dict[str, str] = field(default_factory=dict)  # unit id -> reason
    sequences: int = 0
    smpl_scalings: list[float] = field(default_factory=list)  # of the usable sequences
    ignored: list[str] = field(default_factory=list)  # motion files that are no sequence
    files_read: int = 0   # input files read and hashed by this planning
    files_known: int = 0  # files whose kept facts were still current (not read)

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


def _facts(facts: InputFacts, inputs: AistppInputs, key: str, read: Callable[[str], dict]
           ) -> dict:
    """A file's planning facts: kept ones while its version is unchanged, else read anew."""
    version = inputs.file_version(key)
    known = facts.get(key, version)
    if known is None:
        known = read(key)  # raises InputError for a bad file, which is then not kept
        facts.put(key, version, **known)
    return known


def _sequence_segments(seq: SequenceInputs, inputs: AistppInputs, config: DancegenConfig,
                       facts: InputFacts) -> tuple[list[Segment], float]:
    if seq.music_file is None:
        raise InputError(f"no music file music/{seq.music_id}.* for sequence {seq.name}")
    motion = _facts(facts, inputs, seq.motion_file, inputs.motion_facts)
    music = _facts(facts, inputs, seq.music_file, inputs.music_facts)  # once per track
    data = config.dataset
    for what, key, seconds in (("music", seq.music_file, music["seconds"]),
                               ("motion", seq.motion_file, motion["seconds"])):
        if seconds < data.segment_seconds:  # else: silently no segment and no failure
            raise InputError(f"{inputs.location.url}/{key}: {what} lasts {seconds:.3f} s, "
                             f"shorter than one {data.segment_seconds:g}-s segment")
    starts = window_starts(min(motion["seconds"], music["seconds"]), data.segment_seconds,
                           data.stride_seconds, data.max_segments_per_sequence)
    source = inputs.source
    return [
        Segment(
            id=segment_id(seq.name, k), sequence=seq.name, source=source, split=seq.split,
            window=k, start_s=start, end_s=round(start + data.segment_seconds, 6),
            music_file=seq.music_file, music_sha256=music["sha256"],
            motion_file=seq.motion_file, motion_sha256=motion["sha256"],
            motion_fps=motion["fps"],
        )
        for k, start in enumerate(starts)
    ], motion["scaling"]


def plan_segments_from(inputs_url: str, config: DancegenConfig,
                       facts: InputFacts | None = None) -> Plan:
    """Every window of every usable sequence; unreadable sequences are reported, not fatal.

    With ``facts`` (kept in the store: storage/input_facts.py), files whose version is
    unchanged since they were last planned are not read again; the facts are saved back.
    """
    inputs = AistppInputs(inputs_url)
    facts = facts if facts is not None else InputFacts(None, inputs_url)
    sequences = inputs.sequences()
    plan = Plan(segments=[], sequences=len(sequences), ignored=inputs.ignored_motions())
    for motion_file, reason in inputs.refused_motions().items():
        plan.failed[f"inputs/{motion_file}"] = reason
    for seq in sequences:
        try:
            segments, scaling = _sequence_segments(seq, inputs, config, facts)
            plan.segments.extend(segments)
            plan.smpl_scalings.append(scaling)
        except InputError as error:
            plan.failed[f"inputs/{seq.name}"] = str(error)
    plan.files_read, plan.files_known = facts.misses, facts.hits
    facts.save(set(inputs.file_keys()))
    return plan


@task(name="plan-segments", cache_policy=NO_CACHE, persist_result=False)
def plan_segments(inputs_url: str, config: DancegenConfig,
                  facts_store: StoreLocation | None = None) -> Plan:
    """Prefect task wrapper of :func:`plan_segments_from` (runs in the flow's process), with
    the facts kept in ``facts_store``; says which motion files it ignored, so that a stray
    copy is seen, not silently dropped, and how many files it had to read."""
    logger = get_run_logger()
    plan = plan_segments_from(inputs_url, config, InputFacts.load(facts_store, inputs_url))
    if plan.ignored:
        logger.warning(
            "%s: ignored %d hidden or sub-folder motion file(s) (AIST++ keeps motions flat): %s",
            inputs_url, len(plan.ignored), ", ".join(plan.ignored))
    logger.info("%s: %d segments of %d sequences; %d input files read, %d unchanged since "
                "they were last planned", inputs_url, len(plan.segments), plan.sequences,
                plan.files_read, plan.files_known)
    return plan
