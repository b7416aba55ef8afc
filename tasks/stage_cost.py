"""What a full (or an incremental) regeneration of a config's dataset costs on N GPUs.

Per-segment costs are measured on this machine: each dataset stage is set up once (as a
worker does) and then computes one 5-s segment of the synthetic fixtures at the config's
resolution; the Jukebox extraction comes from its own probe (tasks/jukebox_cost.py). Wall
times follow from the config's resources: a stage with ``num_gpus: g`` runs ``N / g`` workers
at once, a CPU stage one per CPU. Stages run side by side (flows/stage_pool.py), so the whole
regeneration takes about as long as the busier of the two pools, GPUs or CPUs.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import torch

from dancegen.config import DancegenConfig
from dancegen.fixtures import write_fixtures
from dancegen.fixtures.layout import default_sequences
from dancegen.storage.aistpp import InputRoots
from dancegen.tasks.plan import plan_segments_from
from dancegen.tasks.stages import STAGES

# stages whose per-segment cost is not measured here: they need the build's feature cache
# (jukebox: cutting windows, negligible next to the extraction, which is measured apart)
NOT_MEASURED = {"jukebox"}


@dataclass(frozen=True)
class StageCost:
    """One stage's measured cost: seconds of one worker per segment, and of its set-up."""

    stage: str
    seconds_per_segment: float
    setup_seconds: float


def device_name() -> str:
    """Where the costs were measured."""
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu (OSMesa for rendering)"


def measure_stage_costs(config: DancegenConfig) -> list[StageCost]:
    """Set each configured stage up once, then time it on one segment of the fixtures."""
    costs = []
    with tempfile.TemporaryDirectory(prefix="dancegen-cost-") as folder:
        inputs = write_fixtures(folder, default_sequences()[:1])
        one = config.model_copy(update={"dataset": config.dataset.model_copy(
            update={"max_segments_per_sequence": 1})})
        segments = plan_segments_from(str(inputs), one).segments[:1]
        roots = InputRoots.parse(str(inputs))
        for name in config.stages:
            if name in NOT_MEASURED:
                continue
            stage = STAGES[name]
            started = time.perf_counter()
            compute = stage.set_up(roots, config)
            setup = time.perf_counter() - started
            compute(segments, roots, config)  # warm-up: first-call caches, JIT
            started = time.perf_counter()
            compute(segments, roots, config)
            costs.append(StageCost(name, time.perf_counter() - started, setup))
            close = getattr(compute, "close", None)
            if close is not None:
                close()
    return costs


def regeneration_report(config: DancegenConfig, costs: list[StageCost], gpus: int, cpus: int,
                        jukebox_seconds_per_music_second: float | None,
                        new_music_share: float = 0.1) -> list[str]:
    """Lines: wall time per stage and in total on ``gpus`` GPUs and ``cpus`` CPUs, for a full
    regeneration and for one after ``new_music_share`` more music (its pseudo-motions)."""
    planning, data = config.planning, config.dataset
    segments = (planning.aistpp_seconds + planning.pseudo_seconds) / data.segment_seconds
    new_segments = planning.pseudo_seconds * new_music_share / data.segment_seconds
    rows = [(c.stage, c.seconds_per_segment, config.ray.resources(c.stage)) for c in costs]
    if jukebox_seconds_per_music_second is not None:
        rows.append(("jukebox_extract", jukebox_seconds_per_music_second * data.segment_seconds,
                     config.ray.resources("jukebox_extract")))
    lines = [f"  regeneration on {gpus} GPUs and {cpus} CPUs (per-segment costs measured on "
             f"{device_name()}; each stage on its own workers, all at once):",
             f"    {'stage':<16} {'s/segment':>9} {'workers':>8} {'full':>10} "
             f"{'+' + format(new_music_share, '.0%') + ' music':>11}"]
    pools = {"GPU": [0.0, 0.0], "CPU": [0.0, 0.0]}  # resource-seconds: full, incremental
    for stage, cost, resources in rows:
        gpu = resources.num_gpus > 0
        workers = int(gpus / resources.num_gpus + 1e-6) if gpu else \
            max(int(cpus / max(resources.num_cpus, 1e-6) + 1e-6), 1)
        full, incremental = segments * cost / max(workers, 1), new_segments * cost / max(workers, 1)
        if stage == "jukebox_extract":  # only new music is extracted; the cache keeps the rest
            incremental = new_segments * cost / max(workers, 1)
        pool = pools["GPU" if gpu else "CPU"]
        share = resources.num_gpus if gpu else resources.num_cpus
        pool[0] += segments * cost * share
        pool[1] += new_segments * cost * share
        lines.append(f"    {stage:<16} {cost:>9.3f} {workers:>8} {_hours(full):>10} "
                     f"{_hours(incremental):>11}")
    total = [max(pools["GPU"][i] / max(gpus, 1), pools["CPU"][i] / max(cpus, 1))
             for i in (0, 1)]
    lines.append(f"    {'total':<16} {'':>9} {'':>8} {_hours(total[0]):>10} "
                 f"{_hours(total[1]):>11}")
    lines.append("    the busier pool bounds the total; EDGE synthesis of new music (pseudo-"
                 "motions) is not in it")
    if not torch.cuda.is_available():
        lines.append("    measured without a GPU: the GPU stages' figures are this CPU's (render "
                     "with OSMesa), an upper bound; for Jukebox set planning.jukebox_seconds_"
                     "per_music_second from benchmarks/jukebox.py on the target GPU")
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"
