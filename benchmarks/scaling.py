"""Scaling of the render stage from one Ray worker to two: the same shards, 1 vs N CPUs.

    .venv/bin/python benchmarks/scaling.py [--workers 1 2] [--resolution 128] [--repeat 1]
                                           [--json PATH]

The build-dataset flow builds the render stage (the heavy one: SMPL, rasterising every
guidance map, heatmaps, skeletons) of the synthetic fixtures, one segment per shard, into a
fresh local store, on a local Prefect server and a local Ray started with ``num_cpus`` = each
of ``--workers`` in turn (``ray.shutdown`` in between, one Prefect server for all). Each Ray
first builds a small warm-up subset, so every worker has its GL context and body model before
the timed run. The figure is rendered frames/s of the whole flow call, and the speed-up
against one worker measured in the same run.

Every process is single-threaded (OMP/MKL/OpenBLAS/numba threads and Mesa llvmpipe's
``LP_NUM_THREADS`` = 1, inherited by the Ray workers), so one worker uses one core and N
workers N cores. On a 2-core machine the speed-up cannot exceed 2, and the flow's own process,
the Prefect server and Ray's daemons share those cores with the workers.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from _common import positive, run_in_temp_folder
from orchestration import bench_config, local_prefect, local_ray, run_flow, write_inputs


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Frames/s of the render stage for each worker count (best of ``--repeat`` runs)."""
    inputs, warm_up = write_inputs(work)
    fresh = itertools.count()
    runs: list[dict[str, Any]] = []
    with local_prefect() as server_s:
        for workers in args.workers:
            config = bench_config(["render"], 1, workers, [f"render.width={args.resolution}",
                                                           f"render.height={args.resolution}"])
            with local_ray(config) as ray_s:
                warm_s, _ = run_flow(warm_up, work / f"store-{next(fresh)}.zarr", config)
                timings = [run_flow(inputs, work / f"store-{next(fresh)}.zarr", config)
                           for _ in range(args.repeat)]
            seconds, summary = min(timings, key=lambda timing: timing[0])
            frames = summary["segments"] * config.dataset.segment_frames
            runs.append({"workers": workers, "seconds": seconds, "frames": frames,
                         "shards": summary["shards_written"], "fps": frames / seconds,
                         "shards_per_s": summary["shards_written"] / seconds,
                         "runs_s": [timing[0] for timing in timings],
                         "ray_init_s": ray_s, "warm_up_s": warm_s})
    base = runs[0]
    for run in runs:
        run["speedup"] = run["fps"] / base["fps"]
    return {"params": {key: value for key, value in vars(args).items() if key != "json"},
            "prefect_server_s": server_s, "runs": runs}


def report(result: dict[str, Any]) -> None:
    """Print a line per worker count and the speed-up of the last against the first."""
    params, runs = result["params"], result["runs"]
    print(f"render-stage scaling: {runs[0]['shards']} shards of 1 segment, {runs[0]['frames']}"
          f" frames at {params['resolution']}x{params['resolution']}, single-threaded workers, "
          f"best of {params['repeat']}")
    print(f"{'workers':>8} {'seconds':>8} {'frames/s':>9} {'shards/s':>9} {'speed-up':>9}")
    for run in runs:
        print(f"{run['workers']:>8} {run['seconds']:>8.1f} {run['fps']:>9.1f} "
              f"{run['shards_per_s']:>9.2f} {run['speedup']:>8.2f}x")
    first, last = runs[0], runs[-1]
    print(f"scaling ratio ({last['workers']} workers/{first['workers']}): "
          f"{last['speedup']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark in a temporary folder and print (and optionally save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=positive, nargs="+", default=[1, 2],
                        help="Ray CPUs (= render workers) to compare; the first is the baseline")
    parser.add_argument("--resolution", type=positive, default=128, help="render H = W")
    parser.add_argument("--repeat", type=positive, default=1, help="timed runs; the best counts")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return run_in_temp_folder("dancegen-scaling-", parser.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
