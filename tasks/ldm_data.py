"""Training samples for the three LDM stages, read from the dataset store.

A batch is drawn with an explicit ``torch.Generator`` seeded from (seed, stage, step, rank):
the batch of step N is the same whether the run was interrupted or not, which is what makes
resume exact without saving any data-loader state. Segments are read whole (a zarr chunk is
one segment) and the last few are kept decoded per process, as a stage samples many clips
from few segments.

Guidance images follow CHAMP's inputs: four RGB images in [0, 1] per frame, in CHAMP's order
(depth, normal, semantic map, DWPose skeleton); background 0.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dancegen.config import DancegenConfig
from dancegen.errors import StoreError
from dancegen.models.m2penc import GRID
from dancegen.storage.dataset import DatasetStore
from dancegen.tasks.render_stage import SEMANTIC_PALETTE


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


class ClipSource:
    """Random clips of the train split of a dataset version."""

    def __init__(self, store_url: str, config: DancegenConfig) -> None:
        self.store = DatasetStore(store_url, config.dataset.version)
        self.music_array = f"music/{config.music.backend}"
        self.rows = [i for i, s in enumerate(self.store.segments()) if s.split == "train"]
        if not self.rows:
            raise StoreError(f"{store_url}: no train-split segments to train on")
        self.frames_per_segment = config.dataset.segment_frames

    @functools.lru_cache(maxsize=48)  # noqa: B019 - one ClipSource per worker process
    def _segment(self, name: str, row: int) -> np.ndarray:
        return self.store.read(name, row)

    def _pick(self, generator: torch.Generator, batch: int, frames: int) -> list[tuple[int, int]]:
        if frames > self.frames_per_segment:
            raise StoreError(f"{frames}-frame clips do not fit {self.frames_per_segment}-frame "
                             "segments")
        picks = []
        for _ in range(batch):
            row = self.rows[int(torch.randint(len(self.rows), (1,), generator=generator))]
            start = int(torch.randint(self.frames_per_segment - frames + 1, (1,),
                                      generator=generator))
            picks.append((row, start))
        return picks

    def _guidance(self, row: int, frames: slice) -> np.ndarray:
        return guidance_images(*(self._segment(f"maps/{m}", row)[frames]
                                 for m in ("depth", "normal", "semantic", "skeleton")))

    def batch(self, generator: torch.Generator, batch: int, frames: int,
              resolution: int | None = None, m2penc: bool = True,
              rendered_guidance: bool = True) -> dict[str, Tensor]:
        """Clips of ``frames`` consecutive frames.

        With ``m2penc``: music (B, F, D), guidance targets at 64x64 (B, F, 12, 64, 64),
        heatmaps (B, F, K, 64, 64). With a ``resolution``: video frames (B, 3, F, R, R) and a
        reference frame of the same segment (B, 3, R, R), both in [-1, 1], and (with
        ``rendered_guidance``) guidance images (B, 4, 3, F, R, R) in [0, 1].
        """
        picks = self._pick(generator, batch, frames)
        references = [int(torch.randint(self.frames_per_segment, (1,), generator=generator))
                      for _ in picks]
        windows = [(row, slice(start, start + frames)) for row, start in picks]
        guidance = torch.from_numpy(np.stack([self._guidance(r, w) for r, w in windows]))
        out: dict[str, Tensor] = {}
        if m2penc:
            out["music"] = torch.from_numpy(np.stack(
                [self._segment(self.music_array, r)[w] for r, w in windows]).astype(np.float32))
            out["guidance_64"] = resize_images(guidance.flatten(2, 3), GRID)
            out["heatmaps"] = resize_images(torch.from_numpy(np.stack(
                [self._segment("pose/heatmaps", r)[w] for r, w in windows])), GRID)
        if resolution is not None:
            video = torch.from_numpy(np.stack(
                [self._segment("video/frames", r)[w] for r, w in windows]))   # (B, F, H, W, 3)
            video = resize_images(video.permute(0, 1, 4, 2, 3).float() / 127.5 - 1, resolution)
            reference = torch.from_numpy(np.stack(
                [self._segment("video/frames", r)[i] for (r, _), i in zip(windows, references,
                                                                         strict=True)]))
            out["frames"] = video.transpose(1, 2)                                 # (B, 3, F, R, R)
            out["reference"] = resize_images(reference.permute(0, 3, 1, 2).float() / 127.5 - 1,
                                       resolution)
            if rendered_guidance:
                out["guidance"] = resize_images(guidance, resolution).permute(0, 2, 3, 1, 4, 5)
        return out


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize (..., H, W) to size x size (area when shrinking, bilinear when growing)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    lead = images.shape[:-2]
    flat = images.reshape(-1, 1, *images.shape[-2:]).float()  # channels folded: any rank
    mode = "area" if size < images.shape[-1] else "bilinear"
    out = F.interpolate(flat, size=(size, size), mode=mode)
    return out.view(*lead, size, size)
