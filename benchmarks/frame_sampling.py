"""Random single-frame training samples (the image stage's access pattern): frame chunks against
whole-segment chunks.

    .venv/bin/python benchmarks/frame_sampling.py [--resolutions 128 640] [--samples N]
                                                  [--json PATH]

For each resolution, the same synthetic segments (every array of the motion, music and render
stages, benchmarks/storage.py's generator) are written twice: in today's layout (chunks of
``storage.chunk_frames`` = 5 frames) and in the old one (chunk = one whole segment, i.e.
``chunk_frames = T``), each published as a snapshot. Then the stage-2 sample of
tasks/ldm_data.py (one frame, a reference frame and the four guidance maps of one random
segment, resized to the training resolution) is drawn at random, the same requests on every
side, through the same ``ClipDataset``: frame chunks read by the snapshot reader (tensorstore,
concurrent reads) against the old path, whole segments read by ``DatasetStore.read`` (zarr,
one read at a time) and sliced; a third row reads whole segments with the new reader, to
separate what the layout gains from what the reader gains. The old reader also kept 48
decoded segments per process: at the paper's 11,000 segments a random sample hits that cache
0.4 % of the time, so the baseline decodes a segment per sample. Bytes decoded per sample
are counted from the chunks each read touches. Reads come from the page cache on every side
(the files were just written), so the figures compare decoding, not the disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import positive, write_json

from dancegen.config import load_config
from dancegen.storage import ARRAYS, DatasetStore
from dancegen.storage.segments import shard_ranges
from dancegen.storage.snapshot import DatasetSnapshot, publish_snapshot
from dancegen.tasks.ldm_data import ClipDataset, ClipRequest, SampleSpec
from storage import STAGES, SegmentPool, make_layout, make_segments

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "local-cpu.yaml"
SAMPLE_ARRAYS = ("video/frames", "maps/depth", "maps/normal", "maps/semantic", "maps/skeleton")


def decoded_bytes(snapshot: DatasetSnapshot, request: ClipRequest) -> int:
    """Bytes of the chunks one stage-2 sample decodes (frame, reference frame, four maps)."""
    total = 0
    for name in SAMPLE_ARRAYS:
        array = snapshot.array(name)
        chunk = array.chunks[1]
        frames = {request.start // chunk}
        if name == "video/frames":
            frames.add(request.reference // chunk)
        per_chunk = int(np.prod(array.chunks)) * array.dtype.itemsize
        total += len(frames) * per_chunk
    return total


class WholeSegmentReads:
    """The reader the LDM stages used before snapshots: ``DatasetStore.read`` of a whole row
    (array metadata and the shard's record read per call, the segment decoded), then sliced."""

    def __init__(self, snapshot: DatasetSnapshot) -> None:
        self.dataset, self.table = snapshot.dataset, snapshot.table

    def read_many(self, reads: list[tuple[str, int, Any]]) -> list[np.ndarray]:
        return [self.dataset.read(name, row)[frames] for name, row, frames in reads]


def build(root: Path, config: Any, pool: SegmentPool, segments: int, chunk_frames: int
          ) -> DatasetSnapshot:
    """A version of ``segments`` pool segments in shards of the config's size, published."""
    layout = dataclasses.replace(make_layout(config), chunk_frames=chunk_frames)
    dataset = DatasetStore(str(root), config.dataset.version)
    dataset.prepare(make_segments(segments, config), STAGES, layout)
    for shard, rows in enumerate(shard_ranges(segments, layout.shard_segments)):
        data = pool.shard(rows)
        for stage in STAGES:
            arrays = {name: data[name] for name, spec in ARRAYS.items() if spec.stage == stage}
            dataset.write_shard(stage, shard, arrays, {"key": "bench"})
    publish_snapshot(dataset, list(STAGES))
    return DatasetSnapshot.open(str(root), config.dataset.version)


def measure(resolution: int, samples: int, baseline_samples: int, work: Path
            ) -> dict[str, Any]:
    """Both layouts at one resolution: samples/s and MB decoded per sample."""
    config = load_config(CONFIG, [f"render.width={resolution}", f"render.height={resolution}",
                                  "storage.shard_segments=2", "edge.synthesis.music=null"])
    frames = config.dataset.segment_frames
    segments = 4
    pool = SegmentPool(make_layout(config).dims, distinct=2)
    generator = torch.Generator().manual_seed(0)
    requests = [ClipRequest(int(torch.randint(segments, (1,), generator=generator)),
                            int(torch.randint(frames, (1,), generator=generator)), 1,
                            int(torch.randint(frames, (1,), generator=generator)))
                for _ in range(samples)]
    spec = SampleSpec(resolution, m2penc=False, rendered_guidance=True)
    snapshots = {chunk: build(work / f"{resolution}-{chunk}", config, pool, segments, chunk)
                 for chunk in (config.storage.chunk_frames, frames)}
    sides = {}
    for name, chunk, old_reader, count in (
            ("frame chunks", config.storage.chunk_frames, False, samples),
            ("whole segments, old reader", frames, True, baseline_samples),
            ("whole segments, new reader", frames, False, baseline_samples)):
        snapshot = snapshots[chunk]
        dataset = ClipDataset(snapshot, "music/baseline", spec)
        if old_reader:
            dataset.snapshot = WholeSegmentReads(snapshot)
        dataset[requests[0]]  # open the arrays (once per worker process in training)
        started = time.perf_counter()
        for request in requests[1:count + 1]:
            sample = dataset[request]
        seconds = time.perf_counter() - started
        assert sample["guidance"].shape == (4, 3, 1, resolution, resolution)
        sides[name] = {"chunk_frames": chunk, "samples": count,
                       "samples_per_s": count / seconds,
                       "mb_per_sample": float(np.mean([decoded_bytes(snapshot, r)
                                                       for r in requests[:count]])) / 1e6}
        print(f"{resolution} px, {name}: {sides[name]['samples_per_s']:.2f} samples/s, "
              f"{sides[name]['mb_per_sample']:.1f} MB decoded per sample")
    for chunk in snapshots:
        shutil.rmtree(work / f"{resolution}-{chunk}")
    new, old = sides["frame chunks"], sides["whole segments, old reader"]
    print(f"{resolution} px: {new['samples_per_s'] / old['samples_per_s']:.1f}x the samples/s "
          f"of whole-segment reads, {old['mb_per_sample'] / new['mb_per_sample']:.0f}x fewer "
          "bytes decoded")
    return {"resolution": resolution, "frames_per_segment": frames, **sides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=positive, nargs="+", default=[128, 640])
    parser.add_argument("--samples", type=positive, default=60,
                        help="samples timed on the frame-chunk side")
    parser.add_argument("--baseline-samples", type=positive, default=6,
                        help="samples timed on the whole-segment side (slow)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker reads on one core
    work = Path(tempfile.mkdtemp(prefix="dancegen-frames-"))
    try:
        results = [measure(r, args.samples, args.baseline_samples, work)
                   for r in args.resolutions]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
