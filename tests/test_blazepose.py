"""BlazePose (tasks/blazepose.py): its geometry on hand-made inputs, and the real models (from
``scripts/fetch_blazepose.sh``) on a person drawn with cv2 here; those tests skip, saying why,
when the model folder is absent."""

from __future__ import annotations

import math
import shutil
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from dancegen.errors import InputError

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (LiteRT) is not installed")

from dancegen.tasks.blazepose import (
    DETECTOR_FILE,
    DETECTOR_SIZE,
    LANDMARK_FILE,
    LANDMARK_SIZE,
    NUM_ANCHORS,
    BlazePose,
    Roi,
    apply_affine,
    best_detection,
    decode_detections,
    default_folder,
    detection_roi,
    detector_input,
    detector_matrix,
    landmark_input,
    letterbox_padding,
    openpose18_from_blazepose,
    refine_from_heatmap,
    remove_letterbox,
    roi_matrix,
    ssd_anchors,
)
from dancegen.tasks.pose2d import OPENPOSE18_NAMES

REPO = Path(__file__).resolve().parents[1]
FETCH = REPO / "scripts" / "fetch_blazepose.sh"
KP = {name: i for i, name in enumerate(OPENPOSE18_NAMES)}
SIDES = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear")


# --- a person drawn with cv2 -----------------------------------------------------------------


def draw_person(size: int, height_frac: float) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """(RGB image, named part positions in pixels, head unit in pixels): an upright,
    front-facing figure (the subject's right on the image's left) of ``height_frac`` x the
    image height, 8 head units tall, skin, shirt, trousers and shoes on a plain background."""
    img = np.full((size, size, 3), (60, 64, 72), np.uint8)
    unit = size * height_frac / 8
    top = (size - 8 * unit) / 2

    def at(x: float, y: float) -> tuple[int, int]:
        return round(size / 2 + x * unit), round(top + y * unit)

    skin, shirt, trousers, shoe = (224, 172, 140), (40, 90, 200), (30, 30, 50), (230, 230, 230)
    thick = max(1, round(unit * 0.45))
    parts: dict[str, np.ndarray] = {"head": np.array(at(0, 0.6), float)}
    for side, s in (("right", -1), ("left", 1)):  # subject's right = image left
        cv2.line(img, at(0.45 * s, 4.0), at(0.55 * s, 6.0), trousers, round(thick * 1.4))
        cv2.line(img, at(0.55 * s, 6.0), at(0.6 * s, 7.8), trousers, round(thick * 1.2))
        shoe_axes = (max(1, round(unit * 0.35)), max(1, round(unit * 0.15)))
        cv2.ellipse(img, at(0.75 * s, 7.9), shoe_axes, 0, 0, 360, shoe, -1)
        parts[f"{side}_shoulder"] = np.array(at(1.0 * s, 1.7), float)
        parts[f"{side}_hip"] = np.array(at(0.5 * s, 4.1), float)
        parts[f"{side}_knee"] = np.array(at(0.55 * s, 6.0), float)
        parts[f"{side}_ankle"] = np.array(at(0.6 * s, 7.8), float)
        parts[f"{side}_wrist"] = np.array(at(1.75 * s, 4.1), float)
    cv2.fillConvexPoly(img, np.array([at(-1.0, 1.6), at(1.0, 1.6), at(0.75, 4.2), at(-0.75, 4.2)],
                                     np.int32), shirt)
    for s in (-1, 1):
        cv2.line(img, at(0.95 * s, 1.75), at(1.45 * s, 3.0), shirt, thick)
        cv2.line(img, at(1.45 * s, 3.0), at(1.75 * s, 4.1), skin, max(1, round(thick * 0.8)))
        cv2.circle(img, at(1.8 * s, 4.25), max(1, round(unit * 0.18)), skin, -1)
    cv2.line(img, at(0, 1.2), at(0, 1.7), skin, thick)
    cv2.ellipse(img, at(0, 0.6), (round(unit * 0.42), round(unit * 0.55)), 0, 0, 360, skin, -1)
    cv2.ellipse(img, at(0, 0.25), (round(unit * 0.44), round(unit * 0.3)), 0, 180, 360,
                (50, 35, 25), -1)  # hair
    for s in (-1, 1):
        cv2.circle(img, at(0.17 * s, 0.58), max(1, round(unit * 0.06)), (30, 30, 30), -1)  # eyes
    cv2.ellipse(img, at(0, 0.9), (max(1, round(unit * 0.12)), max(1, round(unit * 0.04))), 0, 0,
                360, (150, 60, 60), -1)  # mouth
    return img, parts, unit


# --- the models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folder() -> Path:
    folder = default_folder()
    if not all((folder / name).is_file() for name in (DETECTOR_FILE, LANDMARK_FILE)):
        pytest.skip(f"BlazePose models not in {folder}: run scripts/fetch_blazepose.sh")
    return folder


@pytest.fixture(scope="module")
def blazepose(model_folder: Path) -> BlazePose:
    return BlazePose.from_folder(model_folder, threads=1)


@pytest.mark.parametrize("size, height_frac", [(256, 0.8), (128, 0.4)])
def test_finds_the_drawn_person_where_it_is(blazepose: BlazePose, size: int,
                                            height_frac: float) -> None:
    img, parts, unit = draw_person(size, height_frac)
    kp = blazepose.keypoints(img[None])
    assert kp.shape == (1, 18, 3) and kp.dtype == np.float32
    kp = kp[0]
    assert (kp[:, 2] > 0.5).all(), kp[:, 2]  # a clear, unoccluded figure: everything visible
    xy = kp[:, :2]

    def off(name: str, part: str | None = None) -> float:
        return float(np.linalg.norm(xy[KP[name]] - parts[part or name]) / unit)

    assert off("nose", "head") < 0.6  # inside the head ellipse (0.42 x 0.55 units)
    for side in ("right", "left"):
        for joint, tolerance in (("shoulder", 0.6), ("hip", 0.8), ("knee", 0.8),
                                 ("ankle", 0.8), ("wrist", 0.8)):
            assert off(f"{side}_{joint}") < tolerance, (side, joint, off(f"{side}_{joint}"))
    # not mirrored: the subject's right parts lie left in the image
    for part in SIDES:
        assert xy[KP[f"right_{part}"], 0] < xy[KP[f"left_{part}"], 0], part
    # upright: head above shoulders above hips above knees above ankles
    for upper, lower in (("nose", "neck"), ("neck", "right_hip"), ("right_hip", "right_knee"),
                         ("right_knee", "right_ankle"), ("left_hip", "left_knee"),
                         ("left_knee", "left_ankle")):
        assert xy[KP[upper], 1] < xy[KP[lower], 1], (upper, lower)
    assert np.allclose(xy[KP["neck"]], (xy[KP["right_shoulder"]] + xy[KP["left_shoulder"]]) / 2,
                       atol=1e-3)


def test_upscaling_small_frames_keeps_frame_pixels(model_folder: Path) -> None:
    """Detected at 128 px directly and after upscaling to 256: the same place in the frame."""
    img, parts, unit = draw_person(128, 0.8)
    native = BlazePose.from_folder(model_folder, min_size=0, threads=1).keypoints(img[None])[0]
    upscaled = BlazePose.from_folder(model_folder, min_size=256, threads=1).keypoints(img[None])[0]
    assert (native[:, 2] > 0.5).all() and (upscaled[:, 2] > 0.5).all()
    assert np.median(np.linalg.norm(native[:, :2] - upscaled[:, :2], axis=1)) < 0.5 * unit
    assert np.linalg.norm(upscaled[KP["nose"], :2] - parts["head"]) < 0.6 * unit


@pytest.mark.parametrize("colour", [0, 128, 255])
def test_an_empty_frame_has_no_person(blazepose: BlazePose, colour: int) -> None:
    frames = np.full((2, 128, 96, 3), colour, np.uint8)
    kp = blazepose.keypoints(frames)
    assert kp.shape == (2, 18, 3)
    assert (kp == 0).all()


def test_frames_are_checked_and_none_is_fine(blazepose: BlazePose) -> None:
    assert blazepose.keypoints(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 18, 3)
    with pytest.raises(ValueError, match="uint8 RGB"):
        blazepose.keypoints(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        blazepose.keypoints(np.zeros((64, 64, 3), np.uint8))


def test_the_label_names_the_model_and_the_wheel(blazepose: BlazePose) -> None:
    assert blazepose.label == "BlazePose full (MediaPipe 0.10.21 wheel)"
    assert blazepose.name == "BlazePose full"


# --- errors ------------------------------------------------------------------------------------


def test_a_missing_folder_or_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"not a folder.*fetch_blazepose"):
        BlazePose.from_folder(tmp_path / "nowhere")
    with pytest.raises(InputError, match=f"{DETECTOR_FILE} is missing"):
        BlazePose.from_folder(tmp_path)


def test_a_garbage_tflite_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / DETECTOR_FILE).write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / LANDMARK_FILE).write_bytes(b"not a model")
    with pytest.raises(InputError, match=f"{DETECTOR_FILE} is not a readable TFLite model"):
        BlazePose.from_folder(tmp_path)


def test_a_model_of_the_wrong_shape_is_an_input_error(model_folder: Path, tmp_path: Path) -> None:
    # the two real models swapped: each readable, neither with the other's inputs and outputs
    shutil.copy(model_folder / LANDMARK_FILE, tmp_path / DETECTOR_FILE)
    shutil.copy(model_folder / DETECTOR_FILE, tmp_path / LANDMARK_FILE)
    with pytest.raises(InputError, match=rf"{DETECTOR_FILE}: expected one float32 input "
                                         rf"\(1, {DETECTOR_SIZE}, {DETECTOR_SIZE}, 3\)"):
        BlazePose.from_folder(tmp_path)
    # the detector in both places: the landmark model's place refuses it
    shutil.copy(model_folder / DETECTOR_FILE, tmp_path / DETECTOR_FILE)
    with pytest.raises(InputError, match=rf"{LANDMARK_FILE}: expected one float32 input "
                                         rf"\(1, {LANDMARK_SIZE}, {LANDMARK_SIZE}, 3\)"):
        BlazePose.from_folder(tmp_path)


def test_fetch_script_refuses_a_wrong_wheel(tmp_path: Path) -> None:
    fake = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("mediapipe/modules/pose_detection/pose_detection.tflite", b"fake")
        archive.writestr("mediapipe/modules/pose_landmark/pose_landmark_full.tflite", b"fake")
    target = tmp_path / "models"
    result = subprocess.run(["bash", str(FETCH), str(target)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "BLAZEPOSE_WHEEL": str(fake)},
                            check=False)
    assert result.returncode != 0
    assert "sha256" in result.stderr and "expected 05dc4a9e" in result.stderr
    assert not (target / DETECTOR_FILE).exists()


# --- the 33 -> 18 mapping ----------------------------------------------------------------------

# BlazePose's landmark order (mediapipe/modules/pose_landmark/pose_landmark_by_roi_cpu.pbtxt)
BLAZEPOSE33 = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip


def test_openpose18_from_blazepose33_by_name() -> None:
    landmarks = np.stack([np.arange(33) * 3.0, 100.0 + np.arange(33), np.linspace(0.2, 0.9, 33)],
                         axis=-1)[None]
    out = openpose18_from_blazepose(landmarks)
    assert out.shape == (1, 18, 3)
    for name, index in KP.items():
        if name == "neck":
            continue
        assert np.array_equal(out[0, index], landmarks[0, BLAZEPOSE33.index(name)]), name
    r, lft = landmarks[0, BLAZEPOSE33.index("right_shoulder")], landmarks[0, BLAZEPOSE33.index(
        "left_shoulder")]
    assert np.allclose(out[0, KP["neck"], :2], (r[:2] + lft[:2]) / 2)
    assert out[0, KP["neck"], 2] == min(r[2], lft[2])


# --- geometry ----------------------------------------------------------------------------------


def test_anchors_follow_the_ssd_options() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (NUM_ANCHORS, 2)
    # stride 8: a 28 x 28 grid, two anchors per cell, x fastest
    assert np.allclose(anchors[0], anchors[1]) and np.allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    assert np.allclose(anchors[2], [1.5 / 28, 0.5 / 28])
    assert np.allclose(anchors[2 * 28], [0.5 / 28, 1.5 / 28])
    # stride 16 starts after 28*28*2; the three stride-32 layers merge: 6 anchors per 7x7 cell
    assert np.allclose(anchors[1568], [0.5 / 14, 0.5 / 14])
    assert np.allclose(anchors[1568 + 392:1568 + 392 + 6], [0.5 / 7, 0.5 / 7])
    assert np.allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def test_decoding_and_weighted_nms() -> None:
    anchors = ssd_anchors()
    raw = np.zeros((NUM_ANCHORS, 12), np.float32)
    logits = np.full(NUM_ANCHORS, -10.0, np.float32)
    # two overlapping boxes at anchors 100 and 101 (one cell) and a far one at anchor 1500
    for index, shift, logit in ((100, 0.0, 3.0), (101, 2.24, 1.0), (1500, 0.0, 5.0)):
        raw[index, :4] = (shift, 0.0, 44.8, 44.8)  # x, y offset (px of 224), w, h
        raw[index, 4:] = np.tile([0.0, 22.4], 4) + [shift, 0.0] * 4  # keypoints 0.1 below
        logits[index] = logit
    logits[500] = 0.0  # sigmoid 0.5: kept (min score 0.5 is inclusive)
    logits[501] = -0.01  # just under: dropped
    boxes, keypoints, scores = decode_detections(raw, logits, anchors)
    assert len(scores) == 4
    i = int(np.argmin(np.abs(scores - 1 / (1 + math.exp(-3.0)))))
    centre = anchors[100]
    assert np.allclose(boxes[i], [*(centre - 0.1), *(centre + 0.1)], atol=1e-6)
    assert np.allclose(keypoints[i], centre + np.array([0.0, 0.1]), atol=1e-6)
    # the best box (anchor 1500) alone; then without it, 100 and 101 merge by score weight
    _, points, score = best_detection(boxes, keypoints, scores)
    assert np.isclose(score, 1 / (1 + math.exp(-5.0)))
    assert np.allclose(points[0], anchors[1500] + np.array([0.0, 0.1]))
    keep = np.arange(len(scores)) != int(np.argmax(scores))
    _, points, score = best_detection(boxes[keep], keypoints[keep], scores[keep])
    s3, s1 = 1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(-1.0))
    expected_x = (s3 * anchors[100][0] + s1 * (anchors[101][0] + 0.01)) / (s3 + s1)
    assert np.isclose(points[0, 0], expected_x) and np.isclose(score, s3)
    assert best_detection(boxes[:0], keypoints[:0], scores[:0]) is None


@pytest.mark.parametrize("width, height", [(128, 128), (320, 180), (90, 160)])
def test_letterbox_round_trip(width: int, height: int) -> None:
    points = np.array([[0.0, 0.0], [width - 1.0, height - 1.0], [width * 0.3, height * 0.8]])
    tensor = apply_affine(detector_matrix(width, height), points) / DETECTOR_SIZE
    back = remove_letterbox(tensor, letterbox_padding(width, height)) * [width, height]
    assert np.allclose(back, points)
    # the frame's centre is the tensor's; the longer side spans the tensor
    assert np.allclose(apply_affine(detector_matrix(width, height), [width / 2, height / 2]),
                       DETECTOR_SIZE / 2)
    pad_x, pad_y = letterbox_padding(width, height)
    assert min(pad_x, pad_y) == 0.0
    assert np.isclose(max(pad_x, pad_y), (1 - min(width, height) / max(width, height)) / 2)


def test_roi_rotation_makes_the_body_upright_and_round_trips() -> None:
    hip = np.array([60.0, 70.0])
    # upright person: the scale point straight above the hips -> no rotation
    upright = detection_roi(hip, hip + np.array([0.0, -20.0]))
    assert np.isclose(upright.rotation, 0.0) and np.isclose(upright.size, 2 * 20 * 1.25)
    # lying with the head to the right (scale point right of the hips): after the crop the
    # scale point is straight above the crop's centre, at 1 / (2 * 1.25) of the side
    for offset in ([20.0, 0.0], [-14.0, 9.0], [5.0, 25.0]):
        roi = detection_roi(hip, hip + offset)
        matrix = roi_matrix(roi)
        assert np.allclose(apply_affine(matrix, hip), LANDMARK_SIZE / 2)
        crop_scale = apply_affine(matrix, hip + offset)
        assert np.allclose(crop_scale, [LANDMARK_SIZE / 2, LANDMARK_SIZE / 2 * (1 - 1 / 1.25)],
                           atol=1e-3)
        # crop -> frame with the inverse, and with MediaPipe's LandmarkProjectionCalculator
        # formula (square frame): rotate the normalised point about 0.5, scale, shift
        crop_points = np.array([[10.0, 200.0], [128.0, 5.0], [250.0, 250.0]])
        frame = apply_affine(cv2.invertAffineTransform(matrix), crop_points)
        assert np.allclose(apply_affine(matrix, frame), crop_points, atol=1e-6)
        n = crop_points / LANDMARK_SIZE - 0.5
        c, s = math.cos(roi.rotation), math.sin(roi.rotation)
        projected = np.stack([c * n[:, 0] - s * n[:, 1], s * n[:, 0] + c * n[:, 1]], axis=1)
        assert np.allclose(projected * roi.size + [roi.x, roi.y], frame, atol=1e-3)


def test_model_inputs_are_normalised_as_mediapipe() -> None:
    # detector: RGB to [-1, 1], letterboxed with a zero (black) border, so -1 there
    frame = np.zeros((50, 100, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 255, 0, 51
    tensor = detector_input(frame)
    assert tensor.shape == (1, DETECTOR_SIZE, DETECTOR_SIZE, 3) and tensor.dtype == np.float32
    assert np.allclose(tensor[0, DETECTOR_SIZE // 2, DETECTOR_SIZE // 2], [1.0, -1.0, -0.6])
    assert np.allclose(tensor[0, :50], -1.0) and np.allclose(tensor[0, -50:], -1.0)
    # landmark crop: RGB to [0, 1], replicated border (an ROI larger than the frame stays flat)
    crop = landmark_input(frame, roi_matrix(Roi(50.0, 25.0, 300.0, 0.3)))
    assert crop.shape == (1, LANDMARK_SIZE, LANDMARK_SIZE, 3) and crop.dtype == np.float32
    assert np.allclose(crop[0], [1.0, 0.0, 0.2])


def test_roi_matrix_matches_cv2_rotated_rect_corners() -> None:
    roi = Roi(50.0, 40.0, 30.0, math.radians(30))
    corners = cv2.boxPoints(((50.0, 40.0), (30.0, 30.0), 30.0))
    crop = apply_affine(roi_matrix(roi, 256), corners)
    assert np.allclose(crop, [[0, 256], [0, 0], [256, 0], [256, 256]], atol=1e-3)


def test_heatmap_refinement() -> None:
    heatmap = np.full((64, 64, 2), -20.0, np.float32)
    heatmap[20, 30, 0] = heatmap[20, 32, 0] = 5.0  # two equal peaks: the mean, col 31
    heatmap[40, 10, 1] = -1.0  # sigmoid 0.27 at most: below min_confidence_to_refine 0.5
    xy = np.array([[31.2 / 64, 20.4 / 64], [10.5 / 64, 40.5 / 64]])
    out = refine_from_heatmap(xy, heatmap)
    assert np.allclose(out[0], [31 / 64, 20 / 64], atol=1e-6)
    assert np.allclose(out[1], xy[1])
    outside = refine_from_heatmap(np.array([[1.2, 0.5], [-0.1, 0.5]]), heatmap)
    assert np.allclose(outside, [[1.2, 0.5], [-0.1, 0.5]])
