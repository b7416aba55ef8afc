"""The data contract: every per-segment array of a dataset version, its dtype and shape.

One Zarr v3 group per dataset version. Axis 0 of every array is the segment index (one
fixed-length window of motion + music, 5 s by default); the shard is ``storage.shard_segments``
segments and the unit of work and of atomic write; inside it, the chunk (the unit of reading) is
``storage.chunk_frames`` frames of one segment for the image arrays (``ArraySpec.per_frame``),
one segment otherwise.
Shapes are written with symbolic dimensions resolved from the config by :func:`dims_for`:

    T  frames per segment (fps * segment_seconds; 150 at the paper's 30 fps x 5 s)
    S  audio samples per segment (music.audio_sample_rate * segment_seconds)
    H, W  rendered resolution (paper: 640 x 640)
    K  keypoints (18, the OpenPose/DWPose body order the skeleton is drawn in)
    M  heatmap side (64, M2PEnc's output size)

Every axis has a name (``ArraySpec.axes``), unique within its array and meaning one size
across the version, so xarray and tensorstore (which reject repeated dimension names) open every
array. docs/data-contract.md is the prose version of this table; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dancegen.config import DancegenConfig

CONTRACT_VERSION = 1
KEYPOINTS = 18
MUSIC_BASELINE_DIM = 35
JUKEBOX_DIM = 4800
EDGE_MOTION_DIM = 151
SEGMENT_AXIS = "segment"


@dataclass(frozen=True)
class ArraySpec:
    """One array of the contract. ``shape`` and ``axes`` exclude the leading segment axis."""

    name: str
    stage: str
    dtype: str
    shape: tuple[str | int, ...]
    axes: tuple[str, ...]
    description: str

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """Zarr ``dimension_names`` of the stored array (segment axis first)."""
        return (SEGMENT_AXIS, *self.axes)

    @property
    def per_frame(self) -> bool:
        """Whether the array is chunked by frames: an image per frame (maps, person frames,
        heatmaps), megabytes per segment. The small per-frame arrays (motion, music features,
        keypoints: kilobytes per segment) stay one chunk per segment, as chunks of a few
        frames of them would be a few hundred bytes each, costlier to write and read."""
        return self.shape[:1] == ("T",) and ("H" in self.shape or "M" in self.shape)

    def resolve(self, dims: dict[str, int]) -> tuple[int, ...]:
        """Concrete per-segment shape for the given dimension sizes."""
        return tuple(dims[d] if isinstance(d, str) else d for d in self.shape)

    @property
    def fill_value(self) -> float | int:
        """NaN for floats so that a never-written segment cannot pass for data."""
        return float("nan") if np.dtype(self.dtype).kind == "f" else 0


_SPECS = [
    # motion: AIST++ SMPL parameters resampled to the dataset fps; trans is NOT divided by scaling
    ArraySpec("motion/smpl_poses", "motion", "float32", ("T", 72), ("frame", "pose_param"),
              "SMPL axis-angle, 24 joints x 3, joint 0 = global orient (AIST++ Y-up world)"),
    ArraySpec("motion/smpl_trans", "motion", "float32", ("T", 3), ("frame", "xyz"),
              "root translation in AIST++ units (divide by smpl_scaling for metres)"),
    ArraySpec("motion/smpl_scaling", "motion", "float32", (1,), ("scale",),
              "AIST++ body scale of the sequence"),
    ArraySpec("motion/edge151", "edge_repr", "float32", ("T", EDGE_MOTION_DIM),
              ("frame", "edge_feature"),
              "EDGE representation: 4 foot contacts | root pos 3 | 24 x 6D rotation"),
    # music
    ArraySpec("music/audio", "music", "float32", ("S",), ("sample",),
              "mono waveform of the segment at music.audio_sample_rate, in [-1, 1]"),
    ArraySpec("music/baseline", "music", "float32", ("T", MUSIC_BASELINE_DIM),
              ("frame", "baseline_feature"),
              "EDGE baseline: onset env | MFCC 20 | chroma_cens 12 | onset peak | beat"),
    ArraySpec("music/beats", "music", "uint8", ("T",), ("frame",),
              "1 on frames with a librosa beat (same as baseline's last column)"),
    ArraySpec("music/jukebox", "jukebox", "float16", ("T", JUKEBOX_DIM),
              ("frame", "jukebox_feature"),
              "Jukebox 5B top-prior layer-66 features pooled to the dataset fps"),
    # rendered guidance (rendering stage)
    ArraySpec("maps/depth", "render", "float16", ("T", "H", "W"), ("frame", "y", "x"),
              "metric camera-space depth in metres, 0 = background"),
    ArraySpec("maps/normal", "render", "uint8", ("T", "H", "W", 3), ("frame", "y", "x", "rgb"),
              "camera-space normals encoded as (n * 0.5 + 0.5) * 255, 0 = background"),
    ArraySpec("maps/semantic", "render", "uint8", ("T", "H", "W"), ("frame", "y", "x"),
              "SMPL body-part label per pixel, 0 = background, 1..24 = parts"),
    ArraySpec("maps/skeleton", "render", "uint8", ("T", "H", "W", 3), ("frame", "y", "x", "rgb"),
              "skeleton image drawn with DWPose's limb colours"),
    ArraySpec("pose/keypoints2d", "render", "float32", ("T", "K", 3), ("frame", "keypoint", "xyv"),
              "x, y in pixels of the H x W image and visibility in [0, 1]"),
    ArraySpec("pose/heatmaps", "render", "float16", ("T", "K", "M", "M"),
              ("frame", "keypoint", "heatmap_y", "heatmap_x"),
              "Gaussian keypoint heatmaps at M x M (M2PEnc target)"),
    ArraySpec("video/frames", "render", "uint8", ("T", "H", "W", 3), ("frame", "y", "x", "rgb"),
              "RGB person frames (rendered stand-in, or decoded AIST++ video)"),
]

ARRAYS: dict[str, ArraySpec] = {spec.name: spec for spec in _SPECS}


def arrays_of(stage: str) -> list[ArraySpec]:
    """The arrays one stage writes (every array belongs to exactly one stage)."""
    return [spec for spec in _SPECS if spec.stage == stage]


def dims_for(config: DancegenConfig) -> dict[str, int]:
    """Resolve the symbolic dimensions of the contract from a config."""
    seconds = config.dataset.segment_seconds
    return {
        "T": config.dataset.segment_frames,
        "S": round(seconds * config.music.audio_sample_rate),
        "H": config.render.height,
        "W": config.render.width,
        "K": KEYPOINTS,
        "M": config.render.heatmap_size,
    }
