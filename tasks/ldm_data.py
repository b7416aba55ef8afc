"""Training samples for the three LDM stages, read from the dataset store.

Samples come from one immutable snapshot of the dataset (storage/snapshot.py), the one current
when the stage started (recorded in its checkpoints), so a build during training changes
nothing it reads. A batch is drawn with an explicit ``torch.Generator`` seeded from (seed,
stage, step, rank): the batch of step N is the same whether the run was interrupted or not,
which is what makes resume exact without saving any data-loader state. A ``DataLoader`` reads
the batches in ``training.loader.workers`` processes, ahead of the training loop; each sample
reads only its frames (the store's chunks are a few frames).

Guidance images follow CHAMP's inputs: four RGB images in [0, 1] per frame, in CHAMP's order
(depth, normal, semantic map, DWPose skeleton); background 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dancegen.config import DancegenConfig
from dancegen.errors import StoreError
from dancegen.models.m2penc import GRID
from dancegen.storage.snapshot import DatasetSnapshot
from dancegen.tasks.render_stage import SEMANTIC_PALETTE
from dancegen.tasks.step_loader import step_loader

MAPS = ("depth", "normal", "semantic", "skeleton")  # CHAMP's guidance order


def depth_image(depth: np.ndarray) -> np.ndarray:
    """(T, H, W) metres, 0 = background -> (T, H, W, 3) grey in [0, 1], near bright.

    Per frame, the body's nearest point is 1.0 and its farthest 0.2, so the image shows
    relative depth whatever the camera distance (as monocular depth maps CHAMP trains on).
    """
    depth = depth.astype(np.float32)
    body = depth > 0
    far = np.where(body, depth, -np.inf).max(axis=(1, 2), keepdims=True)
    near = np.where(body, depth, np.inf).min(axis=(1, 2), keepdims=True)
    span = np.where(np.isfinite(far - near), np.maximum(far - near, 1e-6), 1.0)
    grey = np.where(body, 1.0 - 0.8 * (depth - near) / span, 0.0)
    return np.repeat(grey[..., None], 3, axis=-1)


def guidance_images(depth: np.ndarray, normal: np.ndarray, semantic: np.ndarray,
                    skeleton: np.ndarray) -> np.ndarray:
    """Rendered maps of T frames -> (T, 4, 3, H, W) float32 guidance images in [0, 1]."""
    images = [depth_image(depth), normal / 255.0, SEMANTIC_PALETTE[semantic] / 255.0,
              skeleton / 255.0]
    return np.stack(images, axis=1).astype(np.float32).transpose(0, 1, 4, 2, 3)


@dataclass(frozen=True)
class ClipRequest:
    """One sample: ``frames`` frames of row ``row`` from ``start``, and a reference frame."""

    row: int
    start: int
    frames: int
    reference: int


@dataclass(frozen=True)
class SampleSpec:
    """What each sample of a stage holds (see :meth:`ClipDataset.__getitem__`)."""

    resolution: int | None = None
    m2penc: bool = True
    rendered_guidance: bool = True


class ClipDataset(torch.utils.data.Dataset):
    """Training samples of one snapshot, indexed by :class:`ClipRequest`.

    Each request reads only the frames it uses: the store's chunks are a few frames
    (``storage.chunk_frames``), so a single-frame sample of the image stage decodes about
    that many frames of each array, not the whole segment. Picklable: DataLoader workers
    each open the arrays once.
    """

    def __init__(self, snapshot: DatasetSnapshot, music_array: str, spec: SampleSpec) -> None:
        self.snapshot, self.music_array, self.spec = snapshot, music_array, spec

    def _read(self, request: ClipRequest) -> dict[str, np.ndarray]:
        """Every array the sample needs, read concurrently: only the request's frames."""
        window = slice(request.start, request.start + request.frames)
        names = [f"maps/{m}" for m in MAPS]
        if self.spec.m2penc:
            names += [self.music_array, "pose/heatmaps"]
        reads = [(name, request.row, window) for name in names]
        if self.spec.resolution is not None:
            reads += [("video/frames", request.row, window),
                      ("video/frames", request.row, request.reference)]
            names += ["video/frames", "reference"]
        return dict(zip(names, self.snapshot.read_many(reads), strict=True))

    def __getitem__(self, request: ClipRequest) -> dict[str, Tensor]:
        """With ``m2penc``: music (F, D), guidance targets at 64x64 (F, 12, 64, 64), heatmaps
        (F, K, 64, 64). With a ``resolution`` R: video frames (3, F, R, R) and the reference
        frame (3, R, R) in [-1, 1] and (with ``rendered_guidance``) guidance images
        (4, 3, F, R, R) in [0, 1]."""
        spec, data = self.spec, self._read(request)
        guidance = torch.from_numpy(guidance_images(*(data[f"maps/{m}"] for m in MAPS)))
        out: dict[str, Tensor] = {}                                   # guidance (F, 4, 3, H, W)
        if spec.m2penc:
            out["music"] = torch.from_numpy(data[self.music_array].astype(np.float32))
            out["guidance_64"] = resize_images(guidance.flatten(1, 2), GRID)
            out["heatmaps"] = resize_images(torch.from_numpy(data["pose/heatmaps"]), GRID)
        if spec.resolution is not None:
            video = torch.from_numpy(data["video/frames"])               # (F, H, W, 3)
            video = resize_images(video.permute(0, 3, 1, 2).float() / 127.5 - 1,
                                  spec.resolution)
            out["frames"] = video.transpose(0, 1)                          # (3, F, R, R)
            reference = torch.from_numpy(data["reference"])
            out["reference"] = resize_images(reference.permute(2, 0, 1).float() / 127.5 - 1,
                                             spec.resolution)
            if spec.rendered_guidance:
                out["guidance"] = resize_images(guidance, spec.resolution).permute(1, 2, 0, 3, 4)
        return out

    def __len__(self) -> int:  # requests come from the sampler; this is the row count
        return len(self.snapshot.table.rows)


def _collate(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


class ClipSource:
    """Random clips of the train split of one snapshot of a dataset version."""

    def __init__(self, store_url: str, config: DancegenConfig,
                 snapshot_id: str | None = None) -> None:
        self.snapshot = DatasetSnapshot.open(store_url, config.dataset.version, snapshot_id)
        self.music_array = f"music/{config.music.backend}"
        self.rows = [row for row, _ in self.snapshot.segments("train")]
        if not self.rows:
            raise StoreError(f"{store_url}: no train-split segments in snapshot "
                             f"{self.snapshot.id}")
        self.frames_per_segment = config.dataset.segment_frames
        self.loader_settings = config.training.loader

    def requests(self, generator: torch.Generator, batch: int, frames: int
                 ) -> list[ClipRequest]:
        """``batch`` random clips of ``frames`` frames, each with a random reference frame."""
        if frames > self.frames_per_segment:
            raise StoreError(f"{frames}-frame clips do not fit {self.frames_per_segment}-frame "
                             "segments")
        picks = []
        for _ in range(batch):
            row = self.rows[int(torch.randint(len(self.rows), (1,), generator=generator))]
            start = int(torch.randint(self.frames_per_segment - frames + 1, (1,),
                                      generator=generator))
            picks.append((row, start))
        references = [int(torch.randint(self.frames_per_segment, (1,), generator=generator))
                      for _ in picks]
        return [ClipRequest(row, start, frames, ref)
                for (row, start), ref in zip(picks, references, strict=True)]

    def dataset(self, spec: SampleSpec) -> ClipDataset:
        """The samples of this source for one stage."""
        return ClipDataset(self.snapshot, self.music_array, spec)

    def batch(self, generator: torch.Generator, batch: int, frames: int,
              resolution: int | None = None, m2penc: bool = True,
              rendered_guidance: bool = True) -> dict[str, Tensor]:
        """One batch read in this process (see :meth:`ClipDataset.__getitem__`; batched)."""
        samples = self.dataset(SampleSpec(resolution, m2penc, rendered_guidance))
        return _collate([samples[r] for r in self.requests(generator, batch, frames)])

    def loader(self, spec: SampleSpec, draw: Callable[[int], list[ClipRequest]],
               start_step: int, steps: int) -> torch.utils.data.DataLoader:
        """A DataLoader of the batches of steps ``start_step`` to ``steps``, read by
        ``training.loader.workers`` processes ``prefetch`` batches ahead (0 workers: read
        in this process)."""
        return step_loader(self.dataset(spec), draw, start_step, steps, self.loader_settings,
                           _collate)


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize (..., H, W) to size x size (area when shrinking, bilinear when growing)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    lead = images.shape[:-2]
    flat = images.reshape(-1, 1, *images.shape[-2:]).float()  # channels folded: any rank
    mode = "area" if size < images.shape[-1] else "bilinear"
    out = F.interpolate(flat, size=(size, size), mode=mode)
    return out.view(*lead, size, size)
