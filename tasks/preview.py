"""A side-by-side picture of one frame's guidance, for eyes: ``dancegen dataset preview``."""

from __future__ import annotations

import cv2
import numpy as np

from dancegen.storage.dataset import DatasetStore
from dancegen.tasks.render_stage import semantic_rgb

PANELS = ("frame", "depth", "normal", "semantic", "skeleton", "heatmaps", "overlay")


def _depth_rgb(depth: np.ndarray) -> np.ndarray:
    """Near = bright; background black."""
    mask = depth > 0
    if not mask.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    near, far = depth[mask].min(), depth[mask].max()
    scaled = np.where(mask, 1.0 - (depth - near) / max(far - near, 1e-6), 0.0)
    colored = cv2.applyColorMap(np.uint8(scaled * 255), cv2.COLORMAP_INFERNO)[..., ::-1]
    return colored * mask[..., None]


def _heatmaps_rgb(heatmaps: np.ndarray, height: int, width: int) -> np.ndarray:
    total = np.clip(heatmaps.astype(np.float32).max(axis=0), 0, 1)
    big = cv2.resize(total, (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.applyColorMap(np.uint8(big * 255), cv2.COLORMAP_VIRIDIS)[..., ::-1]


def preview_frame(dataset: DatasetStore, segment: int, frame: int) -> np.ndarray:
    """Panels of one frame side by side (H, W * len(PANELS), 3), labelled."""
    read = {name: dataset.read(name, segment)[frame] for name in (
        "video/frames", "maps/depth", "maps/normal", "maps/semantic", "maps/skeleton",
        "pose/heatmaps")}
    rgb = read["video/frames"]
    height, width = rgb.shape[:2]
    skeleton = read["maps/skeleton"]
    overlay = np.where(skeleton.any(axis=-1, keepdims=True), skeleton, rgb // 2)
    panels = [rgb, _depth_rgb(read["maps/depth"].astype(np.float32)), read["maps/normal"],
              semantic_rgb(read["maps/semantic"]), skeleton,
              _heatmaps_rgb(read["pose/heatmaps"], height, width), overlay]
    image = np.concatenate(panels, axis=1).copy()
    scale = max(height / 256, 0.35)
    for i, name in enumerate(PANELS):
        cv2.putText(image, name, (i * width + 4, int(14 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image
