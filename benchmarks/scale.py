"""The dataset build at size: the real flow on a multi-node local Ray, and how its costs grow.

    .venv/bin/python benchmarks/scale.py [--segments 500 2000] [--workers 2] [--json PATH]
    .venv/bin/python benchmarks/scale.py --segments 1000 10940     # the paper's size

For each ``--segments`` count: synthetic AIST++-layout inputs of that size (``dancegen
fixtures --sequences``), then, in a fresh interpreter each (so that its peak memory is its
own), the ``build-dataset`` flow into a fresh local store, a second build with nothing to do,
and ``verify_dataset``. The cluster is a Ray head plus ``--workers`` worker nodes started with
``ray start`` on this machine (dancegen/ray_cluster.py), one CPU each; the flow joins it by
address, as a deployment does, and reports to a Prefect server started for the run (never
Prefect's ephemeral mode). The stages are the cheap ones (motion, edge_repr by default;
``--stages`` adds music), because the point is the control plane: planning, preparing the
store, the per-unit bookkeeping, the no-op rebuild and verify.

Each figure is printed for every size, with the smallest as its baseline: the ratio is its
growth, and the exponent ``log(ratio) / log(size ratio)`` says how it scales (1.0: linear).
Overhead per unit is the worker CPU time the fan-out leaves idle, ``(fan-out wall x worker
cores - the workers' CPU time inside units) / units``, counting only the cores the machine
has. Verify is the verify-dataset flow reading every shard back in Ray tasks (``full``), then
an incremental one after the no-op build (nothing to read back).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, positive, run_in_temp_folder, timed, use_local_stack_environment

FIGURES = ("plan_s", "prepare_s", "overhead_ms_per_unit", "build_s", "noop_s", "verify_s",
           "verify_incremental_s", "peak_mb")


def child(inputs: str, store: str, address: str, stages: str, shard_segments: int) -> dict:
    """In a fresh interpreter: build, build again (nothing to do), verify; report figures."""
    from dancegen.config import load_config
    from dancegen.flows.build_dataset import build_dataset, ray_task_runner
    from dancegen.flows.verify_dataset import verify_dataset

    config = load_config(REPO / "configs/local-cpu.yaml", [
        "edge.synthesis.music=null", f"stages=[{stages}]",
        f"storage.shard_segments={shard_segments}", f"ray.address={address}",
        "ray.max_in_flight=64"])
    flow = build_dataset.with_options(task_runner=ray_task_runner(config.ray))

    def build() -> dict:
        state = flow(inputs=inputs, out=store, config=config, return_state=True)
        if not state.is_completed():
            raise SystemExit(f"build-dataset did not complete: {state.message}")
        return state.result()

    build_s, summary = timed(build)
    noop_s, again = timed(build)
    if again["shards_written"]:
        raise SystemExit(f"the second build wrote {again['shards_written']} shards")
    verify = verify_dataset.with_options(task_runner=ray_task_runner(config.ray))

    def check(full: bool) -> dict:
        state = verify(out=store, version=config.dataset.version, full=full, return_state=True)
        if not state.is_completed():
            raise SystemExit(f"verify-dataset found problems: {state.message}")
        return state.result()

    verify_s, report = timed(lambda: check(True))       # every shard read back, in Ray tasks
    incremental_s, _ = timed(lambda: check(False))     # nothing written since: records only
    return {"summary": summary, "noop": again, "build_s": build_s, "noop_s": noop_s,
            "verify_s": verify_s, "verify_incremental_s": incremental_s,
            "checked": report["checked"],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Inputs, cluster, one child per size; growth and exponents against the smallest."""
    from dancegen.fixtures import write_fixtures
    from dancegen.fixtures.layout import scaled_sequences
    from dancegen.local_prefect import prefect_api
    from dancegen.ray_cluster import LocalCluster

    runs = []
    with prefect_api(Path(os.environ["PREFECT_HOME"])), \
            LocalCluster(workers=args.workers, cpus=1) as cluster:
        for count in args.segments:
            sequences = scaled_sequences(math.ceil(count / args.segments_per_sequence),
                                         args.segments_per_sequence * 5.0 + 1.0)
            inputs_s, inputs = timed(lambda s=sequences, c=count:
                                     write_fixtures(work / f"inputs-{c}", s))
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(inputs),
                 str(work / f"store-{count}.zarr"), cluster.address, ",".join(args.stages),
                 str(args.shard_segments)],
                cwd=REPO, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"the {count}-segment build failed:\n{done.stderr[-4000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            summary = result["summary"]
            units = summary["shards_written"]
            phases = summary["phases"]
            # the worker CPUs the machine really has: three 1-CPU nodes on two cores are two
            cores = min(cluster.nodes * cluster.cpus, os.cpu_count() or 1)
            idle = phases["fan_out_s"] * cores - summary["unit_cpu_seconds"]
            runs.append({
                "segments": summary["segments"], "units": units, "inputs_s": inputs_s,
                "plan_s": phases["plan_s"], "prepare_s": phases["prepare_s"],
                "fan_out_s": phases["fan_out_s"], "unit_seconds": summary["unit_seconds"],
                "overhead_ms_per_unit": max(idle, 0.0) / max(units, 1) * 1e3,
                "build_s": result["build_s"], "noop_s": result["noop_s"],
                "noop_phases": result["noop"]["phases"], "verify_s": result["verify_s"],
                "verify_incremental_s": result["verify_incremental_s"],
                "peak_mb": result["peak_mb"], "child_s": time.perf_counter() - started})
    base = runs[0]
    for run in runs:
        size = run["segments"] / base["segments"]
        run["growth"] = {f: run[f] / base[f] if base[f] else math.nan for f in FIGURES}
        run["exponent"] = {f: math.log(g) / math.log(size) if size > 1 and g > 0 else math.nan
                           for f, g in run["growth"].items()}
    return {"params": {k: v for k, v in vars(args).items() if k != "json"},
            "nodes": 1 + args.workers, "runs": runs}


def report(result: dict[str, Any]) -> None:
    """A table per size and the exponents of the largest against the smallest."""
    params, runs = result["params"], result["runs"]
    print(f"dataset build at size: {result['nodes']} Ray nodes of 1 CPU (ray start), stages "
          f"{', '.join(params['stages'])}, {params['shard_segments']} segments per shard")
    print(f"{'segments':>9} {'units':>6} {'plan s':>7} {'prepare s':>9} {'ovh ms/unit':>11} "
          f"{'build s':>8} {'no-op s':>8} {'verify s':>8} {'incr. s':>8} {'peak MB':>8}")
    for run in runs:
        print(f"{run['segments']:>9} {run['units']:>6} {run['plan_s']:>7.1f} "
              f"{run['prepare_s']:>9.1f} {run['overhead_ms_per_unit']:>11.1f} "
              f"{run['build_s']:>8.1f} {run['noop_s']:>8.1f} {run['verify_s']:>8.1f} "
              f"{run['verify_incremental_s']:>8.1f} {run['peak_mb']:>8.0f}")
    last = runs[-1]
    print("exponents (largest vs smallest; 1.0 = linear): " + ", ".join(
        f"{f} {last['exponent'][f]:.2f}" for f in FIGURES))


def main(argv: list[str] | None = None) -> int:
    """Measure (or, with ``--child``, be one measured build)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], argv[2], argv[3], argv[4], int(argv[5]))))
        return 0
    use_local_stack_environment()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=positive, nargs="+", default=[500, 2000],
                        help="input sizes in segments; the first is the baseline")
    parser.add_argument("--workers", type=positive, default=2, help="worker nodes besides the head")
    parser.add_argument("--stages", nargs="+", default=["motion", "edge_repr"])
    parser.add_argument("--shard-segments", type=positive, default=8)
    parser.add_argument("--segments-per-sequence", type=positive, default=11,
                        help="windows per synthetic sequence (AIST++ averages about 11)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return run_in_temp_folder("dancegen-scale-", parser.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
