"""EDGE's motion representation in pure torch: rotations, forward kinematics, the 151-d vector.

This reimplements, without pytorch3d, what EDGE (Stanford-TML/EDGE) does to AIST++ motion:

* ``vis.py``: the hard-coded SMPL skeleton (:data:`SMPL_PARENTS`, :data:`SMPL_OFFSETS`) and its
  quaternion forward kinematics (:class:`SMPLSkeleton`).
* ``dataset/dance_dataset.py``: ``trans / scaling``, y-up -> z-up, FK, foot contacts, 6D
  rotations, packed as ``[contacts 4 | root pos 3 | 24 x 6D]`` (:func:`encode_edge151`).
* ``dataset/quaternion.py``: ``ax_to_6v``, ``ax_from_6v`` and ``quat_slerp``.
* ``model/diffusion.py`` ``render_sample(mode="long")``: stitching half-overlapping windows
  (:func:`stitch_windows`).

The rotation helpers follow pytorch3d's conventions: quaternions are ``(w, x, y, z)``, matrices
act on column vectors, the 6D representation is the first two *rows* of the matrix, and
:func:`quaternion_multiply` returns the product with a non-negative real part. They work on any
leading shape and are safe for autograd at zero rotation (no NaN values or gradients). The one
deliberate differences from pytorch3d are in :func:`quaternion_to_axis_angle`: it flips
quaternions with a negative real part first, so it always returns angles in ``[0, pi]``
(pytorch3d returns the equivalent rotation with an angle in ``(pi, 2 pi]`` there, and NaN for
``(-1, 0, 0, 0)``), and it divides by the quaternion's norm (pytorch3d's angle is scaled by the
norm of a non-unit quaternion, which EDGE's unnormalised SLERP produces).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CONTACT_THRESHOLD",
    "EDGE_MOTION_DIM",
    "FOOT_JOINTS",
    "SMPL_OFFSETS",
    "SMPL_PARENTS",
    "Y_UP_TO_Z_UP",
    "SMPLSkeleton",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "axis_angle_to_rotation_6d",
    "decode_edge151",
    "encode_edge151",
    "foot_contacts",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "quat_slerp",
    "quaternion_apply",
    "quaternion_multiply",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "resample_motion",
    "rotation_6d_to_axis_angle",
    "rotation_6d_to_matrix",
    "standardize_quaternion",
    "stitch_windows",
]

ArrayLike = torch.Tensor | np.ndarray

# --------------------------------------------------------------------------------------------
# Constants (EDGE vis.py / dataset/dance_dataset.py)
# --------------------------------------------------------------------------------------------

#: Parent of each of the 24 SMPL joints (``vis.py`` ``smpl_parents``); -1 for the root.
SMPL_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)

#: Offset of each joint from its parent in the rest pose, y-up metres (``vis.py``
#: ``smpl_offsets``). EDGE uses this fixed skeleton for FK, not SMPL with betas.
SMPL_OFFSETS: torch.Tensor = torch.tensor(
    [
        [0.0, 0.0, 0.0],
        [0.05858135, -0.08228004, -0.01766408],
        [-0.06030973, -0.09051332, -0.01354254],
        [0.00443945, 0.12440352, -0.03838522],
        [0.04345142, -0.38646945, 0.008037],
        [-0.04325663, -0.38368791, -0.00484304],
        [0.00448844, 0.1379564, 0.02682033],
        [-0.01479032, -0.42687458, -0.037428],
        [0.01905555, -0.4200455, -0.03456167],
        [-0.00226458, 0.05603239, 0.00285505],
        [0.04105436, -0.06028581, 0.12204243],
        [-0.03483987, -0.06210566, 0.13032329],
        [-0.0133902, 0.21163553, -0.03346758],
        [0.07170245, 0.11399969, -0.01889817],
        [-0.08295366, 0.11247234, -0.02370739],
        [0.01011321, 0.08893734, 0.05040987],
        [0.12292141, 0.04520509, -0.019046],
        [-0.11322832, 0.04685326, -0.00847207],
        [0.2553319, -0.01564902, -0.02294649],
        [-0.26012748, -0.01436928, -0.03126873],
        [0.26570925, 0.01269811, -0.00737473],
        [-0.26910836, 0.00679372, -0.00602676],
        [0.08669055, -0.01063603, -0.01559429],
        [-0.0887537, -0.00865157, -0.01010708],
    ],
    dtype=torch.float32,
)

#: The foot joints whose velocity defines contact: left/right ankle, left/right toes.
FOOT_JOINTS: tuple[int, ...] = (7, 8, 10, 11)

#: Width of EDGE's motion vector: 4 contacts + 3 root position + 24 x 6D rotations.
EDGE_MOTION_DIM: int = 151

#: Per-frame foot displacement (in ``trans / scaling`` units) below which a foot is in contact.
CONTACT_THRESHOLD: float = 0.01

#: EDGE's y-up -> z-up rotation: 90 degrees about +X, as the quaternion ``(w, x, y, z)``. It is
#: EDGE's literal constant (norm 1 + 4.5e-8), left-multiplied onto the root orientation.
Y_UP_TO_Z_UP: torch.Tensor = torch.tensor([0.7071068, 0.7071068, 0.0, 0.0], dtype=torch.float32)

_NUM_JOINTS = 24
_CONTACT_SLICE = slice(0, 4)
_ROOT_SLICE = slice(4, 7)
_ROT_SLICE = slice(7, EDGE_MOTION_DIM)


# --------------------------------------------------------------------------------------------
# Rotation helpers (pytorch3d conventions)
# --------------------------------------------------------------------------------------------


def standardize_quaternion(quaternions: torch.Tensor) -> torch.Tensor:
    """Flip quaternions ``(..., 4)`` with a negative real part, so that ``w >= 0``."""
    return torch.where(quaternions[..., :1] < 0, -quaternions, quaternions)


def _quaternion_raw_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = torch.unbind(a, -1)
    bw, bx, by, bz = torch.unbind(b, -1)
    ow = aw * bw - ax * bx - ay * by - az * bz
    ox = aw * bx + ax * bw + ay * bz - az * by
    oy = aw * by - ax * bz + ay * bw + az * bx
    oz = aw * bz + ax * by - ay * bx + az * bw
    return torch.stack((ow, ox, oy, oz), -1)


def _quaternion_conjugate(quaternions: torch.Tensor) -> torch.Tensor:
    sign = quaternions.new_tensor([1.0, -1.0, -1.0, -1.0])
    return quaternions * sign


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of ``(..., 4)`` quaternions (broadcasting), standardised.

    As pytorch3d: the result is the rotation "first ``b``, then ``a``" with real part ``>= 0``.
    """
    return standardize_quaternion(_quaternion_raw_multiply(a, b))


def quaternion_apply(quaternions: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Rotate ``(..., 3)`` points by unit ``(..., 4)`` quaternions: ``q p q*`` (broadcasting)."""
    if points.shape[-1] != 3:
        raise ValueError(f"points must end in 3, got shape {tuple(points.shape)}")
    point_q = torch.cat((torch.zeros_like(points[..., :1]), points), -1)
    out = _quaternion_raw_multiply(
        _quaternion_raw_multiply(quaternions, point_q), _quaternion_conjugate(quaternions)
    )
    return out[..., 1:]


def quaternion_to_matrix(quaternions: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` quaternions (any non-zero norm) -> ``(..., 3, 3)`` rotation matrices."""
    r, i, j, k = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    o = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return o.reshape((*quaternions.shape[:-1], 3, 3))


def _sqrt_positive_part(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` with a zero (not NaN) gradient where ``x <= 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrices -> ``(..., 4)`` quaternions with ``w >= 0``.

    pytorch3d's algorithm: four candidate quaternions, keeping the best conditioned one.
    """
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix must end in (3, 3), got shape {tuple(matrix.shape)}")
    batch = matrix.shape[:-2]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(
        matrix.reshape((*batch, 9)), dim=-1
    )
    q_abs = _sqrt_positive_part(
        torch.stack(
            [
                1.0 + m00 + m11 + m22,
                1.0 + m00 - m11 - m22,
                1.0 - m00 + m11 - m22,
                1.0 - m00 - m11 + m22,
            ],
            dim=-1,
        )
    )
    # The quaternion multiplied by each of r, i, j, k.
    quat_by_rijk = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    candidates = quat_by_rijk / (2.0 * q_abs[..., None].maximum(floor))
    best = q_abs.argmax(dim=-1)[..., None, None].expand((*batch, 1, 4))
    out = torch.gather(candidates, -2, best).squeeze(-2)
    return standardize_quaternion(out)


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` axis-angle (angle = norm, radians) -> ``(..., 4)`` unit quaternions."""
    angles = torch.linalg.vector_norm(axis_angle, dim=-1, keepdim=True)
    sin_half_over_angle = 0.5 * torch.sinc(angles * 0.5 / torch.pi)
    return torch.cat([torch.cos(angles * 0.5), axis_angle * sin_half_over_angle], dim=-1)


def quaternion_to_axis_angle(quaternions: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` quaternions (any non-zero norm) -> ``(..., 3)`` axis-angle, angle in [0, pi].

    pytorch3d's formula with two differences, both invisible for unit quaternions with
    ``w >= 0``: quaternions with ``w < 0`` are flipped first (same rotation), and the vector
    part is divided by the quaternion's norm, so that non-unit input (e.g. :func:`quat_slerp`'s
    unnormalised linear branch) gives the right angle instead of one scaled by the norm.
    """
    quaternions = standardize_quaternion(quaternions)
    norms = torch.linalg.vector_norm(quaternions[..., 1:], dim=-1, keepdim=True)
    half_angles = torch.atan2(norms, quaternions[..., :1])
    sin_half_over_angle = 0.5 * torch.sinc(half_angles / torch.pi)  # >= 1/pi since half <= pi/2
    scale = torch.linalg.vector_norm(quaternions, dim=-1, keepdim=True)
    return quaternions[..., 1:] / (scale * sin_half_over_angle)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` axis-angle -> ``(..., 3, 3)`` rotation matrices (via quaternions)."""
    return quaternion_to_matrix(axis_angle_to_quaternion(axis_angle))


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrices -> ``(..., 3)`` axis-angle, angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)``: the first two ROWS of the matrix (pytorch3d's 6D)."""
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix must end in (3, 3), got shape {tuple(matrix.shape)}")
    return matrix[..., :2, :].clone().reshape((*matrix.shape[:-2], 6))


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` -> ``(..., 3, 3)`` by Gram-Schmidt; the two 3-vectors become rows 0 and 1."""
    if d6.shape[-1] != 6:
        raise ValueError(f"d6 must end in 6, got shape {tuple(d6.shape)}")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def axis_angle_to_rotation_6d(axis_angle: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` axis-angle -> ``(..., 6)`` (EDGE ``ax_to_6v``)."""
    return matrix_to_rotation_6d(axis_angle_to_matrix(axis_angle))


def rotation_6d_to_axis_angle(d6: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` -> ``(..., 3)`` axis-angle (EDGE ``ax_from_6v``)."""
    return matrix_to_axis_angle(rotation_6d_to_matrix(d6))


def quat_slerp(
    q0: torch.Tensor, q1: torch.Tensor, weight: torch.Tensor | float
) -> torch.Tensor:
    """Spherical linear interpolation from ``q0`` (weight 0) to ``q1`` (weight 1), EDGE's.

    ``q0`` and ``q1`` are ``(..., 4)``; ``weight`` broadcasts against their leading shape
    (EDGE passes ``(1, T, 1)`` for ``(B, T, J, 4)``). The shorter arc is taken (``q1`` is
    negated where the dot product is negative); where ``1 - |dot| < 0.01`` it blends linearly.
    As in EDGE, the result is not renormalised. Unlike EDGE, the inputs are not modified.
    """
    q0, q1 = torch.broadcast_tensors(q0, q1)
    weight = torch.as_tensor(weight, dtype=q0.dtype, device=q0.device)
    dot = (q0 * q1).sum(-1)
    neg = dot < 0.0
    dot = torch.where(neg, -dot, dot)
    q1 = torch.where(neg[..., None], -q1, q1)
    a = torch.zeros_like(dot) + weight
    linear = (1.0 - dot) < 0.01
    # Keep acos away from 1 on the branch that is not used, so its gradient stays finite.
    omega = torch.arccos(torch.where(linear, torch.full_like(dot, 0.5), dot))
    sin_omega = torch.sin(omega)
    amount0 = torch.where(linear, 1.0 - a, torch.sin((1.0 - a) * omega) / sin_omega)
    amount1 = torch.where(linear, a, torch.sin(a * omega) / sin_omega)
    return amount0[..., None] * q0 + amount1[..., None] * q1


# --------------------------------------------------------------------------------------------
# Forward kinematics and contacts
# --------------------------------------------------------------------------------------------


class SMPLSkeleton(torch.nn.Module):
    """EDGE's forward kinematics on the fixed SMPL skeleton (``vis.py`` ``SMPLSkeleton``).

    The offsets are a non-persistent buffer: they follow ``.to(device)`` but add no
    ``state_dict`` keys. Rotations are composed as quaternions, in EDGE's order.
    """

    offsets: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offsets", SMPL_OFFSETS.clone(), persistent=False)
        self.parents: tuple[int, ...] = SMPL_PARENTS
        self.has_children: tuple[bool, ...] = tuple(
            i in SMPL_PARENTS for i in range(len(SMPL_PARENTS))
        )

    def forward(self, rotations: torch.Tensor, root_positions: torch.Tensor) -> torch.Tensor:
        """Joint positions from local rotations and root positions.

        Args:
            rotations: ``(..., S, 24, 3)`` local axis-angle rotations (root = global orientation).
            root_positions: ``(..., S, 3)`` root joint positions.

        Returns:
            ``(..., S, 24, 3)`` world joint positions.
        """
        n = len(self.parents)
        if rotations.shape[-2:] != (n, 3):
            raise ValueError(f"rotations must end in ({n}, 3), got {tuple(rotations.shape)}")
        if root_positions.shape[-1] != 3 or root_positions.shape[:-1] != rotations.shape[:-2]:
            raise ValueError(
                f"root_positions {tuple(root_positions.shape)} must be rotations' leading shape "
                f"{tuple(rotations.shape[:-2])} + (3,)"
            )
        quats = axis_angle_to_quaternion(rotations)
        offsets = self.offsets.to(dtype=rotations.dtype, device=rotations.device)
        lead = rotations.shape[:-2]
        positions: list[torch.Tensor] = []
        world_rots: list[torch.Tensor | None] = []
        for i, parent in enumerate(self.parents):
            if parent == -1:
                positions.append(root_positions)
                world_rots.append(quats[..., i, :])
                continue
            parent_rot = world_rots[parent]
            assert parent_rot is not None  # every parent has children
            offset = offsets[i].expand((*lead, 3))
            positions.append(quaternion_apply(parent_rot, offset) + positions[parent])
            world_rots.append(
                quaternion_multiply(parent_rot, quats[..., i, :]) if self.has_children[i] else None
            )
        return torch.stack(positions, dim=-2)


def foot_contacts(joints: torch.Tensor, threshold: float = CONTACT_THRESHOLD) -> torch.Tensor:
    """EDGE's foot contact labels from joint positions.

    Args:
        joints: ``(..., S, 24, 3)`` joint positions (EDGE: z-up, ``trans / scaling`` units).
        threshold: contact when the joint moves less than this to the next frame.

    Returns:
        ``(..., S, 4)`` float 0/1 for joints :data:`FOOT_JOINTS` (left ankle, right ankle, left
        toes, right toes). As in EDGE, the last frame's displacement is taken as 0, so the last
        frame is always in contact.
    """
    feet = joints[..., FOOT_JOINTS, :]  # (..., S, 4, 3)
    disp = torch.linalg.vector_norm(feet[..., 1:, :, :] - feet[..., :-1, :, :], dim=-1)
    disp = torch.cat([disp, torch.zeros_like(feet[..., :1, :, 0])], dim=-2)
    return (disp < threshold).to(joints.dtype)


# --------------------------------------------------------------------------------------------
# The 151-d vector
# --------------------------------------------------------------------------------------------


def _to_float_tensor(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if dtype is not None:
        return t.to(dtype)
    return t if t.is_floating_point() else t.to(torch.float32)


def _scaling_tensor(
    scaling: float | ArrayLike, batch: torch.Size, ref: torch.Tensor
) -> torch.Tensor:
    """Scaling as ``(..., 1, 1)`` that broadcasts against ``batch + (S, 3)``."""
    s = torch.as_tensor(scaling, dtype=ref.dtype, device=ref.device)
    if s.numel() == 1:
        return s.reshape(())
    try:
        ok = torch.broadcast_shapes(s.shape, batch) == batch
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"scaling of shape {tuple(s.shape)} does not broadcast to the leading dims "
            f"{tuple(batch)}"
        )
    return s[..., None, None]


def _y_up_to_z_up_points(p: torch.Tensor) -> torch.Tensor:
    """+90 degrees about X, ``(x, y, z) -> (x, -z, y)`` (EDGE's ``RotateAxisAngle(90, "X")``)."""
    x, y, z = torch.unbind(p, -1)
    return torch.stack((x, -z, y), -1)


def _z_up_to_y_up_points(p: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_y_up_to_z_up_points`: ``(x, y, z) -> (x, z, -y)``."""
    x, y, z = torch.unbind(p, -1)
    return torch.stack((x, z, -y), -1)


def encode_edge151(
    poses: ArrayLike, trans: ArrayLike, scaling: float | ArrayLike
) -> torch.Tensor:
    """AIST++ SMPL motion -> EDGE's unnormalised 151-d motion vectors.

    Exactly EDGE's preprocessing (``data/slice.py`` + ``AISTPPDataset.process_dataset``):
    ``root_pos = trans / scaling``; the root orientation is left-multiplied by
    :data:`Y_UP_TO_Z_UP` and ``root_pos`` rotated 90 degrees about X; FK with
    :class:`SMPLSkeleton`; :func:`foot_contacts`; 6D rotations. Computed in float64, returned
    float32 (EDGE runs in float32; the difference is at rounding level). Frame-rate changes are
    not done here (EDGE takes every 2nd frame of 60-fps AIST++ first; see
    :func:`resample_motion`), and neither is the min-max normalisation.

    Args:
        poses: ``(..., S, 72)`` AIST++ ``smpl_poses`` (axis-angle, y-up), numpy or torch.
        trans: ``(..., S, 3)`` AIST++ ``smpl_trans`` (scaled units, y-up).
        scaling: AIST++ ``smpl_scaling``: a number, a size-1 array, or an array that
            broadcasts to the leading dims ``...``.

    Returns:
        ``(..., S, 151)`` float32: ``[contacts 4 | root pos 3 | 24 x 6D]``.
    """
    poses_t = _to_float_tensor(poses, torch.float64)
    trans_t = _to_float_tensor(trans, torch.float64).to(poses_t.device)
    if trans_t.ndim < 2 or trans_t.shape[-1] != 3:
        raise ValueError(f"trans must be (..., S, 3), got {tuple(trans_t.shape)}")
    if poses_t.shape != (*trans_t.shape[:-1], _NUM_JOINTS * 3):
        raise ValueError(
            f"poses {tuple(poses_t.shape)} must be (..., S, 72) matching trans "
            f"{tuple(trans_t.shape)}"
        )
    local = poses_t.reshape((*trans_t.shape[:-1], _NUM_JOINTS, 3))
    root_pos = trans_t / _scaling_tensor(scaling, trans_t.shape[:-2], trans_t)

    # y-up -> z-up: the root orientation and the root position.
    turn = Y_UP_TO_Z_UP.to(dtype=poses_t.dtype, device=poses_t.device)
    root_rot = quaternion_to_axis_angle(
        quaternion_multiply(turn, axis_angle_to_quaternion(local[..., 0, :]))
    )
    local = torch.cat([root_rot[..., None, :], local[..., 1:, :]], dim=-2)
    root_pos = _y_up_to_z_up_points(root_pos)

    joints = SMPLSkeleton().to(poses_t.device)(local, root_pos)
    contacts = foot_contacts(joints)
    rot6d = axis_angle_to_rotation_6d(local).flatten(-2)
    return torch.cat([contacts, root_pos, rot6d], dim=-1).to(torch.float32)


def decode_edge151(
    x: ArrayLike, scaling: float | ArrayLike = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """EDGE 151-d motion vectors (unnormalised) -> AIST++ ``smpl_poses`` and ``smpl_trans``.

    The inverse of :func:`encode_edge151`: 6D -> axis-angle (EDGE ``ax_from_6v``), the root
    orientation and position rotated back from z-up to y-up, the position multiplied by
    ``scaling``. Contacts are dropped. (EDGE's own output pkl keeps z-up and ``trans / scaling``
    units; this returns AIST++'s convention instead.) Computed in ``x``'s float dtype.

    Args:
        x: ``(..., S, 151)`` motion vectors.
        scaling: multiply the root position by this (a number, size-1, or broadcastable to
            the leading dims). 1.0 leaves it in ``trans / scaling`` units.

    Returns:
        ``(poses (..., S, 72), trans (..., S, 3))``.
    """
    xt = _to_float_tensor(x)
    if xt.ndim < 2 or xt.shape[-1] != EDGE_MOTION_DIM:
        raise ValueError(f"x must be (..., S, {EDGE_MOTION_DIM}), got {tuple(xt.shape)}")
    root_pos = xt[..., _ROOT_SLICE]
    rot6d = xt[..., _ROT_SLICE].reshape((*xt.shape[:-1], _NUM_JOINTS, 6))
    local = rotation_6d_to_axis_angle(rot6d)

    turn = Y_UP_TO_Z_UP.to(dtype=xt.dtype, device=xt.device)
    unturn = _quaternion_conjugate(turn / torch.linalg.vector_norm(turn))
    root_rot = quaternion_to_axis_angle(
        quaternion_multiply(unturn, axis_angle_to_quaternion(local[..., 0, :]))
    )
    local = torch.cat([root_rot[..., None, :], local[..., 1:, :]], dim=-2)
    trans = _z_up_to_y_up_points(root_pos) * _scaling_tensor(scaling, xt.shape[:-2], xt)
    return local.flatten(-2), trans


# --------------------------------------------------------------------------------------------
# Frame rate and long-form stitching
# --------------------------------------------------------------------------------------------


def _fps_fraction(fps: float | int | Fraction) -> Fraction:
    if not fps > 0:
        raise ValueError(f"frame rates must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1_000_000)


def resample_motion(
    poses: ArrayLike, trans: ArrayLike, src_fps: float, dst_fps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Change the frame rate of SMPL motion.

    Output frame ``i`` sits at source time ``i * src_fps / dst_fps`` (frames), for
    ``floor((N - 1) * dst_fps / src_fps) + 1`` frames. Rotations are SLERPed (:func:`quat_slerp`)
    between the two neighbouring source frames, translations interpolated linearly; output
    frames that fall on a source frame copy it exactly, so an integer ratio ``src = k * dst`` is
    plain striding ``[::k]`` (EDGE's 60 -> 30 fps).

    Args:
        poses: ``(..., N, 72)`` or ``(..., N, J, 3)`` axis-angle rotations, numpy or torch.
        trans: ``(..., N, 3)`` root translations (defines the leading dims and ``N``).
        src_fps, dst_fps: source and target rates (ratios are resolved as exact fractions).

    Returns:
        ``(poses, trans)`` in the input layouts, with ``M`` frames; floating dtypes kept.
    """
    trans_t = _to_float_tensor(trans)
    poses_t = _to_float_tensor(poses).to(trans_t.device)
    if trans_t.ndim < 2 or trans_t.shape[-1] != 3:
        raise ValueError(f"trans must be (..., N, 3), got {tuple(trans_t.shape)}")
    lead, n = trans_t.shape[:-2], trans_t.shape[-2]
    if poses_t.shape[: len(lead) + 1] != trans_t.shape[:-1]:
        raise ValueError(
            f"poses {tuple(poses_t.shape)} and trans {tuple(trans_t.shape)} disagree on frames"
        )
    tail = poses_t.shape[len(lead) + 1 :]
    if int(np.prod(tail)) % 3:
        raise ValueError(f"poses must hold axis-angle triples per frame, got {tuple(tail)}")
    rot = poses_t.reshape((*lead, n, -1, 3))

    ratio = _fps_fraction(src_fps) / _fps_fraction(dst_fps)  # source frames per output frame
    p, q = ratio.numerator, ratio.denominator
    m = ((n - 1) * q) // p + 1 if n > 0 else 0
    num = torch.arange(m, device=trans_t.device, dtype=torch.int64) * p
    idx0 = num // q
    rem = num % q
    idx1 = torch.clamp(idx0 + 1, max=max(n - 1, 0))
    on_frame = rem == 0
    axis = len(lead)

    r0, r1 = rot.index_select(axis, idx0), rot.index_select(axis, idx1)
    w_rot = (rem.to(rot.dtype) / q)[:, None]  # (M, 1) against (..., M, J)
    slerped = quaternion_to_axis_angle(
        quat_slerp(axis_angle_to_quaternion(r0), axis_angle_to_quaternion(r1), w_rot)
    )
    rot_out = torch.where(on_frame[:, None, None], r0, slerped)

    t0, t1 = trans_t.index_select(axis, idx0), trans_t.index_select(axis, idx1)
    w_tr = (rem.to(trans_t.dtype) / q)[:, None]
    trans_out = torch.where(on_frame[:, None], t0, t0 + w_tr * (t1 - t0))
    return rot_out.reshape((*lead, m, *tail)), trans_out


def stitch_windows(
    root_pos: torch.Tensor, rotations: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """EDGE's long-form stitching of half-overlapping windows (``render_sample(mode="long")``).

    Window ``b + 1`` starts half a window after window ``b``. Over each overlap the root
    position is cross-faded linearly (``linspace(1, 0)`` out, ``linspace(0, 1)`` in) and the
    rotations are SLERPed with weight ``linspace(0, 1)`` from the earlier window to the later.

    Args:
        root_pos: ``(B, S, 3)`` root positions, ``S`` even.
        rotations: ``(B, S, J, 3)`` axis-angle rotations (J = 24 for SMPL).

    Returns:
        ``(root_pos (T, 3), rotations (T, J, 3))`` with ``T = S + S/2 * (B - 1)``; for
        ``B == 1`` the single window unchanged.
    """
    if root_pos.ndim != 3 or root_pos.shape[-1] != 3:
        raise ValueError(f"root_pos must be (B, S, 3), got {tuple(root_pos.shape)}")
    if rotations.ndim != 4 or rotations.shape[:2] != root_pos.shape[:2] or rotations.shape[-1] != 3:
        raise ValueError(
            f"rotations must be (B, S, J, 3) matching root_pos {tuple(root_pos.shape)}, "
            f"got {tuple(rotations.shape)}"
        )
    b, s = root_pos.shape[:2]
    if s % 2:
        raise ValueError(f"window length S must be even to overlap by half, got S={s}")
    if b == 1:
        return root_pos[0], rotations[0]
    half = s // 2
    opts = {"dtype": root_pos.dtype, "device": root_pos.device}

    fade_out = torch.linspace(1, 0, half, **opts)[:, None]
    fade_in = torch.linspace(0, 1, half, **opts)[:, None]
    pos_overlap = root_pos[:-1, half:] * fade_out + root_pos[1:, :half] * fade_in
    full_pos = torch.cat(
        [root_pos[0, :half], pos_overlap.reshape(-1, 3), root_pos[-1, half:]], dim=0
    )

    weight = torch.linspace(0, 1, half, dtype=rotations.dtype, device=rotations.device)[:, None]
    merged = quaternion_to_axis_angle(
        quat_slerp(
            axis_angle_to_quaternion(rotations[:-1, half:]),
            axis_angle_to_quaternion(rotations[1:, :half]),
            weight,
        )
    )
    j = rotations.shape[2]
    full_rot = torch.cat(
        [rotations[0, :half], merged.reshape(-1, j, 3), rotations[-1, half:]], dim=0
    )
    return full_pos, full_rot
