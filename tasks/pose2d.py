"""2D pose guidance from SMPL joints: OpenPose-18 keypoints, DWPose skeleton images, heatmaps.

The renderer poses SMPL, puts its joints into the camera and calls this module for the three
pose arrays of the data contract (``storage/contract.py``):

* ``pose/keypoints2d`` (T, 18, 3) float32: x, y in pixels of the H x W image + visibility;
* ``pose/heatmaps`` (T, 18, M, M) float16: Gaussian heatmaps, the M2PEnc target;
* ``maps/skeleton`` (T, H, W, 3) uint8: the body skeleton drawn exactly as DWPose draws it,
  so that the generator sees the same kind of image at training time (rendered from SMPL) as
  at inference time (DWPose run on a video).

Conventions. Cameras follow OpenCV, as the renderer does: x right, y down, z forward, and the
centre of pixel (col, row) is at the integer coordinates (col, row), so pixel (col, row) covers
[col - 0.5, col + 0.5) x [row - 0.5, row + 0.5) and the image covers
[-0.5, W - 0.5) x [-0.5, H - 0.5).

Joint order of smplx's SMPL (checked in smplx's ``body_models.py``, ``vertex_joint_selector.py``
and ``vertex_ids.py``): ``SMPL.forward`` returns the 24 regressed SMPL joints followed by
``VertexJointSelector``'s extra joints, which for SMPL are vertices picked with the SMPL-H ids
(SMPL and SMPL-H share a topology): 24 nose, 25 right eye, 26 left eye, 27 right ear,
28 left ear (``face_keyp_idxs``), 29 LBigToe, 30 LSmallToe, 31 LHeel, 32 RBigToe, 33 RSmallToe,
34 RHeel (``feet_keyp_idxs``, on by default), then 35..39 the left and 40..44 the right
fingertips, each thumb, index, middle, ring, pinky (``use_hands``, on by default): 45 in all.
The face keypoints are surface vertices while the body joints lie inside the body, which is why
the occlusion test allows a margin for the body's thickness.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SMPL45_JOINTS = 45
KEYPOINTS = 18

OPENPOSE18_NAMES: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

# How each OpenPose-18 keypoint is made from smplx's 45 joints: a joint index, or a tuple of
# indices whose mean it is. DWPose builds the neck as the mean of COCO's two shoulders
# (DWPose annotator/dwpose/wholebody.py), so the neck is the mean of SMPL's shoulders 16 and 17.
# SMPL's "left" is the subject's left, as OpenPose's is; nothing is mirrored.
SMPL45_TO_OPENPOSE18: tuple[int | tuple[int, ...], ...] = (
    24,        # nose            <- smplx extra joint (vertex 332)
    (16, 17),  # neck            <- mean of L_shoulder, R_shoulder
    17, 19, 21,  # RShoulder, RElbow, RWrist <- R_shoulder, R_elbow, R_wrist
    16, 18, 20,  # LShoulder, LElbow, LWrist <- L_shoulder, L_elbow, L_wrist
    2, 5, 8,   # RHip, RKnee, RAnkle <- R_hip, R_knee, R_ankle
    1, 4, 7,   # LHip, LKnee, LAnkle <- L_hip, L_knee, L_ankle
    25, 26,    # REye, LEye      <- smplx extra joints "reye", "leye"
    27, 28,    # REar, LEar      <- smplx extra joints "rear", "lear"
)  # fmt: skip

NECK = OPENPOSE18_NAMES.index("neck")
R_SHOULDER = OPENPOSE18_NAMES.index("right_shoulder")
L_SHOULDER = OPENPOSE18_NAMES.index("left_shoulder")

# DWPose draws a keypoint (and its limbs) when its score is > 0.3 (annotator/dwpose/__init__.py);
# a visibility above this counts as visible here too, for the skeleton and for the heatmaps.
VISIBILITY_THRESHOLD = 0.3

# --- DWPose's body drawing -----------------------------------------------------------------
# Read in IDEA-Research/DWPose, ControlNet-v1-1-nightly/annotator/dwpose/util.py,
# ``draw_bodypose`` (commit 3dca5db79d9f9ffdd378753ddf6ec66535aace88). Limbs are 1-based pairs of
# OpenPose-18 keypoints; only the first 17 are drawn (``for i in range(17)``): the last two,
# ear-to-shoulder, are listed but never drawn. Limb i and keypoint i both use colours[i], in RGB
# because DWPose draws on the RGB image that ControlNet's annotators get.
DWPOSE_LIMBS_1BASED: tuple[tuple[int, int], ...] = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
    (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18),
)  # fmt: skip
DWPOSE_DRAWN_LIMBS = 17
DWPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
DWPOSE_STICKWIDTH = 4  # limb half-width, px, hard-coded in draw_bodypose
DWPOSE_RADIUS = 4  # keypoint circle radius, px, hard-coded in draw_bodypose
DWPOSE_LIMB_DIM = 0.6  # the limb layer is multiplied by this before keypoints are drawn
DWPOSE_WORKING_SIZE = 512  # ControlNet's detect_resolution, the size DWPose usually draws at

_SMPL_PAIRS = np.array(
    [(j, j) if isinstance(j, int) else j for j in SMPL45_TO_OPENPOSE18], dtype=np.intp
)  # (18, 2): a single joint is "the mean of itself twice", which is exact in floating point


def openpose18_from_smpl45(joints: np.ndarray) -> np.ndarray:
    """OpenPose-18 keypoints from smplx's 45 SMPL joints, in the same space.

    Args:
        joints: (..., 45, C) joint positions (C is usually 3), any space.

    Returns:
        (..., 18, C) floating point: each keypoint is picked from ``joints`` by
        :data:`SMPL45_TO_OPENPOSE18`; the neck is the mean of the two shoulders.
    """
    joints = np.asarray(joints)
    if joints.ndim < 2 or joints.shape[-2] != SMPL45_JOINTS:
        raise ValueError(f"expected (..., {SMPL45_JOINTS}, C) joints, got {joints.shape}")
    if not np.issubdtype(joints.dtype, np.floating):
        joints = joints.astype(np.float64)
    # A gather of two joints per keypoint + a mean, rather than a (18, 45) weight matrix, so that
    # a NaN in an unused joint (a finger tip, say) cannot leak into the keypoints.
    picked = joints[..., _SMPL_PAIRS, :]  # (..., 18, 2, C)
    return picked.mean(axis=-2, dtype=joints.dtype)


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-space points to pixels.

    Args:
        points_cam: (..., 3) points in OpenCV camera coordinates (x right, y down, z forward).
        K: (3, 3) intrinsic matrix, OpenCV convention (pixel centres at integer coordinates).

    Returns:
        (..., 2) pixel coordinates (x = column, y = row). Points with z <= 0 get the formula's
        value too (mirrored through the centre), with z kept at least 1e-9 in magnitude so
        that the result stays finite; callers mark them invisible.
    """
    points = np.asarray(points_cam, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if points.shape[-1] != 3 or K.shape != (3, 3):
        raise ValueError(f"expected (..., 3) points and a (3, 3) K, got {points.shape}, {K.shape}")
    homogeneous = points @ K.T  # (..., 3); K's last row is usually (0, 0, 1), but skew is allowed
    w = homogeneous[..., 2:]
    w = np.where(np.abs(w) < 1e-9, np.where(w < 0, -1e-9, 1e-9), w)
    return homogeneous[..., :2] / w


def keypoints2d(
    joints_cam: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    depth: np.ndarray | None = None,
    occlusion_margin: float = 0.12,
) -> np.ndarray:
    """OpenPose-18 keypoints in pixels with visibility, from camera-space SMPL joints.

    A keypoint is visible (1.0) when it is in front of the camera (z > 0), its pixel is inside
    the image, and, given a depth map, it is not hidden behind a surface:
    ``z_keypoint - depth[row, col] <= occlusion_margin`` wherever ``depth > 0``. Joints sit
    inside the body, so the margin (metres) lets the body's own front surface through; a
    background pixel (depth 0) hides nothing. Otherwise visibility is 0.0 and the projected x, y
    are kept anyway.

    The neck is handled as DWPose handles it (annotator/dwpose/wholebody.py): its x, y are the
    mean of the two shoulders' pixels, and it is visible only when both shoulders are.

    Args:
        joints_cam: (T, 45, 3) smplx SMPL joints in metres, OpenCV camera coordinates.
        K: (3, 3) OpenCV intrinsics.
        width, height: image size in pixels.
        depth: optional (T, height, width) metric z map (the renderer's ``maps/depth``),
            0 = background.
        occlusion_margin: how far (metres) a keypoint may lie behind the visible surface.

    Returns:
        (T, 18, 3) float32: x, y pixels, visibility in {0.0, 1.0}.
    """
    joints_cam = np.asarray(joints_cam)
    if joints_cam.ndim != 3 or joints_cam.shape[1:] != (SMPL45_JOINTS, 3):
        raise ValueError(f"expected (T, {SMPL45_JOINTS}, 3) joints, got {joints_cam.shape}")
    points = openpose18_from_smpl45(joints_cam.astype(np.float64))  # (T, 18, 3)
    xy = project(points, K)  # (T, 18, 2)
    z = points[..., 2]

    # The nearest pixel (pixel centres are integers); inside iff that pixel exists.
    col = np.floor(xy[..., 0] + 0.5)
    row = np.floor(xy[..., 1] + 0.5)
    finite = np.isfinite(xy).all(axis=-1)
    inside = finite & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    visible = (z > 0) & inside

    if depth is not None:
        depth = np.asarray(depth)
        if depth.shape != (joints_cam.shape[0], height, width):
            raise ValueError(
                f"depth must be (T, H, W) = {(joints_cam.shape[0], height, width)}, "
                f"got {depth.shape}"
            )
        # Clip so that the gather is valid everywhere; outside pixels are invisible already.
        rows = np.clip(row, 0, height - 1).astype(np.intp)
        cols = np.clip(col, 0, width - 1).astype(np.intp)
        frames = np.arange(depth.shape[0])[:, None]
        surface = depth[frames, rows, cols].astype(np.float64)  # (T, 18)
        hidden = (surface > 0) & (z - surface > occlusion_margin)
        visible &= ~hidden

    # DWPose's neck is a 2D construct: the midpoint of the detected shoulders, scored as
    # visible only when both are. The midpoint of the projections differs slightly from the
    # projection of the 3D midpoint under perspective; the 2D one is what DWPose would draw.
    xy[:, NECK] = 0.5 * (xy[:, R_SHOULDER] + xy[:, L_SHOULDER])
    visible[:, NECK] = visible[:, R_SHOULDER] & visible[:, L_SHOULDER]

    out = np.empty((*points.shape[:2], 3), dtype=np.float32)
    out[..., :2] = xy
    out[..., 2] = visible
    return out


def gaussian_heatmaps(
    keypoints: np.ndarray, width: int, height: int, size: int = 64, sigma: float = 1.5
) -> np.ndarray:
    """Gaussian heatmaps of keypoints at ``size`` x ``size``.

    A keypoint at image pixel coordinates (x, y) maps to heatmap coordinates
    ``((x + 0.5) * size / width - 0.5, (y + 0.5) * size / height - 0.5)``: pixel centres of the
    image map onto pixel centres of the heatmap (both are at integers), so the image's extent
    [-0.5, W - 0.5) maps onto the heatmap's [-0.5, size - 0.5). The Gaussian is centred at
    that sub-pixel position and scaled so that its largest heatmap pixel (the nearest one to the
    centre) is exactly 1.0, which keeps every target's peak at the same height. Keypoints that
    are invisible (visibility <= 0.3, as DWPose thresholds), non-finite or outside the image
    get an all-zero map.

    Args:
        keypoints: (..., 18, 3) x, y pixels + visibility (:func:`keypoints2d`'s output).
        width, height: size of the image the pixels refer to.
        size: heatmap side M.
        sigma: Gaussian standard deviation in heatmap pixels.

    Returns:
        (..., 18, size, size) float16.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.shape[-1] != 3:
        raise ValueError(f"expected (..., K, 3) keypoints, got {keypoints.shape}")
    scale = np.array([size / width, size / height], dtype=np.float32)
    centre = (keypoints[..., :2] + 0.5) * scale - 0.5  # (..., K, 2) heatmap coordinates
    nearest = np.floor(centre + 0.5)
    drawable = (
        (keypoints[..., 2] > VISIBILITY_THRESHOLD)
        & np.isfinite(centre).all(axis=-1)
        & ((nearest >= 0) & (nearest < size)).all(axis=-1)
    )
    # Invisible maps are zeroed below; give them a harmless centre so no inf/NaN is computed.
    centre = np.where(drawable[..., None], centre, 0.0)

    # The 2D Gaussian is separable: a row profile times a column profile, (..., K, M) each,
    # and the maximum of the product is the product of the maxima (at the nearest pixel).
    grid = np.arange(size, dtype=np.float32)
    gx = np.exp(-((grid - centre[..., 0:1]) ** 2) / np.float32(2 * sigma**2))
    gy = np.exp(-((grid - centre[..., 1:2]) ** 2) / np.float32(2 * sigma**2))
    gx /= gx.max(axis=-1, keepdims=True)
    gy /= gy.max(axis=-1, keepdims=True)
    gx *= drawable[..., None]
    maps = gy[..., :, None] * gx[..., None, :]
    return maps.astype(np.float16)


def default_stickwidth(width: int, height: int) -> int:
    """Limb half-width and keypoint radius for an image: DWPose's 4 px at 512, scaled.

    DWPose draws at ControlNet's working size (512 on the long side by default) with 4 px sticks
    and circles; an image of another size gets ``round(4 * max(W, H) / 512)``, at least 1, so
    that the skeleton covers the same fraction of the frame (5 px at 640, 8 px at 1024).
    """
    return max(1, round(DWPOSE_STICKWIDTH * max(width, height) / DWPOSE_WORKING_SIZE))


def draw_skeleton(
    keypoints: np.ndarray,
    width: int,
    height: int,
    stickwidth: int | None = None,
    radius: int | None = None,
) -> np.ndarray:
    """The body skeleton drawn exactly as DWPose's ``draw_bodypose`` draws one person.

    On a black RGB canvas: each of the first 17 limbs whose two keypoints are visible is a
    filled ellipse (``cv2.ellipse2Poly`` + ``cv2.fillConvexPoly``) in its colour, later limbs
    over earlier ones; the whole canvas is then multiplied by 0.6 (limbs end up at 60 %
    brightness, truncated to uint8); then each visible keypoint is a filled circle in its
    full colour. Coordinates are truncated with ``int()`` as DWPose does, and DWPose's
    normalise-then-rescale of the pixel coordinates (``x / W * W`` in float32) is kept so that
    the result is bit-identical to DWPose given the same float32 keypoints.

    Args:
        keypoints: (18, 3) x, y pixels + visibility; visible means > 0.3, as in DWPose.
        width, height: canvas size.
        stickwidth: limb half-width in px; default :func:`default_stickwidth`.
        radius: keypoint circle radius in px; default :func:`default_stickwidth` too (DWPose
            uses 4 for both).

    Returns:
        (height, width, 3) uint8 RGB.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.shape != (KEYPOINTS, 3):
        raise ValueError(f"expected ({KEYPOINTS}, 3) keypoints, got {keypoints.shape}")
    if stickwidth is None:
        stickwidth = default_stickwidth(width, height)
    if radius is None:
        radius = default_stickwidth(width, height)

    # DWPose receives keypoints normalised by the image size and multiplies them back.
    x = keypoints[:, 0] / np.float32(width) * np.float32(width)
    y = keypoints[:, 1] / np.float32(height) * np.float32(height)
    visible = (keypoints[:, 2] > VISIBILITY_THRESHOLD) & np.isfinite(x) & np.isfinite(y)

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    # A Python loop over 17 limbs and 18 circles: this is OpenCV drawing, not per-pixel work.
    for i in range(DWPOSE_DRAWN_LIMBS):
        a, b = (k - 1 for k in DWPOSE_LIMBS_1BASED[i])
        if not (visible[a] and visible[b]):
            continue
        # DWPose names the column Y and the row X; spelled out here with the same arithmetic.
        cols, rows = x[[a, b]], y[[a, b]]
        mid_row, mid_col = np.mean(rows), np.mean(cols)
        length = ((rows[0] - rows[1]) ** 2 + (cols[0] - cols[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(rows[0] - rows[1], cols[0] - cols[1]))
        polygon = cv2.ellipse2Poly(
            (int(mid_col), int(mid_row)), (int(length / 2), stickwidth), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, polygon, DWPOSE_COLORS[i])

    canvas = (canvas * DWPOSE_LIMB_DIM).astype(np.uint8)

    for i in range(KEYPOINTS):
        if visible[i]:
            cv2.circle(canvas, (int(x[i]), int(y[i])), radius, DWPOSE_COLORS[i], thickness=-1)
    return canvas
