"""Orchestration overhead: the build-dataset flow (Prefect -> Ray) against a plain loop.

    .venv/bin/python benchmarks/orchestration.py [--stages motion music] [--shard-segments 1]
                                                 [--ray-cpus 1] [--repeat 3] [--json PATH]

Both sides build the same shard units of the synthetic fixtures (``dancegen fixtures``) into a
fresh local Zarr store each time:

- **flow**: ``build-dataset`` as ``dancegen dataset build`` runs it: a local Prefect server
  (``dancegen.local_prefect``, the CLI's own), a local Ray with ``--ray-cpus`` CPUs, every
  unit a ``build-shard`` task on a Ray worker;
- **loop**: in this process, the flow's own steps without Prefect or Ray: plan the segments,
  prepare the store, list the pending units, then ``build_shard_now`` (the function the task
  wraps) for each unit in turn.

The default is one Ray CPU, so both sides compute one unit at a time and the ratio flow/loop
is the orchestration's price alone (what a second worker buys is ``scaling.py``'s question).
Cheap stages (motion, music) are the default because they make the per-unit overhead visible;
with the render stage it disappears in the compute. Start-up (server, ``ray.init``) and a
first flow on a small subset (cold workers: imports, numba JIT) are timed apart; the figures
are the best of ``--repeat`` warm runs per side, alternating. Afterwards (untimed) every array
of the last flow store is compared with the last loop store's, so both did the same work.
All processes here are single-threaded (OMP/MKL/numba/llvmpipe threads = 1).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    positive,
    run_in_temp_folder,
    timed,
    use_local_stack_environment,
)

use_local_stack_environment()  # before Prefect, Ray or torch are imported (see _common)

import numpy as np  # noqa: E402
import ray  # noqa: E402

from dancegen.config import DancegenConfig, load_config  # noqa: E402
from dancegen.fixtures import default_sequences, write_fixtures  # noqa: E402
from dancegen.flows.build_dataset import (  # noqa: E402
    BuildSummary,
    build_dataset,
    pending_units_of,
    ray_init_kwargs,
    ray_task_runner,
    store_layout,
)
from dancegen.local_prefect import prefect_api  # noqa: E402
from dancegen.storage import arrays_of  # noqa: E402
from dancegen.storage.aistpp import AistppInputs, InputRoots  # noqa: E402
from dancegen.storage.dataset import DatasetStore  # noqa: E402
from dancegen.tasks.plan import plan_segments_from  # noqa: E402
from dancegen.tasks.shard import build_shard_now  # noqa: E402

WARM_UP_SEQUENCES = 2  # the first two fixture sequences: 5 segments, enough for two workers


def bench_config(stages: list[str], shard_segments: int, ray_cpus: int,
                 extra: list[str] | None = None) -> DancegenConfig:
    """The embedded default with the benchmark's stages, shard size and Ray CPUs.

    Pseudo-motions are off: they need a trained EDGE, and their sampling is not a shard unit.
    """
    return load_config(REPO / "configs/local-cpu.yaml", [
        "edge.synthesis.music=null", f"stages=[{','.join(stages)}]",
        f"storage.shard_segments={shard_segments}", f"ray.num_cpus={ray_cpus}", *(extra or [])])


def write_inputs(root: Path) -> tuple[str, str]:
    """The full fixtures and a small subset for warm-ups; returns both folders."""
    full = write_fixtures(root / "inputs")
    subset = write_fixtures(root / "warm-up", default_sequences()[:WARM_UP_SEQUENCES])
    return str(full), str(subset)


@contextmanager
def local_prefect() -> Iterator[float]:
    """A local Prefect server as ``dancegen dataset build`` starts one; yields its start-up s."""
    started = time.perf_counter()
    with prefect_api(Path(os.environ["PREFECT_HOME"])):
        yield time.perf_counter() - started


@contextmanager
def local_ray(config: DancegenConfig) -> Iterator[float]:
    """The config's local Ray, as the CLI starts it; yields the seconds of ``ray.init``.

    Start it inside :func:`local_prefect`: the Ray workers inherit PREFECT_API_URL from this
    process. ``ray.shutdown`` at the end stops the processes this ``ray.init`` started, and
    no others.
    """
    seconds, _ = timed(lambda: ray.init(**ray_init_kwargs(config.ray)))
    try:
        yield seconds
    finally:
        ray.shutdown()


def run_flow(inputs: str, out: Path, config: DancegenConfig) -> tuple[float, dict[str, Any]]:
    """Seconds of one build-dataset flow call into a fresh store, and its summary."""
    flow = build_dataset.with_options(task_runner=ray_task_runner(config.ray))
    seconds, state = timed(lambda: flow(inputs=inputs, out=str(out), config=config,
                                        return_state=True))
    if not state.is_completed():
        raise SystemExit(f"build-dataset did not complete: {state.message}")
    return seconds, state.result()


def run_loop(inputs: str, out: Path, config: DancegenConfig) -> tuple[float, int]:
    """Seconds of the flow's steps as a plain loop into a fresh store, and the units built."""

    def build() -> int:
        plan = plan_segments_from(inputs, config)
        source = AistppInputs(inputs)
        dataset = DatasetStore(str(out), config.dataset.version)
        dataset.prepare(plan.segments, config.stages,
                        store_layout(config, source.synthetic))
        summary = BuildSummary(store=dataset.store.url, version=dataset.version)
        units = pending_units_of(dataset, dataset.table(), InputRoots(source, None), config,
                                summary, {})
        for unit in units:
            build_shard_now(unit, config)
        return len(units)

    return timed(build)


def check_same(a: Path, b: Path, config: DancegenConfig) -> None:
    """Untimed: every array of the benchmark's stages is identical in both stores."""
    stores = [DatasetStore(str(path), config.dataset.version) for path in (a, b)]
    rows = slice(0, len(stores[0].segments()))
    for spec in (spec for stage in config.stages for spec in arrays_of(stage)):
        first, second = (store.read(spec.name, rows) for store in stores)
        if not np.array_equal(first, second):
            raise SystemExit(f"flow and loop stores differ in {spec.name}")


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start the stack, warm both sides up, then time ``--repeat`` alternating rounds."""
    config = bench_config(args.stages, args.shard_segments, args.ray_cpus)
    inputs, warm_up = write_inputs(work)
    fresh = itertools.count()

    def store() -> Path:
        """A new store path for every run: each side always builds from scratch."""
        return work / f"store-{next(fresh)}.zarr"

    flow_s, loop_s, last = [], [], {}
    with local_prefect() as server_s, local_ray(config) as ray_s:
        startup = {"prefect_server_s": server_s, "ray_init_s": ray_s}
        startup["first_flow_s"], _ = run_flow(warm_up, store(), config)  # cold workers
        startup["first_loop_s"], _ = run_loop(warm_up, store(), config)  # cold imports, JIT
        for _ in range(args.repeat):
            last["loop"] = store()
            seconds, units = run_loop(inputs, last["loop"], config)
            loop_s.append(seconds)
            last["flow"] = store()
            seconds, summary = run_flow(inputs, last["flow"], config)
            flow_s.append(seconds)
            if summary["shards_written"] != units:
                raise SystemExit(f"flow wrote {summary['shards_written']} shards, loop {units}")
        teardown_started = time.perf_counter()
    startup["teardown_s"] = time.perf_counter() - teardown_started
    check_same(last["flow"], last["loop"], config)
    flow, loop = min(flow_s), min(loop_s)
    return {
        "params": {key: value for key, value in vars(args).items() if key != "json"},
        "units": units, "segments": summary["segments"], "stages": config.stages,
        "flow_s": flow, "loop_s": loop, "flow_runs_s": flow_s, "loop_runs_s": loop_s,
        "ratio": flow / loop, "overhead_per_unit_ms": (flow - loop) / units * 1e3,
        "loop_per_unit_ms": loop / units * 1e3, **startup,
    }


def report(result: dict[str, Any]) -> None:
    """Print the figures."""
    units = result["units"]
    print(f"orchestration benchmark: stages {', '.join(result['stages'])}, "
          f"{result['segments']} segments, {units} shard units, Ray CPUs "
          f"{result['params']['ray_cpus']}, best of {result['params']['repeat']}")
    print(f"start-up: Prefect server {result['prefect_server_s']:.1f} s, ray.init "
          f"{result['ray_init_s']:.1f} s; first flow on {WARM_UP_SEQUENCES} sequences (cold "
          f"workers) {result['first_flow_s']:.1f} s, first loop on them "
          f"{result['first_loop_s']:.1f} s; shut-down {result['teardown_s']:.1f} s")
    print(f"loop (in-process build_shard_now): {result['loop_s']:.2f} s, "
          f"{result['loop_per_unit_ms']:.0f} ms per unit")
    print(f"flow (Prefect -> Ray, warm):       {result['flow_s']:.2f} s")
    print(f"overhead per unit: {result['overhead_per_unit_ms']:.0f} ms")
    print(f"orchestration ratio (flow/loop): {result['ratio']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark in a temporary folder and print (and optionally save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=["motion", "music"],
                        help="dataset stages to build (default: the cheap motion and music)")
    parser.add_argument("--shard-segments", type=positive, default=1,
                        help="segments per shard: 1 gives the most units (default 1)")
    parser.add_argument("--ray-cpus", type=positive, default=1,
                        help="CPUs of the local Ray; 1 keeps the flow serial like the loop")
    parser.add_argument("--repeat", type=positive, default=3, help="warm rounds; the best counts")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return run_in_temp_folder("dancegen-orchestration-", parser.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
