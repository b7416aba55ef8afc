"""tasks/pose2d: SMPL -> OpenPose-18 mapping, projection + visibility, heatmaps, DWPose skeleton."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.tasks.pose2d import (
    DWPOSE_COLORS,
    OPENPOSE18_NAMES,
    SMPL45_TO_OPENPOSE18,
    default_stickwidth,
    draw_skeleton,
    gaussian_heatmaps,
    keypoints2d,
    openpose18_from_smpl45,
    project,
)

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
W, H = 640, 480

# OpenPose-18 name -> smplx SMPL joint index, written out independently of the module's table.
EXPECTED_SOURCE = {
    "nose": 24, "right_shoulder": 17, "right_elbow": 19, "right_wrist": 21,
    "left_shoulder": 16, "left_elbow": 18, "left_wrist": 20,
    "right_hip": 2, "right_knee": 5, "right_ankle": 8,
    "left_hip": 1, "left_knee": 4, "left_ankle": 7,
    "right_eye": 25, "left_eye": 26, "right_ear": 27, "left_ear": 28,
}  # fmt: skip


def _synthetic_joints(batch: tuple[int, ...] = ()) -> np.ndarray:
    """(..., 45, 3) with joint j at (j, 100 + j, 200 + j), shifted per batch element."""
    base = np.arange(45, dtype=np.float32)[:, None] + np.float32([0, 100, 200])
    offsets = np.arange(int(np.prod(batch)), dtype=np.float32).reshape(*batch, 1, 1) * 1000
    return base + offsets


# --- mapping ---------------------------------------------------------------------------------


def test_openpose18_names_and_table_line_up() -> None:
    assert len(OPENPOSE18_NAMES) == 18 == len(SMPL45_TO_OPENPOSE18)
    assert OPENPOSE18_NAMES[:2] == ("nose", "neck")
    assert OPENPOSE18_NAMES[2] == "right_shoulder" and OPENPOSE18_NAMES[5] == "left_shoulder"


def test_mapping_picks_the_right_smpl_joints() -> None:
    joints = _synthetic_joints((2, 3))
    out = openpose18_from_smpl45(joints)
    assert out.shape == (2, 3, 18, 3) and out.dtype == np.float32
    for name, source in EXPECTED_SOURCE.items():
        k = OPENPOSE18_NAMES.index(name)
        np.testing.assert_array_equal(out[..., k, :], joints[..., source, :], err_msg=name)
    neck = out[..., OPENPOSE18_NAMES.index("neck"), :]
    np.testing.assert_allclose(neck, (joints[..., 16, :] + joints[..., 17, :]) / 2)
    # neck of joint values 16 and 17 is 16.5 on the first axis, for the first batch element
    assert neck[0, 0, 0] == pytest.approx(16.5)


def test_mapping_is_not_contaminated_by_unused_nan_joints() -> None:
    joints = _synthetic_joints()
    joints[35:] = np.nan  # fingertips are unused
    assert np.isfinite(openpose18_from_smpl45(joints)).all()


def test_mapping_rejects_wrong_joint_count() -> None:
    with pytest.raises(ValueError):
        openpose18_from_smpl45(np.zeros((24, 3)))


def test_smplx_extra_joints_are_in_the_order_the_mapping_assumes() -> None:
    """smplx appends vertices after the 24 joints: 24.. = nose, reye, leye, rear, lear, feet."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("smplx")
    from smplx.vertex_ids import vertex_ids
    from smplx.vertex_joint_selector import VertexJointSelector

    ids = vertex_ids["smplh"]  # what smplx's SMPL class uses when given no vertex_ids
    selector = VertexJointSelector(vertex_ids=ids)  # defaults: feet and fingertips on
    vertices = torch.arange(6890, dtype=torch.float32)[None, :, None].repeat(1, 1, 3)
    joints = torch.full((1, 24, 3), -1.0)
    out = selector(vertices, joints)[0, :, 0].numpy()
    assert out.shape == (45,)
    expected_extra = ["nose", "reye", "leye", "rear", "lear",
                      "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]  # fmt: skip
    for offset, name in enumerate(expected_extra):
        assert out[24 + offset] == ids[name], name
    assert out[35] == ids["lthumb"] and out[40] == ids["rthumb"]


# --- projection and visibility ---------------------------------------------------------------


def test_project_known_point() -> None:
    np.testing.assert_allclose(project(np.array([0.2, -0.1, 2.0]), K), [370.0, 215.0])
    on_axis = np.zeros((4, 5, 3))
    on_axis[..., 2] = 1.0
    np.testing.assert_allclose(project(on_axis, K), np.full((4, 5, 2), [320.0, 240.0]))


def _joints_at(points: dict[int, tuple[float, float, float]], frames: int = 1) -> np.ndarray:
    """(frames, 45, 3) joints all at (0, 0, 3) m (image centre) except the given ones."""
    joints = np.zeros((frames, 45, 3), dtype=np.float32) + np.float32([0, 0, 3])
    for index, point in points.items():
        joints[:, index] = point
    return joints


def test_keypoints2d_positions_and_visibility() -> None:
    nose, r_wrist, l_wrist = 24, 21, 20
    joints = _joints_at({nose: (0.2, -0.1, 2.0), r_wrist: (0.0, 0.0, -1.0), l_wrist: (5.0, 0, 1)})
    kp = keypoints2d(joints, K, W, H)
    assert kp.shape == (1, 18, 3) and kp.dtype == np.float32
    names = OPENPOSE18_NAMES
    np.testing.assert_allclose(kp[0, names.index("nose")], [370.0, 215.0, 1.0])
    # behind the camera: invisible, x, y still the projection formula's (mirrored) value
    rw = kp[0, names.index("right_wrist")]
    assert rw[2] == 0.0 and np.isfinite(rw[:2]).all()
    np.testing.assert_allclose(rw[:2], [320.0, 240.0])
    # in front but far right of the image: invisible, x kept
    lw = kp[0, names.index("left_wrist")]
    assert lw[2] == 0.0 and lw[0] == pytest.approx(320 + 2500)
    assert kp[0, names.index("left_knee"), 2] == 1.0


def test_keypoints2d_image_border() -> None:
    # x = 639.4 rounds to the last column (inside), 639.6 to column 640 (outside)
    inside = (639.4 - 320) / 500, 0.0, 1.0
    outside = (639.6 - 320) / 500, 0.0, 1.0
    kp = keypoints2d(_joints_at({24: inside, 25: outside}), K, W, H)
    assert kp[0, 0, 2] == 1.0 and kp[0, OPENPOSE18_NAMES.index("right_eye"), 2] == 0.0


def test_neck_is_the_2d_shoulder_midpoint_and_needs_both_shoulders() -> None:
    r_sh, l_sh = (-0.4, 0.0, 1.0), (0.4, 0.0, 3.0)  # different depths: 2D mean != 3D mean
    kp = keypoints2d(_joints_at({17: r_sh, 16: l_sh}), K, W, H)[0]
    neck = OPENPOSE18_NAMES.index("neck")
    np.testing.assert_allclose(kp[neck, :2], [(120.0 + 320 + 500 * 0.4 / 3) / 2, 240.0])
    assert kp[neck, 2] == 1.0
    kp = keypoints2d(_joints_at({17: (-0.4, 0.0, -1.0), 16: l_sh}), K, W, H)[0]
    assert kp[neck, 2] == 0.0 and kp[OPENPOSE18_NAMES.index("left_shoulder"), 2] == 1.0


def test_occlusion_by_depth_map() -> None:
    # nose at pixel (370, 215), z = 2 m; each frame puts a different surface at that pixel
    joints = _joints_at({24: (0.2, -0.1, 2.0)}, frames=4)
    depth = np.zeros((4, H, W), dtype=np.float16)
    depth[0, 215, 370] = 1.0  # a surface 1 m in front: hidden
    depth[1, 215, 370] = 1.95  # the body's own surface 5 cm in front: within the margin
    depth[2, 215, 370] = 0.0  # background: nothing in front
    depth[3, 215, 370] = 2.5  # the surface is behind the joint
    kp = keypoints2d(joints, K, W, H, depth=depth, occlusion_margin=0.12)
    np.testing.assert_array_equal(kp[:, 0, 2], [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(kp[0, 0, :2], [370.0, 215.0])  # hidden: x, y kept
    # just outside the margin
    depth[1, 215, 370] = 1.85
    assert keypoints2d(joints, K, W, H, depth=depth)[1, 0, 2] == 0.0


def test_occlusion_rejects_a_depth_map_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        keypoints2d(_joints_at({}), K, W, H, depth=np.zeros((1, W, H)))


# --- heatmaps --------------------------------------------------------------------------------


def test_heatmaps_peak_at_the_keypoint_pixel() -> None:
    rng = np.random.default_rng(0)
    kp = np.zeros((3, 18, 3), dtype=np.float32)
    kp[..., 0] = rng.uniform(0, W - 1, (3, 18))
    kp[..., 1] = rng.uniform(0, H - 1, (3, 18))
    kp[..., 2] = 1.0
    kp[1, 4, 2] = 0.0  # invisible
    kp[2, 7, 2] = 0.2  # below DWPose's 0.3 threshold
    maps = gaussian_heatmaps(kp, W, H, size=64, sigma=1.5)
    assert maps.shape == (3, 18, 64, 64) and maps.dtype == np.float16
    expected_col = np.round((kp[..., 0] + 0.5) * 64 / W - 0.5).astype(int)
    expected_row = np.round((kp[..., 1] + 0.5) * 64 / H - 0.5).astype(int)
    for t in range(3):
        for k in range(18):
            if (t, k) in {(1, 4), (2, 7)}:
                assert not maps[t, k].any()
                continue
            row, col = np.unravel_index(np.argmax(maps[t, k]), (64, 64))
            assert (row, col) == (expected_row[t, k], expected_col[t, k])
            assert maps[t, k, row, col] == 1.0
    assert (maps >= 0).all() and (maps <= 1).all()


def test_heatmap_known_values() -> None:
    # image pixel 4.5 is the centre of heatmap pixel 0 at 640 -> 64 (10 image px per heatmap px)
    kp = np.zeros((18, 3), dtype=np.float32)
    kp[0] = [4.5 + 10 * 20, 4.5 + 10 * 30, 1.0]  # heatmap (col 20, row 30) exactly
    maps = gaussian_heatmaps(kp, 640, 640, size=64, sigma=1.5).astype(np.float32)
    assert maps[0, 30, 20] == 1.0
    assert maps[0, 30, 21] == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-3)
    assert maps[0, 32, 22] == pytest.approx(np.exp(-8 / (2 * 1.5**2)), rel=1e-3)
    assert maps[0, 0, 0] == 0.0
    assert not maps[1:].any()  # the other keypoints have visibility 0


# --- skeleton --------------------------------------------------------------------------------

NAME = {name: k for k, name in enumerate(OPENPOSE18_NAMES)}


def _dim(color: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(int(c * 0.6) for c in color)  # 255 -> 153, 170 -> 102, 85 -> 51


def _pose() -> np.ndarray:
    """A standing figure on 512 x 512, limbs axis-aligned where a test looks at them."""
    kp = np.zeros((18, 3), dtype=np.float32)
    positions = {
        "nose": (256, 60), "neck": (256, 100),
        "right_shoulder": (156, 100), "right_elbow": (156, 180), "right_wrist": (156, 250),
        "left_shoulder": (356, 100), "left_elbow": (356, 180), "left_wrist": (420, 244),
        "right_hip": (206, 280), "right_knee": (206, 380), "right_ankle": (206, 470),
        "left_hip": (306, 280), "left_knee": (306, 380), "left_ankle": (306, 470),
        "right_eye": (240, 50), "left_eye": (272, 50), "right_ear": (226, 56),
        "left_ear": (286, 56),
    }  # fmt: skip
    for name, (x, y) in positions.items():
        kp[NAME[name]] = [x + 0.25, y + 0.25, 1.0]  # off the integer grid, as real ones are
    return kp


def test_skeleton_limb_midpoints_have_dimmed_limb_colours() -> None:
    img = draw_skeleton(_pose(), 512, 512)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    # limb 0: neck -> right shoulder, horizontal, colour (255, 0, 0) * 0.6
    assert tuple(img[100, 206]) == (153, 0, 0)
    assert tuple(img[103, 206]) == (153, 0, 0)  # within the 4 px half-width
    assert not img[107, 206].any()  # beyond it
    # limb 2: right shoulder -> right elbow, vertical, colours[2] = (255, 170, 0)
    assert tuple(img[140, 156]) == (153, 102, 0)
    assert tuple(img[110, 156]) == (153, 102, 0)  # along the limb's long axis
    assert not img[140, 163].any()  # across it
    # limb 7: right hip -> right knee, colours[7] = (0, 255, 85)
    assert tuple(img[330, 206]) == (0, 153, 51)
    # limb 5: left elbow (356, 180) -> left wrist (420, 244), diagonal, colours[5]
    assert tuple(img[212, 388]) == _dim(DWPOSE_COLORS[5])
    assert tuple(img[230, 406]) == _dim(DWPOSE_COLORS[5])  # on the axis, 18 px further
    assert not img[194, 406].any()  # the other diagonal: the angle's sign is right


def test_skeleton_keypoints_have_full_colours_on_top() -> None:
    kp = _pose()
    img = draw_skeleton(kp, 512, 512)
    for k in range(18):
        x, y = int(kp[k, 0]), int(kp[k, 1])
        assert tuple(img[y, x]) == DWPOSE_COLORS[k], OPENPOSE18_NAMES[k]
    # radius 4 around the neck (256, 100): drawn over the limbs, in the neck's colour
    assert tuple(img[100, 260]) == DWPOSE_COLORS[1]
    assert tuple(img[100, 251]) == _dim(DWPOSE_COLORS[0])  # limb 0 (neck -> R shoulder) beyond
    assert tuple(img[100, 261]) == _dim(DWPOSE_COLORS[1])  # limb 1 (neck -> L shoulder) beyond


def test_skeleton_truncates_coordinates_like_dwpose() -> None:
    kp = np.zeros((18, 3), dtype=np.float32)
    kp[0] = [100.9, 50.9, 1.0]  # int() -> (100, 50), not the rounded (101, 51)
    img = draw_skeleton(kp, 512, 512)
    assert tuple(img[50, 96]) == DWPOSE_COLORS[0] and tuple(img[50, 104]) == DWPOSE_COLORS[0]
    assert not img[50, 105].any() and not img[50, 95].any()


def test_skeleton_invisible_keypoint_draws_nothing() -> None:
    kp = _pose()
    kp[NAME["left_wrist"], 2] = 0.0
    img = draw_skeleton(kp, 512, 512)
    assert not img[244, 420].any() and not img[241:248, 417:424].any()
    assert not img[212, 388].any()  # limb 5, left elbow -> left wrist, is gone
    assert tuple(img[180, 356]) == DWPOSE_COLORS[NAME["left_elbow"]]  # the elbow itself stays


def test_skeleton_palette_and_black_background() -> None:
    kp = _pose()
    img = draw_skeleton(kp, 512, 512)
    colours = {tuple(c) for c in np.unique(img.reshape(-1, 3), axis=0)}
    # DWPose draws 17 limbs; the ear -> shoulder pairs are listed but never drawn
    allowed = {(0, 0, 0)} | set(DWPOSE_COLORS) | {_dim(c) for c in DWPOSE_COLORS[:17]}
    assert colours <= allowed  # no anti-aliasing, no blending
    assert _dim(DWPOSE_COLORS[17]) not in colours
    assert not img[:40].any() and not img[:, :140].any() and not img[:, 440:].any()
    assert not img[480:].any()
    # the belly between limbs 6 and 9 (neck -> right / left hip, diagonals)
    assert not img[190:270, 240:272].any()


def test_skeleton_nothing_visible_is_black() -> None:
    kp = _pose()
    kp[:, 2] = 0.3  # DWPose needs a score strictly above 0.3
    assert not draw_skeleton(kp, 256, 320).any()


def test_skeleton_width_scales_with_image_size() -> None:
    assert default_stickwidth(512, 512) == 4
    assert default_stickwidth(640, 640) == 5
    assert default_stickwidth(1024, 768) == 8
    assert default_stickwidth(64, 64) == 1
    kp = np.zeros((18, 3), dtype=np.float32)
    kp[1] = [512.25, 200.25, 1.0]  # neck
    kp[2] = [312.25, 200.25, 1.0]  # right shoulder: limb 0, horizontal
    img = draw_skeleton(kp, 1024, 1024)
    assert tuple(img[207, 412]) == (153, 0, 0) and not img[210, 412].any()
    thin = draw_skeleton(kp, 1024, 1024, stickwidth=2, radius=3)
    assert not thin[204, 412].any() and tuple(thin[202, 412]) == (153, 0, 0)
    assert tuple(thin[200, 515]) == DWPOSE_COLORS[1] and tuple(thin[200, 516]) != DWPOSE_COLORS[1]
