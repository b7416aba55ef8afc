"""The render stage on long-lived actors against one Ray task per shard, on fake GPUs.

    .venv/bin/python benchmarks/actors.py [--resolution 128] [--repeat 1] [--json PATH]

The build-dataset flow builds the render stage of the synthetic fixtures, one segment per
shard, into a fresh local store on a local Ray that pretends to have GPUs (``ray.num_gpus=2``,
``ray.stages.render.num_gpus=0.5``; the stage code still runs on the CPU with OSMesa). Once
with the stage on long-lived actors (the default: each sets up the body model and GL context
once), once with ``ray.stages.render.actors=0``: one Ray task per shard, which on a GPU means
a fresh worker process per task (Ray's ``max_calls=1`` for GPU tasks: the path prefect-ray
took before), set up again for every shard. Each side gets its own fresh Ray; set-ups are
counted from the completion records (``worker.pid``, ``worker.setups``), not assumed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _common import positive, run_in_temp_folder
from orchestration import bench_config, local_prefect, local_ray, run_flow, write_inputs

from dancegen.storage.dataset import DatasetStore

SIDES = {"actors": [], "per-task": ["ray.stages.render.actors=0"]}


def setups_of(store: Path, version: str) -> tuple[int, int, int]:
    """(shards, distinct worker processes, set-ups run) of a store's render records."""
    records = DatasetStore(str(store), version).records("render").values()
    setups: dict[int, int] = {}
    for record in records:
        pid = record["worker"]["pid"]
        setups[pid] = max(setups.get(pid, 0), record["worker"]["setups"])
    return len(records), len(setups), sum(setups.values())


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Seconds, frames/s and set-ups per shard of each side (best of ``--repeat``)."""
    inputs, _ = write_inputs(work)
    sides: dict[str, dict[str, Any]] = {}
    with local_prefect() as server_s:
        for side, extra in SIDES.items():
            config = bench_config(["render"], 1, 2, [
                f"render.width={args.resolution}", f"render.height={args.resolution}",
                "ray.num_gpus=2", "ray.stages.render.num_gpus=0.5", *extra])
            runs = []
            with local_ray(config):
                for attempt in range(args.repeat):
                    store = work / f"{side}-{attempt}.zarr"
                    seconds, summary = run_flow(inputs, store, config)
                    runs.append((seconds, summary, store))
            seconds, summary, store = min(runs, key=lambda run: run[0])
            shards, workers, setups = setups_of(store, config.dataset.version)
            frames = summary["segments"] * config.dataset.segment_frames
            sides[side] = {"seconds": seconds, "fps": frames / seconds, "frames": frames,
                           "shards": shards, "workers": workers, "setups": setups,
                           "setups_per_shard": setups / shards,
                           "runs_s": [run[0] for run in runs]}
    return {"params": {key: value for key, value in vars(args).items() if key != "json"},
            "prefect_server_s": server_s, "sides": sides,
            "speedup": sides["actors"]["fps"] / sides["per-task"]["fps"]}


def report(result: dict[str, Any]) -> None:
    """A line per side and the ratio."""
    sides, size = result["sides"], result["params"]["resolution"]
    print(f"render stage via the flow on fake GPUs (2 GPUs, 0.5 per worker, 2 CPUs), "
          f"{sides['actors']['shards']} shards of 1 segment at {size} px")
    print(f"{'side':>9} {'seconds':>8} {'frames/s':>9} {'workers':>8} {'set-ups':>8} "
          f"{'set-ups/shard':>14}")
    for name, side in sides.items():
        print(f"{name:>9} {side['seconds']:>8.1f} {side['fps']:>9.1f} {side['workers']:>8} "
              f"{side['setups']:>8} {side['setups_per_shard']:>14.2f}")
    print(f"actors / per-task: {result['speedup']:.2f}x frames/s")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark in a temporary folder and print (and optionally save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=positive, default=128, help="render H = W")
    parser.add_argument("--repeat", type=positive, default=1, help="timed runs; the best counts")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return run_in_temp_folder("dancegen-actors-", parser.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
