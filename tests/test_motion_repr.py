"""Tests for EDGE's motion representation: rotations, FK, contacts, the 151-d vector, resampling
and long-form stitching. Independent references come from scipy's ``Rotation``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from dancegen.models.motion_repr import (
    CONTACT_THRESHOLD,
    EDGE_MOTION_DIM,
    FOOT_JOINTS,
    SMPL_OFFSETS,
    SMPL_PARENTS,
    Y_UP_TO_Z_UP,
    SMPLSkeleton,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    axis_angle_to_rotation_6d,
    decode_edge151,
    encode_edge151,
    foot_contacts,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    quat_slerp,
    quaternion_multiply,
    quaternion_to_axis_angle,
    resample_motion,
    rotation_6d_to_axis_angle,
    rotation_6d_to_matrix,
    stitch_windows,
)

SCALE = 93.0  # a typical AIST++ smpl_scaling


def _random_axis_angles(n: int, seed: int = 0) -> torch.Tensor:
    """Random rotations (uniform axis, angle in [0, pi)) plus zero, tiny and near-pi ones."""
    gen = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(n, 1, generator=gen, dtype=torch.float64) * (math.pi - 1e-3)
    special = torch.tensor(
        [
            [0.0, 0.0, 0.0],
            [1e-9, 0.0, 0.0],
            [0.0, 1e-5, -1e-5],
            [math.pi - 1e-6, 0.0, 0.0],
            [0.0, 0.0, math.pi - 1e-4],
            [(math.pi - 1e-6) / math.sqrt(3)] * 3,
        ],
        dtype=torch.float64,
    )
    return torch.cat([special, axis * angle])


def _aist_like_motion(
    frames: int, batch: tuple[int, ...] = (), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """AIST++-like poses (small joint angles, any root orientation) and trans (~SCALE x metres)."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(0.0, 0.3, size=(*batch, frames, 24, 3))
    poses[..., 0, :] = rng.normal(0.0, 1.0, size=(*batch, frames, 3))
    walk = np.cumsum(rng.normal(0.0, 0.02, size=(*batch, frames, 3)), axis=-2)
    trans = (walk + np.array([0.0, 0.9, 0.0])) * SCALE
    return poses.reshape(*batch, frames, 72).astype(np.float32), trans.astype(np.float32)


def _rot_x(deg: float) -> np.ndarray:
    return Rotation.from_euler("x", deg, degrees=True).as_matrix()


# ------------------------------------------------------------------------------------------
# Rotations
# ------------------------------------------------------------------------------------------


def test_axis_angle_to_matrix_and_quaternion_match_scipy() -> None:
    aa = _random_axis_angles(200)
    expected = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    torch.testing.assert_close(axis_angle_to_matrix(aa), expected, atol=1e-12, rtol=0)

    quat = axis_angle_to_quaternion(aa)
    xyzw = Rotation.from_rotvec(aa.numpy()).as_quat()  # scalar last, w >= 0 here
    torch.testing.assert_close(quat, torch.from_numpy(xyzw[:, [3, 0, 1, 2]]), atol=1e-12, rtol=0)
    torch.testing.assert_close(quat.norm(dim=-1), torch.ones(len(aa), dtype=torch.float64))


def test_rotation_round_trips_including_zero_and_near_pi() -> None:
    aa = _random_axis_angles(300)
    mats = axis_angle_to_matrix(aa)
    away_from_pi = aa.norm(dim=-1) < math.pi - 1e-2

    back = matrix_to_axis_angle(mats)
    assert torch.isfinite(back).all()
    torch.testing.assert_close(back[away_from_pi], aa[away_from_pi], atol=1e-9, rtol=0)
    # Near pi the axis may flip sign (same rotation): compare rotations.
    torch.testing.assert_close(axis_angle_to_matrix(back), mats, atol=1e-9, rtol=0)

    six = axis_angle_to_rotation_6d(aa)
    assert six.shape == (len(aa), 6)
    torch.testing.assert_close(rotation_6d_to_matrix(six), mats, atol=1e-12, rtol=0)
    torch.testing.assert_close(matrix_to_rotation_6d(mats), six)
    back6 = rotation_6d_to_axis_angle(six)
    torch.testing.assert_close(axis_angle_to_matrix(back6), mats, atol=1e-9, rtol=0)
    torch.testing.assert_close(back6[away_from_pi], aa[away_from_pi], atol=1e-9, rtol=0)

    quat = axis_angle_to_quaternion(aa)
    torch.testing.assert_close(quaternion_to_axis_angle(quat), aa, atol=1e-9, rtol=0)
    # -q is the same rotation; the result is the canonical axis-angle, not a NaN.
    torch.testing.assert_close(quaternion_to_axis_angle(-quat), aa, atol=1e-9, rtol=0)
    assert torch.isfinite(quaternion_to_axis_angle(torch.tensor([-1.0, 0.0, 0.0, 0.0]))).all()


def test_rotation_helpers_take_any_leading_shape() -> None:
    aa = _random_axis_angles(24)[:24].float().reshape(2, 2, 6, 3)
    assert axis_angle_to_matrix(aa).shape == (2, 2, 6, 3, 3)
    assert axis_angle_to_rotation_6d(aa).shape == (2, 2, 6, 6)
    assert rotation_6d_to_axis_angle(axis_angle_to_rotation_6d(aa)).shape == (2, 2, 6, 3)
    assert matrix_to_axis_angle(torch.eye(3)).shape == (3,)


def test_matrix_to_rotation_6d_takes_the_first_two_rows() -> None:
    # 90 degrees about +z: x -> y, y -> -x.
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2])), rz)
    six = matrix_to_rotation_6d(rz)
    torch.testing.assert_close(six, torch.tensor([0.0, -1.0, 0.0, 1.0, 0.0, 0.0]))  # rows
    torch.testing.assert_close(rotation_6d_to_matrix(six), rz)
    # Gram-Schmidt: the first vector is normalised, the second made orthogonal to it.
    skewed = torch.tensor([2.0, 0.0, 0.0, 1.0, 3.0, 0.0])
    torch.testing.assert_close(rotation_6d_to_matrix(skewed), torch.eye(3))


def test_quaternion_multiply_composes_and_standardises() -> None:
    a = axis_angle_to_quaternion(_random_axis_angles(50, seed=1))
    b = axis_angle_to_quaternion(_random_axis_angles(50, seed=2))
    ab = quaternion_multiply(a, b)
    assert (ab[:, 0] >= 0).all()
    expected = axis_angle_to_matrix(matrix_to_axis_angle(
        axis_angle_to_matrix(quaternion_to_axis_angle(a))
        @ axis_angle_to_matrix(quaternion_to_axis_angle(b))
    ))
    torch.testing.assert_close(axis_angle_to_matrix(quaternion_to_axis_angle(ab)), expected)
    # Y_UP_TO_Z_UP is +90 degrees about X.
    torch.testing.assert_close(
        axis_angle_to_matrix(quaternion_to_axis_angle(Y_UP_TO_Z_UP.double())),
        torch.from_numpy(_rot_x(90.0)),
        atol=1e-6,
        rtol=0,
    )


def test_quat_slerp() -> None:
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    q0 = axis_angle_to_quaternion(0.2 * z).expand(5, 4)
    q1 = axis_angle_to_quaternion(1.4 * z).expand(5, 4)
    weight = torch.linspace(0, 1, 5, dtype=torch.float64)
    out = quat_slerp(q0, q1, weight)
    angles = quaternion_to_axis_angle(out)[:, 2]
    torch.testing.assert_close(angles, 0.2 + 1.2 * weight)
    # The shorter arc: -q1 is the same rotation, so the result is the same rotation; and the
    # inputs are left alone (EDGE's version flips them in place).
    q1_neg = -q1.clone()
    out_neg = quat_slerp(q0, q1_neg, weight)
    torch.testing.assert_close(quaternion_to_axis_angle(out_neg), quaternion_to_axis_angle(out))
    torch.testing.assert_close(q1_neg, -q1)
    # Nearly identical quaternions take the linear branch and stay finite.
    close = quat_slerp(q0, axis_angle_to_quaternion(0.2001 * z).expand(5, 4), weight)
    assert torch.isfinite(close).all()


# ------------------------------------------------------------------------------------------
# Skeleton and FK
# ------------------------------------------------------------------------------------------


def _chain(joint: int) -> list[int]:
    out = []
    while joint != -1:
        out.append(joint)
        joint = SMPL_PARENTS[joint]
    return out


def test_skeleton_constants() -> None:
    assert len(SMPL_PARENTS) == 24 and SMPL_OFFSETS.shape == (24, 3)
    assert all(p < i for i, p in enumerate(SMPL_PARENTS))
    assert FOOT_JOINTS == (7, 8, 10, 11)
    assert EDGE_MOTION_DIM == 4 + 3 + 24 * 6
    wrist = torch.tensor([0.26570925, 0.01269811, -0.00737473])
    torch.testing.assert_close(SMPL_OFFSETS[20], wrist)


def test_fk_zero_pose_is_root_plus_cumulative_offsets() -> None:
    skel = SMPLSkeleton()
    assert "offsets" not in skel.state_dict()
    root = torch.tensor([[[0.5, 1.0, -2.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3)
    joints = skel(torch.zeros(1, 2, 24, 3), root)
    assert joints.shape == (1, 2, 24, 3)
    for j in range(24):
        expected = root + SMPL_OFFSETS[_chain(j)].sum(0)
        torch.testing.assert_close(joints[:, :, j], expected)


def test_fk_elbow_rotation_moves_the_wrist() -> None:
    rotations = torch.zeros(4, 24, 3)  # no batch dim: (S, 24, 3)
    rotations[:, 18] = torch.tensor([0.0, 0.0, math.pi / 2])  # left elbow, 90 deg about +z
    joints = SMPLSkeleton()(rotations, torch.zeros(4, 3))
    elbow = SMPL_OFFSETS[_chain(18)].sum(0)
    dx, dy, dz = SMPL_OFFSETS[20].tolist()
    torch.testing.assert_close(joints[:, 18], elbow.expand(4, 3))
    torch.testing.assert_close(joints[:, 20], (elbow + torch.tensor([-dy, dx, dz])).expand(4, 3))
    # The hand follows the rotated wrist frame as well.
    hx, hy, hz = SMPL_OFFSETS[22].tolist()
    expected_hand = joints[:, 20] + torch.tensor([-hy, hx, hz])
    torch.testing.assert_close(joints[:, 22], expected_hand)


def test_fk_matches_matrix_forward_kinematics() -> None:
    rng = np.random.default_rng(3)
    rot = rng.normal(0.0, 0.6, size=(5, 24, 3))
    root = rng.normal(size=(5, 3))
    joints = SMPLSkeleton()(torch.from_numpy(rot), torch.from_numpy(root)).numpy()
    offsets = SMPL_OFFSETS.double().numpy()
    for f in range(5):
        world = [Rotation.from_rotvec(rot[f, 0]).as_matrix()]
        pos = [root[f]]
        for j in range(1, 24):
            p = SMPL_PARENTS[j]
            pos.append(pos[p] + world[p] @ offsets[j])
            world.append(world[p] @ Rotation.from_rotvec(rot[f, j]).as_matrix())
        np.testing.assert_allclose(joints[f], np.stack(pos), atol=1e-10)


def test_no_nan_gradient_through_6d_decoding_and_fk_at_identity() -> None:
    six = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).repeat(1, 3, 24, 1).requires_grad_()
    root = torch.zeros(1, 3, 3, requires_grad=True)
    joints = SMPLSkeleton()(rotation_6d_to_axis_angle(six), root)
    (joints.square().sum() + joints[..., FOOT_JOINTS, :].diff(dim=1).norm(dim=-1).sum()).backward()
    assert six.grad is not None and torch.isfinite(six.grad).all()
    assert root.grad is not None and torch.isfinite(root.grad).all()
    assert six.grad.abs().sum() > 0

    aa = torch.zeros(2, 24, 3, requires_grad=True)
    SMPLSkeleton()(aa, torch.zeros(2, 3)).sum().backward()
    assert aa.grad is not None and torch.isfinite(aa.grad).all()

    near_pi = torch.tensor([[math.pi - 1e-4, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    rotation_6d_to_axis_angle(axis_angle_to_rotation_6d(near_pi)).sum().backward()
    assert near_pi.grad is not None and torch.isfinite(near_pi.grad).all()


# ------------------------------------------------------------------------------------------
# Contacts
# ------------------------------------------------------------------------------------------


def test_foot_contacts_still_foot_in_contact_moving_foot_not() -> None:
    frames = 6
    joints = torch.zeros(frames, 24, 3)
    joints[:, 7] = torch.tensor([0.1, 0.0, 0.0])  # left ankle still
    joints[:, 8, 0] = torch.arange(frames) * 0.05  # right ankle moving 5 cm / frame
    joints[:, 10, 2] = torch.arange(frames) * 0.002  # left toes creeping (below threshold)
    joints[:, 11, 1] = torch.arange(frames) * 0.02  # right toes moving
    contacts = foot_contacts(joints)
    assert contacts.shape == (frames, 4) and contacts.dtype == torch.float32
    torch.testing.assert_close(contacts[:-1], torch.tensor([[1.0, 0.0, 1.0, 0.0]]).expand(5, 4))
    # EDGE sets the last frame's displacement to 0, so the last frame counts as contact.
    torch.testing.assert_close(contacts[-1], torch.ones(4))
    # The threshold is a parameter; batches work.
    strict = foot_contacts(joints[None].expand(2, -1, -1, -1), threshold=0.001)
    assert strict.shape == (2, frames, 4)
    assert strict[0, :-1, 2].sum() == 0
    assert CONTACT_THRESHOLD == 0.01


# ------------------------------------------------------------------------------------------
# The 151-d vector
# ------------------------------------------------------------------------------------------


def test_encode_layout() -> None:
    poses, trans = _aist_like_motion(40)
    x = encode_edge151(poses, trans, np.array([SCALE]))  # AIST++ stores scaling as (1,)
    assert x.shape == (40, EDGE_MOTION_DIM) and x.dtype == torch.float32

    contacts = x[:, :4]
    assert set(contacts.unique().tolist()) <= {0.0, 1.0}

    # Root position: trans / scaling, rotated +90 deg about X: (x, y, z) -> (x, -z, y).
    metres = trans / SCALE
    expected_root = metres @ _rot_x(90.0).T
    np.testing.assert_allclose(x[:, 4:7].numpy(), expected_root, atol=1e-5)
    np.testing.assert_allclose(x[:, 4:7].numpy(), metres[:, [0, 2, 1]] * [1, -1, 1], atol=1e-5)

    # Rotations: the first two rows of each matrix; the root's rotated to z-up.
    rots = Rotation.from_rotvec(poses.reshape(-1, 3).astype(np.float64)).as_matrix()
    rots = rots.reshape(40, 24, 3, 3)
    rots[:, 0] = _rot_x(90.0) @ rots[:, 0]
    six = x[:, 7:].reshape(40, 24, 6).numpy()
    np.testing.assert_allclose(six, rots[:, :, :2, :].reshape(40, 24, 6), atol=1e-5)

    # Contacts are EDGE's rule applied to FK of the z-up motion.
    local = torch.from_numpy(poses.astype(np.float64)).reshape(40, 24, 3).clone()
    local[:, 0] = matrix_to_axis_angle(torch.from_numpy(rots[:, 0]))
    joints = SMPLSkeleton()(local, torch.from_numpy(expected_root))
    torch.testing.assert_close(contacts, foot_contacts(joints).float())


def test_encode_is_z_up_and_detects_a_standing_foot() -> None:
    frames = 10
    poses = np.zeros((frames, 72), dtype=np.float32)
    trans = np.tile(np.array([0.0, 0.9, 0.0], dtype=np.float32) * SCALE, (frames, 1))
    trans[:, 0] += np.arange(frames) * 0.005 * SCALE  # gliding 5 mm / frame: all in contact
    x = encode_edge151(poses, trans, SCALE)
    torch.testing.assert_close(x[:, :4], torch.ones(frames, 4))
    root_pos = x[:, 4:7]
    local = rotation_6d_to_axis_angle(x[:, 7:].reshape(frames, 24, 6))
    joints = SMPLSkeleton()(local, root_pos)
    assert (joints[:, 15, 2] > joints[:, 0, 2] + 0.4).all()  # head above pelvis along +z
    assert (joints[:, 7, 2] < joints[:, 0, 2] - 0.7).all()  # ankle below

    trans[:, 0] = np.arange(frames) * 0.05 * SCALE  # 5 cm / frame: no contact but the last
    x = encode_edge151(poses, trans, SCALE)
    torch.testing.assert_close(x[:-1, :4], torch.zeros(frames - 1, 4))


def test_encode_decode_round_trip() -> None:
    poses, trans = _aist_like_motion(50, batch=(2,), seed=4)
    scaling = torch.tensor([SCALE, 80.0])
    x = encode_edge151(torch.from_numpy(poses), torch.from_numpy(trans), scaling)
    assert x.shape == (2, 50, EDGE_MOTION_DIM)
    # Per-sequence scaling is the same as encoding each sequence alone.
    torch.testing.assert_close(x[1], encode_edge151(poses[1], trans[1], 80.0))

    dec_poses, dec_trans = decode_edge151(x, scaling)
    assert dec_poses.shape == (2, 50, 72) and dec_trans.shape == (2, 50, 3)
    torch.testing.assert_close(
        axis_angle_to_matrix(dec_poses.reshape(2, 50, 24, 3)),
        axis_angle_to_matrix(torch.from_numpy(poses).reshape(2, 50, 24, 3)),
        atol=2e-6,
        rtol=0,
    )
    torch.testing.assert_close(dec_trans, torch.from_numpy(trans), atol=1e-3, rtol=1e-5)

    # Without scaling the trans comes back in trans / scaling units (y-up).
    _, unit_trans = decode_edge151(x)
    torch.testing.assert_close(unit_trans, torch.from_numpy(trans) / scaling[:, None, None])


def test_encode_decode_shape_errors() -> None:
    with pytest.raises(ValueError):
        encode_edge151(np.zeros((5, 71)), np.zeros((5, 3)), SCALE)
    with pytest.raises(ValueError):
        encode_edge151(np.zeros((2, 5, 72)), np.zeros((2, 5, 3)), np.ones(3))
    with pytest.raises(ValueError):
        decode_edge151(torch.zeros(5, 150))


# ------------------------------------------------------------------------------------------
# Resampling
# ------------------------------------------------------------------------------------------


def test_resample_60_to_30_is_striding() -> None:
    poses, trans = _aist_like_motion(61, seed=5)
    out_poses, out_trans = resample_motion(poses, trans, 60, 30)
    assert out_poses.shape == (31, 72) and out_trans.shape == (31, 3)
    assert torch.equal(out_poses, torch.from_numpy(poses[::2]))
    assert torch.equal(out_trans, torch.from_numpy(trans[::2]))
    # Leading dims and the (N, 24, 3) layout work too.
    batched = torch.from_numpy(poses).reshape(1, 61, 24, 3)
    b_poses, b_trans = resample_motion(batched, torch.from_numpy(trans)[None], 60.0, 20.0)
    assert torch.equal(b_poses, batched[:, ::3]) and b_poses.shape == (1, 21, 24, 3)
    assert torch.equal(b_trans, torch.from_numpy(trans)[None, ::3])


def test_resample_up_and_back_down() -> None:
    poses, trans = _aist_like_motion(30, seed=6)
    up_poses, up_trans = resample_motion(poses, trans, 30, 60)
    assert up_poses.shape == (59, 72)
    down_poses, down_trans = resample_motion(up_poses, up_trans, 60, 30)
    assert torch.equal(down_poses, torch.from_numpy(poses))
    assert torch.equal(down_trans, torch.from_numpy(trans))
    # In-between frames: trans is the midpoint, rotations the SLERP midpoint.
    torch.testing.assert_close(up_trans[1], torch.from_numpy((trans[0] + trans[1]) / 2))
    frame0, frame1 = poses.reshape(30, 24, 3)[:2].astype(np.float64)
    mid = [
        Slerp([0.0, 1.0], Rotation.from_rotvec([frame0[j], frame1[j]]))(0.5).as_matrix()
        for j in range(24)
    ]
    got = axis_angle_to_matrix(up_poses[1].reshape(24, 3).double()).numpy()
    np.testing.assert_allclose(got, np.stack(mid), atol=1e-5)


@pytest.mark.parametrize(
    ("frames", "src", "dst", "expected"),
    [(10, 60, 30, 5), (10, 30, 60, 19), (301, 60, 24, 121), (300, 30, 25, 250), (7, 30, 30, 7),
     (1, 60, 30, 1), (100, 29.97, 30, 100)],
)
def test_resample_frame_counts(frames: int, src: float, dst: float, expected: int) -> None:
    poses, trans = _aist_like_motion(frames, seed=7)
    assert expected == math.floor((frames - 1) * dst / src) + 1
    out_poses, out_trans = resample_motion(poses, trans, src, dst)
    assert out_poses.shape == (expected, 72) and out_trans.shape == (expected, 3)
    assert torch.isfinite(out_poses).all()
    if src == dst:
        assert torch.equal(out_poses, torch.from_numpy(poses))


# ------------------------------------------------------------------------------------------
# Long-form stitching
# ------------------------------------------------------------------------------------------


def test_stitch_windows_reassembles_one_motion() -> None:
    batch, size = 5, 12
    half = size // 2
    length = size + half * (batch - 1)
    gen = torch.Generator().manual_seed(8)
    pos = torch.cumsum(torch.randn(length, 3, generator=gen, dtype=torch.float64) * 0.05, 0)
    rot = torch.randn(length, 24, 3, generator=gen, dtype=torch.float64) * 0.8
    windows_pos = torch.stack([pos[b * half : b * half + size] for b in range(batch)])
    windows_rot = torch.stack([rot[b * half : b * half + size] for b in range(batch)])

    full_pos, full_rot = stitch_windows(windows_pos, windows_rot)
    assert full_pos.shape == (length, 3) and full_rot.shape == (length, 24, 3)
    torch.testing.assert_close(full_pos, pos, atol=1e-12, rtol=0)
    torch.testing.assert_close(axis_angle_to_matrix(full_rot), axis_angle_to_matrix(rot))

    one_pos, one_rot = stitch_windows(windows_pos[:1], windows_rot[:1])
    assert torch.equal(one_pos, windows_pos[0]) and torch.equal(one_rot, windows_rot[0])


def test_stitch_windows_cross_fades_the_overlap() -> None:
    size, half = 8, 4
    pos = torch.stack([torch.zeros(size, 3), torch.ones(size, 3)])  # window 0 at 0, window 1 at 1
    z = torch.tensor([0.0, 0.0, 1.0])
    rot = torch.zeros(2, size, 24, 3)
    rot[1] = 0.9 * z  # window 1 turned 0.9 rad about z
    full_pos, full_rot = stitch_windows(pos, rot)
    assert full_pos.shape == (size + half, 3)
    ramp = torch.linspace(0, 1, half)
    torch.testing.assert_close(full_pos[half:size, 0], ramp)
    torch.testing.assert_close(full_pos[:half], torch.zeros(half, 3))
    torch.testing.assert_close(full_pos[size:], torch.ones(half, 3))
    torch.testing.assert_close(full_rot[half:size, 5, 2], 0.9 * ramp)
    torch.testing.assert_close(full_rot[size:, 5], (0.9 * z).expand(half, 3))


def test_stitch_windows_errors() -> None:
    with pytest.raises(ValueError, match="even"):
        stitch_windows(torch.zeros(3, 7, 3), torch.zeros(3, 7, 24, 3))
    with pytest.raises(ValueError):
        stitch_windows(torch.zeros(3, 8, 3), torch.zeros(2, 8, 24, 3))
