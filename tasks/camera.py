"""Cameras for rendering: AIST++ settings (C09 in the paper) or a configured fallback.

The rendered image is the centre crop of the camera's sensor to the output aspect, resized to
the output resolution (AIST++ 1920x1080 -> 1080x1080 -> 640x640); that is applied to the
intrinsics, so the renderer draws straight at the output size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from dancegen.config import RenderConfig
from dancegen.errors import InputError
from dancegen.storage.aistpp import AistppInputs


def look_at(eye: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (rvec, t) of an OpenCV camera at ``eye`` looking at ``target`` (Y up).

    OpenCV axes: +Z_cam forward, +X_cam right, +Y_cam down, so ``x_cam = R(rvec) @ X + t``.
    """
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    return Rotation.from_matrix(rotation).as_rotvec(), -rotation @ eye


def crop_intrinsics(K: np.ndarray, sensor: tuple[int, int], width: int, height: int) -> np.ndarray:
    """Intrinsics after a centre crop of ``sensor`` (w, h) to the output aspect and a resize."""
    sensor_w, sensor_h = sensor
    crop_w = min(sensor_w, sensor_h * width / height)
    crop_h = crop_w * height / width
    scale = width / crop_w
    out = np.array(K, dtype=np.float64)
    # pixel centres: shift and scale the continuous coordinate u + 0.5, then back
    out[0, 2] = (K[0, 2] + 0.5 - (sensor_w - crop_w) / 2) * scale - 0.5
    out[1, 2] = (K[1, 2] + 0.5 - (sensor_h - crop_h) / 2) * scale - 0.5
    out[0, 0], out[1, 1] = K[0, 0] * scale, K[1, 1] * scale
    return out


@dataclass(frozen=True)
class RenderCamera:
    """A camera at the output resolution: world (AIST++ units) -> camera -> pixels."""

    K: np.ndarray          # (3, 3) at the output resolution
    rotation: np.ndarray   # (3, 3) world -> camera
    translation: np.ndarray  # (3,) world units
    name: str

    def to_camera(self, points_world: np.ndarray, scaling: float) -> np.ndarray:
        """World points (..., 3) in AIST++ units to camera coordinates in metres."""
        return (points_world @ self.rotation.T + self.translation) / scaling


def sequence_camera(inputs: AistppInputs, sequence: str, render: RenderConfig,
                    scaling: float) -> RenderCamera:
    """The configured AIST++ camera of the sequence's setting; the fallback camera only for
    inputs without camera files (a bad mapping or setting file is an error, not a fallback)."""
    cameras = None
    if "cameras/mapping.txt" in inputs.camera_files():
        cameras = inputs.cameras(sequence)
    if cameras is not None:
        if render.camera not in cameras:
            raise InputError(f"camera {render.camera!r} not in the setting of {sequence}: "
                             f"has {sorted(cameras)}")
        cam = cameras[render.camera]
        return RenderCamera(crop_intrinsics(cam.matrix, cam.size, render.width, render.height),
                            Rotation.from_rotvec(cam.rotation).as_matrix(), cam.translation,
                            cam.name)
    fb = render.fallback_camera
    eye = np.array([0.0, fb.height_m, fb.distance_m]) * scaling
    rvec, t = look_at(eye, np.array([0.0, fb.look_at_height_m, 0.0]) * scaling)
    K = np.array([[fb.focal_px, 0, (fb.sensor_width - 1) / 2],
                  [0, fb.focal_px, (fb.sensor_height - 1) / 2], [0, 0, 1]])
    return RenderCamera(
        crop_intrinsics(K, (fb.sensor_width, fb.sensor_height), render.width, render.height),
        Rotation.from_rotvec(rvec).as_matrix(), t, "fallback")
