"""Run every benchmark that has an in-run baseline and write docs/benchmarks.md: the one command.

    .venv/bin/python benchmarks/run_all.py [--quick] [--out docs/benchmarks.md]

Each benchmark runs as its own subprocess (a fresh interpreter, so no benchmark warms another's
caches or inherits its threads) with ``--json`` into a temporary folder; its output goes to a
log there, shown only when it fails. From the JSON files this script builds one table,
benchmark | figure | baseline | value | ratio, where every ratio is value / baseline and both
were measured in the same run, prints it, and writes it to ``--out`` with the machine, the
date and the exact command. The default sizes take about 5 to 8 minutes on 2 cores;
``--quick`` is a smoke run with small sizes, about 3 minutes, most of it the fixed start-up of
Prefect servers, Ray and cold workers (its figures are noisier and not comparable to the
default's).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    COLUMNS,
    REPO,
    Row,
    local_stack_environment,
    machine_info,
    markdown_table,
    text_table,
)

Figures = dict[str, Any]


def render_rows(fig: Any) -> list[Row]:
    """One row per resolution: dancegen's render stage against the naive pyrender loop."""
    return [Row("render", f"render stage, all outputs, {r['resolution']} px", "naive loop",
                r["dancegen_fps"], r["naive_fps"], "frames/s") for r in fig]


def storage_rows(fig: Figures) -> list[Row]:
    """Shard writes and reads against raw .npy files, and the bytes each leaves on disk."""
    raw, ours = fig["sides"]
    p = fig["params"]
    what = f"{p['segments']} segments, {p['shard_segments']}/shard, {p['resolution']} px"
    return [
        Row("storage", f"shard writes ({what})", "raw np.save", ours["write_mbps"],
            raw["write_mbps"], "MB/s"),
        Row("storage", "shard reads", "raw np.load", ours["read_mbps"], raw["read_mbps"],
            "MB/s"),
        Row("storage", "bytes on disk", "raw .npy", ours["disk_bytes"] / 1e6,
            raw["disk_bytes"] / 1e6, "MB"),
    ]


def orchestration_rows(fig: Figures) -> list[Row]:
    """The warm flow against the plain loop, per run and per unit; the stack's start-up."""
    units, stages = fig["units"], "+".join(fig["stages"])
    return [
        Row("orchestration", f"build-dataset flow, {units} {stages} units, "
            f"{fig['params']['ray_cpus']} Ray CPU, warm",
            "plain loop", fig["flow_s"], fig["loop_s"], "s"),
        Row("orchestration", "overhead per unit (flow - loop) / units", "loop's time per unit",
            fig["overhead_per_unit_ms"], fig["loop_per_unit_ms"], "ms"),
        Row("orchestration", "start-up: Prefect server + ray.init", "plain loop (whole run)",
            fig["prefect_server_s"] + fig["ray_init_s"], fig["loop_s"], "s"),
    ]


def scaling_rows(fig: Figures) -> list[Row]:
    """Each worker count's render throughput against the first (one worker)."""
    base, *others = fig["runs"]
    size = fig["params"]["resolution"]
    return [Row("scaling", f"render stage via the flow, {run['workers']} workers, {size} px",
                f"{base['workers']} worker", run["fps"], base["fps"], "frames/s")
            for run in others]


def actor_rows(fig: Figures) -> list[Row]:
    """Rows of benchmarks/actors.py."""
    actors, per_task = fig["sides"]["actors"], fig["sides"]["per-task"]
    what = f"{actors['shards']} shards, {fig['params']['resolution']} px, fake GPUs"
    return [
        Row("actors", f"render stage via the flow on long-lived actors ({what})",
            "one Ray task per shard", actors["fps"], per_task["fps"], "frames/s"),
        Row("actors", "model set-ups per shard (body model + GL context)",
            "one Ray task per shard", actors["setups_per_shard"], per_task["setups_per_shard"],
            "set-ups"),
    ]


SCALE_FIGURES = {"plan_s": ("planning", "s"), "prepare_s": ("preparing the store", "s"),
                 "overhead_ms_per_unit": ("overhead per unit", "ms"),
                 "build_s": ("whole build", "s"), "noop_s": ("second build, nothing to do", "s"),
                 "verify_s": ("verify, every shard read back", "s"),
                 "verify_incremental_s": ("verify, incremental", "s"),
                 "peak_mb": ("peak memory of the flow process", "MB")}


def scale_rows(fig: Figures) -> list[Row]:
    """Rows of benchmarks/scale.py: each figure at the largest size against the smallest."""
    small, large = fig["runs"][0], fig["runs"][-1]
    nodes = fig["nodes"]
    return [Row("scale", f"{what}, {large['segments']:,} segments ({nodes} Ray nodes)",
                f"{small['segments']:,} segments", large[key], small[key], unit,
                value_note=f"exponent {large['exponent'][key]:.2f}")
            for key, (what, unit) in SCALE_FIGURES.items()]


def ldm_rows(fig: Figures) -> list[Row]:
    """Stages 1 and 3 against the image stage, per frame; steps/s beside each."""
    stages = {s["stage"]: s for s in fig["stages"]}
    base = stages[2]
    names = {1: "stage 1 (M2PEnc)", 3: "stage 3 (temporal + M2PEnc)"}
    return [Row("LDM training", f"{names[n]} step, {s['frames']} frames, {fig['resolution']} px",
                "stage 2 (image, 1 frame)", s["frames_per_s"], base["frames_per_s"], "frames/s",
                value_note=f"{s['steps_per_s']:.3g} steps/s",
                baseline_note=f"{base['steps_per_s']:.3g} steps/s")
            for n, s in sorted(stages.items()) if n != 2]


def edge_rows(fig: Figures) -> list[Row]:
    """EDGE's full training step against its bare forward + backward pass."""
    train = fig["training"]
    return [Row("EDGE training", f"step with AdamW + EMA, batch {train['batch']}",
                "forward + backward only", train["steps_per_s"], train["bare_steps_per_s"],
                "steps/s")]


@dataclass(frozen=True)
class Benchmark:
    """One script: its arguments for the default and the quick run, its rows, how to read it."""

    name: str
    args: list[str]
    quick_args: list[str]
    rows: Callable[[Any], list[Row]]
    reading: str


def frame_sampling_rows(fig: Any) -> list[Row]:
    """Per resolution: random single-frame samples from frame chunks against whole segments."""
    rows = []
    for r in fig:
        new, old = r["frame chunks"], r["whole segments, old reader"]
        same_reader = r["whole segments, new reader"]
        px = f"{r['resolution']} px"
        rows += [
            Row("frame_sampling", f"stage-2 samples, {px}, {new['chunk_frames']}-frame chunks",
                "whole segments, old reader", new["samples_per_s"], old["samples_per_s"],
                "samples/s"),
            Row("frame_sampling", f"  same, whole segments with the new reader ({px})",
                "whole segments, old reader", same_reader["samples_per_s"],
                old["samples_per_s"], "samples/s"),
            Row("frame_sampling", f"  bytes decoded per sample ({px})", "whole segments",
                new["mb_per_sample"], old["mb_per_sample"], "MB"),
        ]
    return rows


BENCHMARKS = [
    Benchmark("render", ["--resolutions", "512", "640", "--naive", "15"],
              ["--resolutions", "128", "--naive", "5"], render_rows,
              "Frames/s of every render output (RGB, depth, normal, semantic, keypoints, "
              "heatmaps, skeleton) for one 5-s segment in one process: dancegen's render stage "
              "(GL context and buffers kept per worker, SMPL batched over the segment, one draw "
              "call per frame for all image targets) against a naive loop (per frame a "
              "single-frame SMPL pass and a new pyrender renderer and scene per output). Higher "
              "is better; the ratio is the speed-up."),
    Benchmark("storage", [], ["--segments", "8", "--repeat", "1"], storage_rows,
              "The motion, music and render arrays of synthetic segments written shard by "
              "shard through `DatasetStore.write_shard` (Blosc/zstd level 1, CRC32C per chunk, "
              "a checksummed completion record) and as one raw `np.save` file per array per "
              "shard, on the same disk; then read back. Neither fsyncs and reads come from the "
              "page cache, so the ratios are the CPU price of compression and checksums; the "
              "bytes-on-disk row is what that price buys (lower is better)."),
    Benchmark("frame_sampling", ["--resolutions", "128", "640"],
              ["--resolutions", "128", "--samples", "20", "--baseline-samples", "3"],
              frame_sampling_rows,
              "The image stage's training sample (one random frame of a random segment, a "
              "reference frame and the four guidance maps, resized as `ClipDataset` resizes "
              "them) from synthetic segments at the demo's 128 px and the paper's 640 px: "
              "today's layout (5-frame chunks) read through the snapshot reader (tensorstore, "
              "the sample's reads concurrent) against the old path, one chunk per segment read "
              "whole by `DatasetStore.read` and sliced. The middle row reads whole segments "
              "with the new reader: what the reader alone gains. Higher samples/s and fewer "
              "bytes decoded are better; reads come from the page cache."),
    Benchmark("orchestration", ["--repeat", "3"], ["--repeat", "1"], orchestration_rows,
              "The same shard units (the cheap motion and music stages, one segment per shard, "
              "so that the overhead shows) built into a fresh store by the real `build-dataset` "
              "flow on a local Prefect server and a local Ray with one CPU, and by a plain loop "
              "in one process (plan, prepare the store, `build_shard_now` per unit). Both are "
              "serial and single-threaded, so the ratio (> 1) is the orchestration's price: "
              "Ray scheduling of one task per shard, failure bookkeeping, progress "
              "artifacts and the build lease; the per-unit row spreads it over the units. "
              "Start-up (server, `ray.init`) is paid once per command and is not in the "
              "flow's figure."),
    Benchmark("scaling", ["--repeat", "2"], ["--resolution", "64"], scaling_rows,
              "The render stage of the fixtures (one segment per shard) built by the flow on a "
              "local Ray of 1 and then 2 CPUs, each after a warm-up, with every worker "
              "single-threaded (OMP, MKL, numba and Mesa llvmpipe threads = 1). The ratio is "
              "the speed-up of 2 workers over 1: at most about 2 on a 2-core machine, where the "
              "flow, the Prefect server and Ray's daemons share the cores with the workers, "
              "and lower whenever another job runs beside it (see the load average above)."),
    Benchmark("actors", ["--repeat", "2"], ["--resolution", "64"], actor_rows,
              "The render stage of the fixtures (one segment per shard) built by the flow on a "
              "local Ray with 2 CPUs that pretends to have 2 GPUs, render workers taking half "
              "a GPU: on long-lived actors (each sets up the body model and GL context once) "
              "against `ray.stages.render.actors=0`, one Ray task per shard, which for a GPU "
              "task is a fresh process each time (Ray's `max_calls=1`). Set-ups are counted "
              "from the completion records' `worker` field. Higher frames/s and fewer set-ups "
              "per shard are better."),
    Benchmark("scale", ["--segments", "1000", "10940"], ["--segments", "200", "600"], scale_rows,
              "The `build-dataset` flow on a Ray cluster of three 1-CPU nodes started with `ray "
              "start` on this machine (joined by address, as a deployment joins one), stages "
              "motion and edge_repr of synthetic inputs of each size (`dancegen fixtures "
              "--sequences`), each size in a fresh process: the build, a second build with "
              "nothing to do, then the verify flow (every shard read back in Ray tasks) and an "
              "incremental verify. Each figure at the larger size against the smaller; the "
              "exponent is log(ratio) / log(size ratio): 1.0 is linear. The larger size is the "
              "paper's (10,940 segments)."),
    Benchmark("ldm", ["--repeat", "3"], ["--repeat", "1"], ldm_rows,
              "One optimisation step (forward, backward, AdamW) of each LDM stage's objective "
              "on random inputs at batch 1, the tiny `configs/local-cpu.yaml` models. Steps "
              "hold different numbers of frames, so the ratio compares frames/s against the "
              "image stage (stage 2); steps/s of each stage are beside the figures."),
    Benchmark("edge", ["--parts", "training", "--train-steps", "20"],
              ["--parts", "training", "--train-steps", "3"], edge_rows,
              "EDGE's full training step (diffusion loss with velocity, FK and foot-skate "
              "terms, AdamW, EMA update) against the same forward and backward pass without "
              "the optimiser step and EMA, on random data at the config's batch. The ratio "
              "(< 1) is the share of a full step spent in the forward and backward pass; one "
              "minus it is what AdamW and the EMA update add."),
]


@dataclass
class Outcome:
    """What one benchmark subprocess gave: its figures (None on failure), its wall time and
    the 1-min load average at its end (another job on a shared machine shows there)."""

    benchmark: Benchmark
    figures: Any
    seconds: float
    load: float
    log: Path


def run_benchmark(bench: Benchmark, quick: bool, work: Path) -> Outcome:
    """Run one script with ``--json`` in a fresh interpreter from the repository root."""
    out, log = work / f"{bench.name}.json", work / f"{bench.name}.log"
    command = [sys.executable, str(REPO / "benchmarks" / f"{bench.name}.py"),
               *(bench.quick_args if quick else bench.args), "--json", str(out)]
    # Each run gets its own Prefect home; Ray and Prefect must not find the user's settings.
    home = work / f"{bench.name}-home"
    env = {**os.environ, **local_stack_environment(home)}
    Path(env["PREFECT_HOME"]).mkdir(parents=True)
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    with log.open("w") as sink:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=sink,
                              stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    figures = json.loads(out.read_text()) if code == 0 and out.exists() else None
    return Outcome(bench, figures, seconds, os.getloadavg()[0], log)


def command_line(argv: list[str]) -> str:
    """The command as a user types it from the repository root."""
    def short(path: str) -> str:
        try:
            return str(Path(path).relative_to(REPO))
        except ValueError:
            return path
    return shlex.join([short(sys.executable), "benchmarks/run_all.py", *argv])


def document(rows: list[Row], outcomes: list[Outcome], machine: dict[str, Any], command: str,
             started: datetime.datetime, wall_s: float, quick: bool,
             load_before: tuple[float, float, float]) -> str:
    """docs/benchmarks.md: how it was made, the machine, the table, how to read each row."""
    ram = f"{machine['ram_gib']:.1f} GiB" if machine["ram_gib"] else "unknown"
    facts = [("CPU", machine["cpu"]), ("cores", str(machine["cores"])), ("RAM", ram),
             ("OS", machine["os"]), ("Python", machine["python"]), ("torch", machine["torch"]),
             ("GPU", machine["gpu"]), ("render platform", machine["render_platform"]),
             ("load average before the run (1/5/15 min)",
              " / ".join(f"{load:.2f}" for load in load_before))]
    times = ", ".join(f"{o.benchmark.name} {o.seconds:.0f} s (load {o.load:.1f})"
                      for o in outcomes)
    lines = [
        "# Benchmarks", "",
        "Written by `benchmarks/run_all.py`; run the same command to reproduce the table. "
        "Every figure is a ratio against a baseline measured in the same run (ratio = value / "
        "baseline). What each script measures and its options: "
        "[benchmarks/README.md](../benchmarks/README.md).", "",
        f"- command: `{command}`" + (" (quick smoke sizes: noisy)" if quick else ""),
        f"- date: {started:%Y-%m-%d %H:%M} UTC; wall time {wall_s / 60:.1f} min",
        f"- per benchmark, wall time and the 1-min load average at its end (above the core "
        f"count: something else ran beside it): {times}",
        "", "## Machine", "", markdown_table(("", ""), facts), "",
        "## Results", "", markdown_table(COLUMNS, [row.cells() for row in rows]), "",
        "Timings on this kind of shared machine varied by about ±15 % between quiet runs. Both "
        "sides of a ratio run in the same run, but another job that lands on one side only "
        "still skews it: compare the load averages above with the core count.", "",
        "## How to read them", "",
    ]
    for outcome in outcomes:
        bench = outcome.benchmark
        script = shlex.join([f"benchmarks/{bench.name}.py",
                             *(bench.quick_args if quick else bench.args)])
        lines += [f"**{bench.name}** (`{script}`). {bench.reading}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks in turn, print the table, write the document unless one failed."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: a smoke run of about 3 min")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="where to write the Markdown (default docs/benchmarks.md)")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS],
                        help="run only these (the document then has only their rows)")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()  # the machine may be shared: say how busy it was
    wall_started = time.perf_counter()
    outcomes, failed = [], []
    with tempfile.TemporaryDirectory(prefix="dancegen-benchmarks-") as tmp:
        for bench in BENCHMARKS:
            if args.only and bench.name not in args.only:
                continue
            print(f"{bench.name} ...", end=" ", flush=True)
            outcome = run_benchmark(bench, args.quick, Path(tmp))
            print(f"{outcome.seconds:.0f} s, load {outcome.load:.1f}"
                  + ("" if outcome.figures else " FAILED"), flush=True)
            if outcome.figures is None:
                failed.append(bench.name)
                print("\n".join(outcome.log.read_text().splitlines()[-40:]), file=sys.stderr)
            else:
                outcomes.append(outcome)
    wall_s = time.perf_counter() - wall_started
    rows = [row for outcome in outcomes for row in outcome.benchmark.rows(outcome.figures)]
    print()
    print(text_table(COLUMNS, [row.cells() for row in rows]))
    if failed:
        print(f"\nfailed: {', '.join(failed)}; {args.out} left as it was", file=sys.stderr)
        return 1
    text = document(rows, outcomes, machine_info(), command_line(argv), started, wall_s,
                    args.quick, load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"\nwrote {args.out} ({wall_s / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
