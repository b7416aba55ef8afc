"""Shard write/read throughput of dancegen's Zarr v3 data contract against raw np.save / np.load.

Both sides get the same bytes (every array of the motion, music and render stages, one shard at a
time), on the same disk, in the same run; each figure is the best of ``--repeat`` attempts and the
result is printed as a ratio dancegen / raw. Nothing is asserted: this is a measurement.

    .venv/bin/python benchmarks/storage.py [--segments N] [--shard-segments N] [--resolution R]
                                           [--repeat K] [--dir DIR] [--json PATH]

What is timed: for writes, :meth:`DatasetStore.write_shard` (encode, compress, checksum, shard
file, completion record) against ``np.save`` of one ``.npy`` per array per shard; for reads,
:meth:`DatasetStore.read` of every array shard by shard (record check, decode) against
``np.load`` of the same ``.npy`` files. Building a shard's input arrays is not timed. Neither
side fsyncs, and reads come from a warm page cache on both sides, so the figures compare CPU
and file-system overhead rather than the device itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from _common import positive, write_json

from dancegen.config import DancegenConfig, load_config
from dancegen.storage import DatasetStore, Layout, arrays_of, dims_for
from dancegen.storage.segments import Segment, segment_id, shard_ranges

STAGES = ("motion", "music", "render")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "local-cpu.yaml"
MB = 1e6

ShardData = dict[str, np.ndarray]  # contract array name -> rows of one shard (or one segment)

# --- synthetic content ---------------------------------------------------------------------
# OpenPose/DWPose body order (the contract's K = 18): rest pose as (x, y) offsets from the image
# centre in units of body height, y pointing down as in image coordinates.
REST_POSE = np.array(
    [
        [0.00, -0.42], [0.00, -0.32],                      # nose, neck
        [-0.09, -0.32], [-0.13, -0.16], [-0.15, -0.02],    # right shoulder, elbow, wrist
        [0.09, -0.32], [0.13, -0.16], [0.15, -0.02],       # left shoulder, elbow, wrist
        [-0.06, 0.02], [-0.07, 0.22], [-0.08, 0.42],       # right hip, knee, ankle
        [0.06, 0.02], [0.07, 0.22], [0.08, 0.42],          # left hip, knee, ankle
        [-0.02, -0.44], [0.02, -0.44], [-0.04, -0.43], [0.04, -0.43],  # eyes, ears
    ],
    dtype=np.float32,
)  # fmt: skip
# How far each joint swings while dancing (extremities move most), in body heights.
SWING = np.array([2, 1, 2, 4, 6, 2, 4, 6, 1, 3, 5, 1, 3, 5, 2, 2, 2, 2], np.float32) * 0.012
# Limbs DWPose draws between keypoints, and its colours (limb i and keypoint i use colour i).
LIMBS = [
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
]  # fmt: skip
COLOURS = np.array(
    [
        [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
        [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
        [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85],
    ],
    dtype=np.uint8,
)  # fmt: skip
MID_HIP = 18  # index of the extra point (between the hips) appended to the joints for the torso
# Body parts as capsules: (SMPL-style part label, joint a, joint b, radius in body heights).
BODY_PARTS = [
    (1, 1, MID_HIP, 0.085), (1, 8, 11, 0.05), (15, 0, 0, 0.06),
    (16, 2, 3, 0.03), (18, 3, 4, 0.025), (17, 5, 6, 0.03), (19, 6, 7, 0.025),
    (2, 8, 9, 0.045), (5, 9, 10, 0.035), (3, 11, 12, 0.045), (6, 12, 13, 0.035),
]  # fmt: skip
BODY_METRES = 1.7  # body height, to turn capsule radii into metres for depth
CAMERA_METRES = 4.0  # distance of the dancer from the camera
WALL, FLOOR = (196, 198, 204), (142, 132, 120)  # flat studio background of the RGB frames


@dataclass(frozen=True)
class Canvas:
    """Pixel grid of the rendered maps, shaped to broadcast against (T, H, W)."""

    height: int
    width: int

    @property
    def x(self) -> np.ndarray:
        """Column coordinates, shape (1, 1, W)."""
        return np.arange(self.width, dtype=np.float32)[None, None, :]

    @property
    def y(self) -> np.ndarray:
        """Row coordinates, shape (1, H, 1)."""
        return np.arange(self.height, dtype=np.float32)[None, :, None]


def smooth_curves(frames: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, channels) sums of a few slow sines in about [-1, 1]: the shape of dance motion."""
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    freq = rng.uniform(0.004, 0.04, (1, channels, 3)).astype(np.float32)  # cycles per frame
    phase = rng.uniform(0, 2 * np.pi, (1, channels, 3)).astype(np.float32)
    return np.sin(2 * np.pi * freq * t + phase).sum(axis=2) / 3


def beat_track(frames: int, rng: np.random.Generator) -> np.ndarray:
    """(frames,) uint8, 1 on beat frames (a steady tempo around 120 BPM at 30 fps)."""
    period = int(rng.integers(13, 18))
    beats = np.zeros(frames, np.uint8)
    beats[int(rng.integers(0, period)) :: period] = 1
    return beats


def joint_tracks(dims: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """(T, K, 2) pixel positions of a dancer swaying around the image centre."""
    frames, height, width = dims["T"], dims["H"], dims["W"]
    body = 0.8 * height
    sway = smooth_curves(frames, 2, rng) * np.array([0.15 * width, 0.03 * height], np.float32)
    swing = smooth_curves(frames, 2 * dims["K"], rng).reshape(frames, dims["K"], 2)
    pose = REST_POSE + swing * SWING[:, None] * 4
    centre = np.array([width / 2, height / 2], np.float32)
    return (centre + sway[:, None, :] + pose * body).astype(np.float32)


def motion_arrays(dims: dict[str, int], rng: np.random.Generator) -> ShardData:
    """SMPL parameters: smooth joint rotations, a drifting root and one body scale."""
    frames = dims["T"]
    noise = rng.normal(0, 0.01, (frames, 72)).astype(np.float32)  # mocap jitter
    return {
        "motion/smpl_poses": smooth_curves(frames, 72, rng) * 0.6 + noise,
        "motion/smpl_trans": smooth_curves(frames, 3, rng) * 30 + np.float32([0, 90, 0]),
        "motion/smpl_scaling": np.array([rng.uniform(85, 100)], np.float32),
    }


def music_arrays(dims: dict[str, int], rng: np.random.Generator) -> ShardData:
    """Audio as tones under a beat envelope plus noise, and feature curves that follow it."""
    frames, samples = dims["T"], dims["S"]
    beats = beat_track(frames, rng)
    t = np.arange(samples, dtype=np.float32)
    freq = rng.uniform(0.005, 0.04, 4).astype(np.float32)  # cycles/sample: 110-880 Hz at 22 kHz
    tones = np.sin(2 * np.pi * freq[:, None] * t).sum(axis=0) / 4
    since_beat = np.arange(frames) - np.maximum.accumulate(np.where(beats, np.arange(frames), 0))
    envelope = np.repeat(0.3 + 0.7 * np.exp(-since_beat / 4.0), -(-samples // frames))[:samples]
    audio = tones * envelope + rng.normal(0, 0.02, samples)
    features = smooth_curves(frames, 35, rng) + rng.normal(0, 0.05, (frames, 35))
    features[:, -1] = beats
    return {
        "music/audio": np.clip(audio, -1, 1).astype(np.float32),
        "music/baseline": features.astype(np.float32),
        "music/beats": beats,
    }


def capsule_offsets(
    a: np.ndarray, b: np.ndarray, canvas: Canvas
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and pixel, the (dx, dy) vector from the nearest point of segment a-b.

    ``a`` and ``b`` are (T, 2) pixel positions; each result is (T, H, W) float32.
    """
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    ex, ey = b[:, 0, None, None] - ax, b[:, 1, None, None] - ay
    px, py = canvas.x - ax, canvas.y - ay
    along = np.clip((px * ex + py * ey) / np.maximum(ex * ex + ey * ey, 1e-6), 0, 1)
    return px - along * ex, py - along * ey


def body_surface(joints: np.ndarray, canvas: Canvas) -> tuple[np.ndarray, ...]:
    """Z-buffered capsule body: (label, depth in metres, normal x, y, z), each (T, H, W)."""
    points = np.concatenate([joints, joints[:, [8, 11]].mean(axis=1, keepdims=True)], axis=1)
    shape = (joints.shape[0], canvas.height, canvas.width)
    label = np.zeros(shape, np.uint8)
    depth = np.full(shape, np.inf, np.float32)
    normal = [np.zeros(shape, np.float32) for _ in range(3)]
    body = 0.8 * canvas.height
    for part, a, b, radius in BODY_PARTS:
        dx, dy = capsule_offsets(points[:, a], points[:, b], canvas)
        nx, ny = dx / (radius * body), dy / (radius * body)
        across = nx * nx + ny * ny  # 0 on the capsule's axis, 1 on its silhouette
        nz = np.sqrt(np.clip(1 - across, 0, None))  # +z faces the camera (OpenGL convention)
        surface = CAMERA_METRES - radius * BODY_METRES * nz
        nearer = (across < 1) & (surface < depth)
        label[nearer] = part
        depth = np.where(nearer, surface, depth)
        for channel, value in zip(normal, (nx, ny, nz), strict=True):
            np.copyto(channel, value, where=nearer)
    return label, depth, *normal


def skeleton_image(joints: np.ndarray, canvas: Canvas) -> np.ndarray:
    """(T, H, W, 3) uint8 DWPose-style skeleton: coloured limbs and joint dots on black."""
    image = np.zeros((joints.shape[0], canvas.height, canvas.width, 3), np.uint8)
    thickness = max(2.0, canvas.height / 96)
    strokes = [(a, b, thickness) for a, b in LIMBS] + [(k, k, thickness + 1) for k in range(18)]
    for colour, (a, b, size) in zip(np.concatenate([COLOURS[:17], COLOURS]), strokes, strict=True):
        dx, dy = capsule_offsets(joints[:, a], joints[:, b], canvas)
        image[dx * dx + dy * dy < size * size] = colour
    return image


def person_frames(label: np.ndarray, normal_z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: flat wall and floor, shaded clothes with a little texture."""
    height = label.shape[1]
    frames = np.empty((*label.shape, 3), np.uint8)
    frames[:] = WALL
    frames[:, int(0.85 * height) :] = FLOOR
    clothes = rng.integers(40, 230, (25, 3)).astype(np.float32)  # one colour per body part
    shade = (0.35 + 0.65 * normal_z)[..., None]
    lit = clothes[label] * shade + rng.normal(0, 3, (*label.shape, 1)).astype(np.float32)
    foreground = label > 0
    frames[foreground] = np.clip(lit[foreground], 0, 255).astype(np.uint8)
    return frames


def heatmaps(joints: np.ndarray, dims: dict[str, int]) -> np.ndarray:
    """(T, K, M, M) float16 Gaussian keypoint heatmaps, cut at 3 sigma as M2PEnc targets are."""
    side, sigma = dims["M"], dims["M"] / 32
    scaled = joints * np.float32([side / dims["W"], side / dims["H"]])
    grid = np.arange(side, dtype=np.float32)
    gx, gy = (np.exp(-((grid - scaled[..., i, None]) ** 2) / (2 * sigma**2)) for i in (0, 1))
    maps = gy[..., :, None] * gx[..., None, :]
    maps[maps < np.exp(-4.5)] = 0
    return maps.astype(np.float16)


def render_arrays(dims: dict[str, int], rng: np.random.Generator) -> ShardData:
    """Rendered guidance of one dancing capsule figure: maps, pose and RGB frames."""
    joints = joint_tracks(dims, rng)
    canvas = Canvas(dims["H"], dims["W"])
    label, depth, nx, ny, nz = body_surface(joints, canvas)
    foreground = label > 0
    depth_noise = rng.normal(0, 0.002, depth.shape).astype(np.float32)  # renderer z jitter
    encoded = np.stack([nx, ny, nz], axis=-1) * 127.5 + 127.5
    visible = np.clip(0.95 + 0.2 * smooth_curves(dims["T"], dims["K"], rng), 0, 1)
    return {
        "maps/depth": np.where(foreground, depth + depth_noise, 0).astype(np.float16),
        "maps/normal": np.where(foreground[..., None], encoded, 0).astype(np.uint8),
        "maps/semantic": label,
        "maps/skeleton": skeleton_image(joints, canvas),
        "pose/keypoints2d": np.concatenate([joints, visible[..., None]], axis=-1),
        "pose/heatmaps": heatmaps(joints, dims),
        "video/frames": person_frames(label, nz, rng),
    }


def synthetic_segment(dims: dict[str, int], rng: np.random.Generator) -> ShardData:
    """Every array of :data:`STAGES` for one segment, checked against the contract's shapes."""
    data = {**motion_arrays(dims, rng), **music_arrays(dims, rng), **render_arrays(dims, rng)}
    for spec in (spec for stage in STAGES for spec in arrays_of(stage)):
        got = data.get(spec.name)
        want = spec.resolve(dims)
        # Fail here, not inside a timed write, when the contract moves away from this generator.
        if got is None or got.shape != want or got.dtype != np.dtype(spec.dtype):
            found = "missing" if got is None else f"{got.dtype}{got.shape}"
            raise SystemExit(f"generator out of step with the contract: {spec.name} is {found},"
                             f" the contract says {spec.dtype}{want}")
    return data


class SegmentPool:
    """A few distinct synthetic segments, cycled to fill any number of rows.

    Every chunk (one segment) is compressed on its own and ``.npy`` files are not compressed at
    all, so repeating segments changes no figure; it only bounds generation time and memory.
    """

    def __init__(self, dims: dict[str, int], distinct: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.segments = [synthetic_segment(dims, rng) for _ in range(distinct)]
        self.names = list(self.segments[0])

    @property
    def segment_nbytes(self) -> int:
        """Uncompressed bytes of one segment (all arrays)."""
        return sum(values.nbytes for values in self.segments[0].values())

    def shard(self, rows: range) -> ShardData:
        """The arrays of one shard's rows, freshly stacked (so no side reuses a cached buffer)."""
        pick = [self.segments[row % len(self.segments)] for row in rows]
        return {name: np.stack([segment[name] for segment in pick]) for name in self.names}


# --- the two sides ---------------------------------------------------------------------------


class Side(ABC):
    """One way of storing the shards; :meth:`create` gives it a fresh, empty copy at ``root``."""

    name: str

    def __init__(self) -> None:
        self.root: Path | None = None

    def create(self, root: Path) -> None:
        """Start a new copy (untimed set-up), dropping the previous one to bound disk use."""
        self.discard()
        root.mkdir(parents=True)
        self.root = root
        self.setup()

    def discard(self) -> None:
        """Remove the current copy, if any."""
        if self.root is not None:
            shutil.rmtree(self.root)
            self.root = None

    def disk_bytes(self) -> int:
        """Bytes of the files of the current copy."""
        assert self.root is not None
        return sum(path.stat().st_size for path in self.root.rglob("*") if path.is_file())

    @abstractmethod
    def setup(self) -> None:
        """Lay out the empty copy below :attr:`root`."""

    @abstractmethod
    def write(self, shard: int, data: ShardData) -> None:
        """Store every array of one shard."""

    @abstractmethod
    def read(self, name: str, shard: int, rows: range) -> np.ndarray:
        """Load one shard of one array."""


class RawSide(Side):
    """Baseline: one uncompressed ``.npy`` per array per shard."""

    name = "raw npy"

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names

    def _path(self, name: str, shard: int) -> Path:
        assert self.root is not None
        return self.root / name / f"{shard:06d}.npy"

    def setup(self) -> None:
        for name in self.names:
            self._path(name, 0).parent.mkdir(parents=True)

    def write(self, shard: int, data: ShardData) -> None:
        for name, values in data.items():
            np.save(self._path(name, shard), values)

    def read(self, name: str, shard: int, rows: range) -> np.ndarray:
        return np.load(self._path(name, shard))


class DancegenSide(Side):
    """dancegen's contract: :class:`DatasetStore` shards with their completion records."""

    name = "dancegen"

    def __init__(self, segments: list[Segment], layout: Layout, version: str) -> None:
        super().__init__()
        self.segments, self.layout, self.version = segments, layout, version
        self.store: DatasetStore | None = None

    def setup(self) -> None:
        assert self.root is not None
        self.store = DatasetStore(str(self.root / "store.zarr"), self.version)
        self.store.prepare(self.segments, STAGES, self.layout)

    def write(self, shard: int, data: ShardData) -> None:
        assert self.store is not None
        for stage in STAGES:
            arrays = {spec.name: data[spec.name] for spec in arrays_of(stage)}
            self.store.write_shard(stage, shard, arrays, record={"key": "bench"})

    def read(self, name: str, shard: int, rows: range) -> np.ndarray:
        assert self.store is not None
        return self.store.read(name, slice(rows.start, rows.stop))

    def disk_bytes(self) -> int:
        assert self.store is not None
        return self.store.location.size_bytes()


# --- measuring -------------------------------------------------------------------------------


def time_writes(side: Side, pool: SegmentPool, shards: list[range]) -> float:
    """Seconds spent in ``side.write`` over all shards (building each shard's arrays excluded)."""
    elapsed = 0.0
    for index, rows in enumerate(shards):
        data = pool.shard(rows)
        start = time.perf_counter()
        side.write(index, data)
        elapsed += time.perf_counter() - start
    return elapsed


def time_reads(side: Side, names: list[str], shards: list[range]) -> float:
    """Seconds to read every shard of every array once."""
    start = time.perf_counter()
    for name in names:
        for index, rows in enumerate(shards):
            side.read(name, index, rows)
    return time.perf_counter() - start


def best_of(repeat: int, sides: list[Side], attempt: Callable[[Side, int], float]) -> list[float]:
    """Best seconds of ``repeat`` attempts per side; sides alternate so drift hits both alike."""
    times: list[list[float]] = [[] for _ in sides]
    for round_ in range(repeat):
        for side, seconds in zip(sides, times, strict=True):
            seconds.append(attempt(side, round_))
    return [min(seconds) for seconds in times]


def check_same(sides: list[Side], names: list[str], shards: list[range]) -> None:
    """Untimed: both sides give back identical arrays, so both timed the same work."""
    for name in names:
        for index, rows in enumerate(shards):
            first, *others = (side.read(name, index, rows) for side in sides)
            if not all(np.array_equal(first, other) for other in others):
                raise SystemExit(f"read-back differs between sides: {name} shard {index}")


@dataclass(frozen=True)
class Figures:
    """What one side measured; MB/s are of uncompressed bytes, MB = 1e6 bytes."""

    side: str
    nbytes: int
    disk_bytes: int
    write_s: float
    read_s: float

    @property
    def write_mbps(self) -> float:
        """Write throughput."""
        return self.nbytes / MB / self.write_s

    @property
    def read_mbps(self) -> float:
        """Read throughput."""
        return self.nbytes / MB / self.read_s

    @property
    def compression(self) -> float:
        """Uncompressed bytes per byte on disk."""
        return self.nbytes / self.disk_bytes

    def as_json(self) -> dict[str, Any]:
        """Plain numbers for ``--json``."""
        derived = ("write_mbps", "read_mbps", "compression")
        return {**asdict(self), **{key: getattr(self, key) for key in derived}}


def make_segments(count: int, config: DancegenConfig) -> list[Segment]:
    """A segment table of ``count`` consecutive windows of one synthetic sequence."""
    seconds = config.dataset.segment_seconds
    return [
        Segment(
            id=segment_id("bench", window),
            sequence="bench",
            source="synthetic",
            split="train",
            window=window,
            start_s=window * seconds,
            end_s=(window + 1) * seconds,
            music_file="bench.wav",
            music_sha256="0" * 64,
            motion_file="bench.pkl",
            motion_sha256="0" * 64,
            motion_fps=float(config.dataset.fps),
        )
        for window in range(count)
    ]


def make_layout(config: DancegenConfig) -> Layout:
    """The layout the build flow would prepare for this config."""
    return Layout(
        dims=dims_for(config),
        shard_segments=config.storage.shard_segments,
        compression_level=config.storage.compression_level,
        chunk_frames=config.storage.chunk_frames,
        attrs={
            "fps": config.dataset.fps,
            "segment_seconds": config.dataset.segment_seconds,
            "config_name": config.name,
        },
    )


def measure(args: argparse.Namespace, config: DancegenConfig, workdir: Path) -> list[Figures]:
    """Generate the data, then time writes and reads of both sides; returns raw, dancegen."""
    layout = make_layout(config)
    pool = SegmentPool(layout.dims, args.distinct)
    shards = shard_ranges(args.segments, layout.shard_segments)
    sides: list[Side] = [
        RawSide(pool.names),
        DancegenSide(make_segments(args.segments, config), layout, config.dataset.version),
    ]

    def write_attempt(side: Side, round_: int) -> float:
        side.create(workdir / f"{side.name.replace(' ', '-')}-{round_}")
        return time_writes(side, pool, shards)

    write_s = best_of(args.repeat, sides, write_attempt)
    # Reads use the copies of the last write round, still in the page cache for both sides.
    read_s = best_of(args.repeat, sides, lambda side, _: time_reads(side, pool.names, shards))
    check_same(sides, pool.names, shards)
    nbytes = pool.segment_nbytes * args.segments
    figures = [
        Figures(side.name, nbytes, side.disk_bytes(), write, read)
        for side, write, read in zip(sides, write_s, read_s, strict=True)
    ]
    for side in sides:
        side.discard()
    return figures


# --- reporting -------------------------------------------------------------------------------

COLUMNS = ("side", "write MB/s", "read MB/s", "on disk MB", "compression")


def table_row(cells: Iterable[str]) -> str:
    """One aligned line: first column left, the numbers right."""
    first, *rest = cells
    return f"{first:<10}" + "".join(f"{cell:>13}" for cell in rest)


def report(args: argparse.Namespace, figures: list[Figures], workdir: Path) -> dict[str, Any]:
    """Print the table and ratio lines; return the same figures for ``--json``."""
    raw, ours = figures
    ratios = {
        "write_ratio": ours.write_mbps / raw.write_mbps,
        "read_ratio": ours.read_mbps / raw.read_mbps,
        "compression_ratio": ours.compression,
    }
    print(
        f"dancegen storage benchmark: {args.segments} segments, {args.shard_segments} per shard,"
        f" {args.resolution}x{args.resolution} px, best of {args.repeat}"
    )
    print(
        f"data: {raw.nbytes / MB:.1f} MB uncompressed"
        f" ({raw.nbytes / MB / args.segments:.1f} MB/segment, {args.distinct} distinct),"
        f" stages {', '.join(STAGES)}; dir {workdir.parent}"
    )
    print(f"cpus {os.cpu_count()}, zarr {zarr.__version__}, numpy {np.__version__}\n")
    print(table_row(COLUMNS))
    for fig in figures:
        numbers = (fig.write_mbps, fig.read_mbps, fig.disk_bytes / MB)
        print(table_row([fig.side, *(f"{n:.1f}" for n in numbers), f"{fig.compression:.2f}x"]))
    print()
    print(f"compression ratio (uncompressed/on disk): {ratios['compression_ratio']:.2f}x")
    print(f"write ratio (dancegen/raw): {ratios['write_ratio']:.2f}x")
    print(f"read ratio (dancegen/raw): {ratios['read_ratio']:.2f}x")
    params = {key: value for key, value in vars(args).items() if key not in ("dir", "json")}
    return {"params": params, "sides": [fig.as_json() for fig in figures], **ratios}


# --- command line ----------------------------------------------------------------------------


def resolution(text: str) -> int:
    """argparse type: a render size the config accepts (a multiple of 64)."""
    value = positive(text)
    if value % 64:
        raise argparse.ArgumentTypeError(f"{text} is not a multiple of 64 (render.width rule)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; defaults run in well under a minute on 2 cores."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segments", type=positive, default=16, help="rows (default 16)")
    parser.add_argument("--shard-segments", type=positive, default=4, help="rows per shard")
    parser.add_argument("--resolution", type=resolution, default=128, help="render H = W")
    parser.add_argument("--repeat", type=positive, default=3, help="attempts; best one counts")
    parser.add_argument("--distinct", type=positive, default=2,
                        help="distinct synthetic segments, cycled (bounds generation time)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="base config YAML")
    parser.add_argument("--dir", type=Path, default=None,
                        help="existing folder for temp data (default: a new one under /tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    args.distinct = min(args.distinct, args.segments)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and clean up its data whatever happens."""
    args = parse_args(argv)
    overrides = [
        f"render.width={args.resolution}",
        f"render.height={args.resolution}",
        f"storage.shard_segments={args.shard_segments}",
    ]
    config = load_config(args.config, overrides)
    if args.dir is not None and not args.dir.is_dir():
        raise SystemExit(f"--dir {args.dir} is not an existing folder")
    # A private folder inside --dir, so that cleaning up never touches the user's own files.
    workdir = Path(tempfile.mkdtemp(prefix="dancegen-bench-", dir=args.dir))
    try:
        figures = measure(args, config, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = report(args, figures, workdir)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
