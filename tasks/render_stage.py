"""The render stage: SMPL motion -> depth, normal, semantic, skeleton, keypoints, heatmaps, frames.

A worker sets the stage up once (:func:`setup_render`: the body model and a GL renderer on the
GPU Ray gave it) and then renders shard after shard with that :class:`RenderWorker`. Per
segment, the SMPL forward pass is batched over all its frames; per frame, only one draw call.
The RGB "person video" is the shaded body over a plain background: a labelled stand-in for
AIST++ video frames.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch

from dancegen.config import DancegenConfig, RenderConfig
from dancegen.errors import InputError
from dancegen.models.smpl import SMPLBody, vertex_part_labels
from dancegen.storage.aistpp import AistppInputs, InputRoots, Motion
from dancegen.storage.body_model import body_model_version, load_body_model
from dancegen.storage.contract import arrays_of, dims_for
from dancegen.storage.segments import Segment
from dancegen.tasks.camera import RenderCamera, sequence_camera
from dancegen.tasks.pose2d import draw_skeleton, gaussian_heatmaps, keypoints2d
from dancegen.tasks.renderer import GuidanceRenderer
from dancegen.tasks.segment_inputs import motion_window
from dancegen.tasks.video_frames import video_frames

# Colour of each SMPL part label (0 = background) in semantic guidance images: a fixed
# 25-entry table, so that label maps and their colour rendering can be converted both ways.
SEMANTIC_PALETTE = np.array(
    [[0, 0, 0],
     [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
     [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
     [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128],
     [255, 105, 97], [119, 221, 119], [174, 198, 207], [253, 253, 150]], dtype=np.uint8)

# Clothing of the stand-in "person video", by SMPL part label (joint index + 1).
_SKIN, _SHIRT, _PANTS, _SHOES = (0.87, 0.68, 0.56), (0.20, 0.45, 0.75), (0.15, 0.15, 0.22), (
    0.9, 0.9, 0.9)
_CLOTHING = {1: _PANTS, 2: _PANTS, 3: _PANTS, 4: _SHIRT, 5: _PANTS, 6: _PANTS, 7: _SHIRT,
             8: _SHOES, 9: _SHOES, 10: _SHIRT, 11: _SHOES, 12: _SHOES, 13: _SKIN, 14: _SHIRT,
             15: _SHIRT, 16: _SKIN, 17: _SHIRT, 18: _SHIRT, 19: _SHIRT, 20: _SHIRT,
             21: _SKIN, 22: _SKIN, 23: _SKIN, 24: _SKIN}
PERSON_COLORS = np.array([(0.0, 0.0, 0.0)] + [_CLOTHING[i] for i in range(1, 25)], np.float32)


def semantic_rgb(labels: np.ndarray) -> np.ndarray:
    """Colour a label map (..., H, W) with :data:`SEMANTIC_PALETTE`."""
    return SEMANTIC_PALETTE[labels]


def resolve_body_model(inputs: AistppInputs, render: RenderConfig) -> str:
    """The body model's location: as configured, or under the inputs root when relative."""
    location = render.body_model
    if "://" in location or location.startswith("/"):
        return location
    return inputs.location.child(location).url


@dataclass(frozen=True)
class WorkerBody:
    """A loaded body model with what the renderer needs from it."""

    model: SMPLBody          # on the worker's GPU when it has one
    faces: torch.Tensor      # (F, 3) int64, on the model's device
    part_labels: np.ndarray  # (V,) uint8, 1..24
    version: str             # change token of the file (size + mtime / ETag)


def load_worker_body(location: str) -> WorkerBody:
    """Load the body model at ``location`` onto this process's GPU (or CPU) for rendering."""
    version = body_model_version(location)
    data = load_body_model(location)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SMPLBody(data).eval().to(device)
    return WorkerBody(model, model.faces, vertex_part_labels(data.weights), version)


def batched_vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals of (T, V, 3) vertices, all frames at once."""
    tri = vertices[:, faces]                                   # (T, F, 3, 3)
    face_normals = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    normals = torch.zeros_like(vertices)
    for corner in range(3):
        normals.index_add_(1, faces[:, corner], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1)


def empty_render_arrays(count: int, config: DancegenConfig) -> dict[str, np.ndarray]:
    """Zeroed arrays of the render stage for ``count`` segments, shaped by the contract."""
    dims = dims_for(config)
    return {spec.name: np.zeros((count, *spec.resolve(dims)), spec.dtype)
            for spec in arrays_of("render")}


def _pose(body: WorkerBody, window: Motion, camera: RenderCamera) -> tuple[np.ndarray, ...]:
    """Batched SMPL forward of a window -> camera-space vertices, normals, joints (metres)."""
    with torch.no_grad():
        verts, joints = body.model(torch.from_numpy(window.poses), torch.from_numpy(window.trans),
                                   torch.full((len(window.poses),), window.scaling))
        rotation = torch.from_numpy(camera.rotation).to(verts)
        translation = torch.from_numpy(camera.translation).to(verts)
        verts_cam = (verts @ rotation.T + translation) / window.scaling
        joints_cam = (joints @ rotation.T + translation) / window.scaling
        normals = batched_vertex_normals(verts_cam, body.faces)
    return verts_cam.cpu().numpy(), normals.cpu().numpy(), joints_cam.cpu().numpy()


def check_body_in_frames(labels: np.ndarray, segment: Segment) -> None:
    """Refuse a segment with a frame that shows no body pixel (``labels``: its (T, H, W) part
    labels). Such frames are silently wrong data: the body is outside the camera, e.g. a
    motion with the wrong scaling or translation, and every map of the frame is background."""
    empty = np.flatnonzero(~labels.reshape(len(labels), -1).any(axis=1))
    if empty.size:
        raise InputError(
            f"segment {segment.id}: {empty.size} of {len(labels)} rendered frames show no body "
            f"(first: frame {empty[0]}); it lies outside the camera: check the motion's "
            "smpl_scaling and smpl_trans and the sequence's camera setting")


def _render_segment(out: dict[str, np.ndarray], i: int, segment: Segment, window: Motion,
                    body: WorkerBody, renderer: GuidanceRenderer, inputs: AistppInputs,
                    config: DancegenConfig) -> None:
    """Fill row ``i`` of every render array for one segment."""
    render = config.render
    camera = sequence_camera(inputs, segment.sequence, render, window.scaling)
    verts_cam, normals, joints_cam = _pose(body, window, camera)
    depth = np.zeros(out["maps/depth"].shape[1:], np.float32)  # full precision for occlusion
    for f in range(len(verts_cam)):
        frame = renderer.render(verts_cam[f], camera.K, normals[f])
        depth[f] = frame.depth
        out["maps/normal"][i, f] = frame.normal_rgb
        out["maps/semantic"][i, f] = frame.labels
        out["video/frames"][i, f] = frame.rgb
    check_body_in_frames(out["maps/semantic"][i], segment)
    out["maps/depth"][i] = depth
    keypoints = keypoints2d(joints_cam, camera.K, render.width, render.height, depth,
                            render.occlusion_margin_m)
    out["pose/keypoints2d"][i] = keypoints
    out["pose/heatmaps"][i] = gaussian_heatmaps(keypoints, render.width, render.height,
                                                render.heatmap_size, render.heatmap_sigma)
    for f, frame_keypoints in enumerate(keypoints):
        out["maps/skeleton"][i, f] = draw_skeleton(frame_keypoints, render.width, render.height)
    real = video_frames(inputs, segment.sequence, render.camera, segment.start_s,
                        len(verts_cam), config.dataset.fps, render.width, render.height)
    if real is not None:  # a real AIST++ video replaces the rendered stand-in
        out["video/frames"][i] = real


@dataclass
class RenderWorker:
    """The render stage set up in one worker process: a body model and a GL renderer, used
    for every shard the worker renders."""

    body: WorkerBody
    renderer: GuidanceRenderer

    def __call__(self, segments: list[Segment], roots: InputRoots,
                 config: DancegenConfig) -> dict[str, np.ndarray]:
        """Render every frame of every segment of a shard (roots: where their files are)."""
        data = config.dataset
        out = empty_render_arrays(len(segments), config)
        motions = {}
        for i, segment in enumerate(segments):
            inputs, key = roots.of(segment), (segment.source, segment.motion_file)
            if key not in motions:
                motions[key] = inputs.load_motion(segment.motion_file)
            window = motion_window(motions[key], segment.start_s, data.segment_frames, data.fps)
            _render_segment(out, i, segment, window, self.body, self.renderer, inputs, config)
        return out

    def close(self) -> None:
        """Release the GL context."""
        self.renderer.close()


def render_setup_identity(roots: InputRoots, config: DancegenConfig) -> Hashable:
    """What a :class:`RenderWorker` is built from: a worker sets up again only when it
    changes (another body model file, or the file changed; another image size or platform)."""
    render = config.render
    location = resolve_body_model(roots.primary, render)
    return (location, body_model_version(location), render.width, render.height,
            render.platform, tuple(render.background_rgb))


def setup_render(roots: InputRoots, config: DancegenConfig) -> RenderWorker:
    """Load the body model and open the GL renderer (EGL on the worker's GPU, else OSMesa)."""
    render = config.render
    body = load_worker_body(resolve_body_model(roots.primary, render))
    renderer = GuidanceRenderer(
        render.width, render.height, body.faces.cpu().numpy(), body.part_labels,
        PERSON_COLORS, np.array(render.background_rgb, np.uint8),
        None if render.platform == "auto" else render.platform,
    )
    return RenderWorker(body, renderer)


def compute_render(
    segments: list[Segment], roots: InputRoots, config: DancegenConfig
) -> dict[str, np.ndarray]:
    """Render one shard with a render worker of its own, closed afterwards (for one-off use:
    stage workers keep theirs, see tasks/stage_worker.py)."""
    worker = setup_render(roots, config)
    try:
        return worker(segments, roots, config)
    finally:
        worker.close()
