"""Peak memory of one render worker building one shard, to size ``memory_mb`` and shards.

    .venv/bin/python benchmarks/stage_memory.py [--config configs/paper.yaml]
                                                [--segments 1 3] [--json PATH]

Each count of ``--segments`` runs in a fresh interpreter: it sets the render stage up once
(a :class:`~dancegen.tasks.shard.StageWorker`: body model, GL context), then builds one shard
of that many segments of the synthetic fixtures into a local store at the config's
resolution, and reports its peak resident memory (``ru_maxrss``) and its memory after set-up.
Peak memory is linear in the shard's segments (the frame buffers of every render array are
held until the shard is written whole), so two counts give the per-segment slope, and the
peak of the config's ``storage.shard_segments`` follows. The baseline is the contract's bytes
of the shard's render arrays: the ratio is how much more than its own arrays a worker holds.
The figures are CPU-side (OSMesa); on a GPU worker, EGL's buffers live on the GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import REPO, positive, run_in_temp_folder, use_local_stack_environment


def child(config_path: str, inputs: str, store: str, segments: int) -> dict[str, Any]:
    """In a fresh interpreter: set up a render worker, build one shard, report memory."""
    import numpy as np
    import psutil

    from dancegen.config import load_config
    from dancegen.flows.build_dataset import BuildSummary, pending_units_of, store_layout
    from dancegen.storage.aistpp import AistppInputs, InputRoots
    from dancegen.storage.contract import arrays_of, dims_for
    from dancegen.storage.dataset import DatasetStore
    from dancegen.tasks.plan import plan_segments_from
    from dancegen.tasks.shard import StageWorker
    from dancegen.tasks.stages import STAGES

    config = load_config(config_path, [
        "ray.address=null", "stages=[render]", f"storage.shard_segments={segments}",
        "edge.synthesis.music=null", "music.backend=baseline", "edge.features=baseline",
        "render.body_model=smpl/SMPL_NEUTRAL.pkl"])
    source = AistppInputs(inputs)
    plan = plan_segments_from(inputs, config)
    dataset = DatasetStore(store, config.dataset.version)
    dataset.prepare(plan.segments, config.stages,
                    store_layout(config, source.synthetic))
    summary = BuildSummary(store=store, version=config.dataset.version)
    unit = pending_units_of(dataset, dataset.table(), InputRoots(source, None), config,
                                summary, {})[0]
    worker = StageWorker(STAGES["render"])
    roots = InputRoots(source, None)
    worker._computer(roots, config)  # the set-up alone, as a worker's first unit does it
    after_setup = psutil.Process().memory_info().rss
    worker.build_shard(unit, config)
    dims = dims_for(config)
    arrays = sum(int(np.prod(spec.resolve(dims))) * np.dtype(spec.dtype).itemsize
                 for spec in arrays_of("render")) * len(unit.segments)
    return {"segments": len(unit.segments), "peak_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "after_setup_mb": after_setup / 2**20,
        "arrays_mb": arrays / 2**20, "width": config.render.width,
        "shard_segments": load_config(config_path).storage.shard_segments}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run the child once per segment count; fit the per-segment slope."""
    from dancegen.fixtures import write_fixtures
    from dancegen.fixtures.layout import default_sequences

    longest = max(default_sequences(), key=lambda s: s.seconds)
    inputs = write_fixtures(work / "inputs", [longest])
    runs = []
    for count in args.segments:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(args.config), str(inputs),
             str(work / f"store-{count}.zarr"), str(count)],
            cwd=REPO, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    first, last = runs[0], runs[-1]
    slope = (last["peak_mb"] - first["peak_mb"]) / max(last["segments"] - first["segments"], 1)
    shard = first["shard_segments"]
    predicted = first["peak_mb"] + slope * (shard - first["segments"])
    arrays_per_segment = first["arrays_mb"] / first["segments"]
    return {"params": {"config": str(args.config), "segments": args.segments},
            "runs": runs, "slope_mb_per_segment": slope, "shard_segments": shard,
            "predicted_peak_mb": predicted, "arrays_mb_per_segment": arrays_per_segment,
            "ratio": predicted / (arrays_per_segment * shard)}


def report(result: dict[str, Any]) -> None:
    """A line per run, the slope and the predicted peak of a whole shard."""
    print(f"render worker memory, {result['params']['config']}, "
          f"{result['runs'][0]['width']} px")
    for run in result["runs"]:
        print(f"  {run['segments']} segments: peak {run['peak_mb']:.0f} MB (after set-up "
              f"{run['after_setup_mb']:.0f} MB; the shard's arrays {run['arrays_mb']:.0f} MB)")
    print(f"per segment: {result['slope_mb_per_segment']:.0f} MB peak, "
          f"{result['arrays_mb_per_segment']:.0f} MB of arrays")
    print(f"a shard of {result['shard_segments']} segments: peak "
          f"{result['predicted_peak_mb']:.0f} MB = {result['ratio']:.2f}x its arrays")


def main(argv: list[str] | None = None) -> int:
    """Measure (or, with ``--child``, be one measured run)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        use_local_stack_environment()
        print(json.dumps(child(argv[1], argv[2], argv[3], int(argv[4]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/paper.yaml")
    parser.add_argument("--segments", type=positive, nargs=2, default=[1, 3],
                        help="two shard sizes to measure; the slope between them")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return run_in_temp_folder("dancegen-memory-", parser.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
