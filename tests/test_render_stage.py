"""The render stage on the stand-in body and choreography: geometry, not just shapes."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from dancegen.config import DancegenConfig
from dancegen.storage.aistpp import AistppInputs, InputRoots
from dancegen.storage.segments import Segment
from dancegen.tasks.camera import RenderCamera, sequence_camera
from dancegen.tasks.plan import plan_segments_from
from dancegen.tasks.pose2d import DWPOSE_COLORS
from dancegen.tasks.render_stage import (
    compute_render,
    load_worker_body,
    resolve_body_model,
)
from dancegen.tasks.segment_inputs import motion_window

FRAMES_CHECKED = (0, 40, 80, 120)


@pytest.fixture(scope="module")
def segment(fixtures_dir: Path) -> Segment:
    from dancegen.config import load_config

    config = load_config(Path(__file__).parents[1] / "configs/local-cpu.yaml")
    return next(s for s in plan_segments_from(str(fixtures_dir), config).segments
                if s.window == 1)


@pytest.fixture(scope="module")
def rendered(fixtures_dir: Path, segment: Segment) -> dict[str, np.ndarray]:
    from dancegen.config import load_config

    config = load_config(Path(__file__).parents[1] / "configs/local-cpu.yaml")
    arrays = compute_render([segment], InputRoots(AistppInputs(str(fixtures_dir))), config)
    return {name: values[0] for name, values in arrays.items()}


def camera_and_vertices(fixtures_dir: Path, segment: Segment, config: DancegenConfig,
                        frame: int) -> tuple[RenderCamera, np.ndarray, np.ndarray]:
    import torch

    inputs = AistppInputs(str(fixtures_dir))
    body = load_worker_body(resolve_body_model(inputs, config.render))
    window = motion_window(inputs.load_motion(segment.motion_file), segment.start_s,
                           config.dataset.segment_frames, config.dataset.fps)
    camera = sequence_camera(inputs, segment.sequence, config.render, window.scaling)
    with torch.no_grad():
        verts, _ = body.model(torch.from_numpy(window.poses[frame:frame + 1]),
                              torch.from_numpy(window.trans[frame:frame + 1]),
                              torch.full((1,), window.scaling))
    return camera, camera.to_camera(verts[0].cpu().numpy().astype(np.float64), window.scaling), \
        body.faces.cpu().numpy()


def test_every_output_has_the_contract_shape_and_a_body(rendered, config) -> None:
    h, w = config.render.height, config.render.width
    assert rendered["maps/depth"].shape == (150, h, w)
    assert rendered["pose/heatmaps"].shape == (150, 18, 64, 64)
    coverage = (rendered["maps/semantic"] > 0).mean(axis=(1, 2))
    assert (coverage > 0.01).all()  # the dancer is in every frame


def test_labels_depth_and_normals_agree_on_the_silhouette(rendered) -> None:
    mask = rendered["maps/semantic"] > 0
    assert np.array_equal(mask, rendered["maps/depth"] > 0)
    assert np.array_equal(mask, rendered["maps/normal"].any(axis=-1))
    normals = rendered["maps/normal"][mask].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=0.02)
    assert len(np.unique(rendered["maps/semantic"])) >= 15  # most body parts are seen


def test_normals_face_the_camera(rendered, fixtures_dir, segment, config) -> None:
    camera, _, _ = camera_and_vertices(fixtures_dir, segment, config, 0)
    for f in FRAMES_CHECKED:
        mask = rendered["maps/semantic"][f] > 0
        v, u = np.nonzero(mask)
        depth = rendered["maps/depth"][f][mask].astype(np.float64)
        K = camera.K
        points = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)],
                          axis=-1) * depth[:, None]
        normals = rendered["maps/normal"][f][mask].astype(np.float64) / 127.5 - 1.0
        assert ((normals * -points).sum(axis=-1) > 0).mean() > 0.97


def test_depth_matches_an_independent_renderer(rendered, fixtures_dir, segment, config) -> None:
    """pyrender (a different GL pipeline) sees the same mesh at the same depths."""
    import pyrender
    import trimesh

    frame = 60
    camera, verts_cam, faces = camera_and_vertices(fixtures_dir, segment, config, frame)
    K, size = camera.K, (config.render.width, config.render.height)
    scene = pyrender.Scene()
    mesh = trimesh.Trimesh(verts_cam * [1.0, -1.0, -1.0], faces, process=False)
    scene.add(pyrender.Mesh.from_trimesh(mesh))
    # pyrender puts pixel centres at +0.5 (OpenGL), dancegen at integers (OpenCV)
    scene.add(pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5,
                                        0.05, 100.0))
    renderer = pyrender.OffscreenRenderer(*size)
    try:
        theirs = renderer.render(scene, flags=pyrender.RenderFlags.DEPTH_ONLY)
    finally:
        renderer.delete()
    ours = rendered["maps/depth"][frame].astype(np.float32)
    both = (ours > 0) & (theirs > 0)
    union = (ours > 0) | (theirs > 0)
    assert both.sum() / union.sum() > 0.95  # same silhouette up to edge pixels
    assert np.median(np.abs(ours[both] - theirs[both])) < 0.005  # float16 at ~4.5 m: 2 mm
    assert np.percentile(np.abs(ours[both] - theirs[both]), 99) < 0.02


def test_visible_keypoints_fall_on_the_silhouette_and_heatmap_peaks(rendered, config) -> None:
    keypoints = rendered["pose/keypoints2d"]
    visible = keypoints[..., 2] > 0.5
    assert visible.mean() > 0.8
    pixels = np.rint(keypoints[..., :2]).astype(int)
    f_idx, k_idx = np.nonzero(visible)
    # joints sit inside limbs a few pixels wide at this size: allow the neighbouring pixel
    body = rendered["maps/semantic"] > 0
    near_body = body.copy()
    for axis in (1, 2):
        near_body |= np.roll(body, 1, axis) | np.roll(body, -1, axis)
    on_body = near_body[f_idx, pixels[f_idx, k_idx, 1], pixels[f_idx, k_idx, 0]]
    assert on_body.mean() > 0.99
    m, w = config.render.heatmap_size, config.render.width
    heat = rendered["pose/heatmaps"][f_idx, k_idx].reshape(len(f_idx), -1).astype(np.float32)
    peak = np.stack(np.unravel_index(heat.argmax(axis=1), (m, m)), axis=-1)  # (row, col)
    expected = np.rint((keypoints[f_idx, k_idx, :2] + 0.5) * m / w - 0.5)[:, ::-1]
    assert (np.abs(peak - expected) <= 1).all()
    hidden = rendered["pose/heatmaps"][~visible]
    assert not hidden.any()


def test_skeleton_is_drawn_at_the_keypoints(rendered) -> None:
    keypoints, skeleton = rendered["pose/keypoints2d"], rendered["maps/skeleton"]
    for f in FRAMES_CHECKED:
        for k in np.flatnonzero(keypoints[f, :, 2] > 0.5):
            x, y = keypoints[f, k, :2].astype(int)  # DWPose truncates
            assert skeleton[f, y, x].any(), f"keypoint {k} of frame {f} is not drawn"
        neck = keypoints[f, 1]
        if neck[2] > 0.5:  # the last disc drawn there is the neck's own colour
            colours = {tuple(c) for c in DWPOSE_COLORS}
            assert tuple(skeleton[f, int(neck[1]), int(neck[0])]) in colours


def test_person_frames_are_the_body_over_the_background(rendered, config) -> None:
    frames, mask = rendered["video/frames"], rendered["maps/semantic"] > 0
    background = np.array(config.render.background_rgb, np.uint8)
    assert (frames[~mask] == background).all()
    assert (frames[mask] != background).any(axis=-1).mean() > 0.99


def test_real_video_frames_replace_the_stand_in(inputs_copy: Path, config) -> None:
    """A 60-fps AIST++-style video is cut, centre-cropped and resized into video/frames."""
    segment = next(s for s in plan_segments_from(str(inputs_copy), config).segments
                   if s.window == 1)
    name = segment.sequence.replace("_cAll_", "_c09_")
    (inputs_copy / "videos").mkdir()
    width, height, fps = 256, 144, 60  # the centre crop (144 px) covers the 128-px frames
    writer = imageio_ffmpeg.write_frames(str(inputs_copy / f"videos/{name}.mp4"),
                                         (width, height), fps=fps, quality=9,
                                         macro_block_size=1)
    writer.send(None)
    for i in range(int(11 * fps)):
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = i // 3 % 256          # red ramps with time
        image[:, : (width - height) // 2] = 255  # left of the centre crop: must be cut away
        writer.send(image.tobytes())
    writer.close()
    roots = InputRoots(AistppInputs(str(inputs_copy)))
    frames = compute_render([segment], roots, config)["video/frames"][0]
    assert frames.shape == (150, config.render.height, config.render.width, 3)
    centre = frames[:, 64, 64].astype(int)
    expected = (np.arange(150) * 2 + 5 * fps) // 3 % 256  # 30 fps from 60, from t = 5 s
    assert np.abs(centre[:, 0] - expected).max() <= 6  # h264 rounding
    assert frames[..., 1].max() < 60  # the white band outside the crop is gone (no green)


def test_a_new_sequence_in_the_camera_mapping_changes_no_other_render_key(
        inputs_copy: Path, config: DancegenConfig) -> None:
    """AIST++ lists every sequence in cameras/mapping.txt: adding one must not re-render the
    rest (the key holds each sequence's own setting and video, and the setting files)."""
    from dancegen.tasks.stages import STAGES

    render = STAGES["render"]
    segments = plan_segments_from(str(inputs_copy), config).segments

    def keys() -> list[str]:
        shared = render.shared(InputRoots.parse(str(inputs_copy)), config)
        return [render.key([s], config, shared)["key"] for s in segments]

    mapping = inputs_copy / "cameras/mapping.txt"
    setting = mapping.read_text().split()[1]
    (inputs_copy / "cameras/other.json").write_bytes((inputs_copy / f"cameras/{setting}.json")
                                                     .read_bytes())
    before = keys()
    mapping.write_text(mapping.read_text() + f"gLO_sBM_cAll_d09_mLO1_ch09 {setting}\n")
    assert keys() == before
    first = segments[0].sequence
    mapping.write_text(mapping.read_text().replace(f"{first} {setting}", f"{first} other"))
    changed = [k != b for k, b in zip(keys(), before, strict=True)]
    assert changed == [s.sequence == first for s in segments]  # only its own segments
