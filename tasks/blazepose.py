"""BlazePose (MediaPipe Pose, 33 landmarks) body keypoints of video frames, in OpenPose-18 order.

An offline 2D pose detector for the evaluation, from Google's pretrained BlazePose "full"
models as the PyPI wheel ``mediapipe==0.10.21`` ships them (``pose_detection.tflite`` and
``pose_landmark_full.tflite``; ``scripts/fetch_blazepose.sh`` takes them out of the wheel).
mediapipe itself is not installed (it pins numpy<2); the two TFLite models run in Google's
LiteRT interpreter (``ai-edge-litert``) and we re-implement what MediaPipe's CPU pose graphs do
around them. Read in google-ai-edge/mediapipe at tag v0.10.21 (commit
cad7f3ab99ebf175947e40c5252c642612aae927); paths below are under ``mediapipe/``.

Person detection, ``modules/pose_detection/pose_detection_cpu.pbtxt``:

* **letterbox** (``ImageToTensorCalculator``, ``calculators/tensor/image_to_tensor_utils.cc``
  ``GetRoi`` + ``PadRoi``, ``image_to_tensor_converter_opencv.cc``): the whole frame, padded to
  a square keeping its aspect ratio (``keep_aspect_ratio: true``), into 224 x 224 with a
  bilinear warp and a zero border (``BORDER_ZERO``); the rectangle's corners map onto the
  tensor's corners (0, 0) .. (224, 224);
* **normalisation**: RGB ``pixel / 255 * 2 - 1`` (``output_tensor_float_range {-1, 1}``), NHWC;
* **anchors** (``SsdAnchorsCalculator``, ``calculators/tflite/ssd_anchors_calculator.cc``):
  num_layers 5, strides 8, 16, 32, 32, 32 on a 224 x 224 input, anchor offset 0.5, aspect ratio
  1.0 plus the default ``interpolated_scale_aspect_ratio`` 1.0 (two anchors per cell),
  ``fixed_anchor_size`` (w = h = 1, so min_scale 0.1484375 / max_scale 0.75 do not enter):
  28x28x2 + 14x14x2 + 7x7x6 = 2254 anchor centres, strides 32 merged into one layer;
* **decoding** (``TensorsToDetectionsCalculator``, ``calculators/tensor/
  tensors_to_detections_calculator.cc`` ``DecodeBoxes``): 12 values per box,
  ``reverse_output_order`` so x, y, w, h then 4 keypoints (x, y); each divided by the scale 224,
  times the anchor size 1, plus the anchor centre; score = sigmoid of the logit clipped to
  [-100, 100]; boxes scoring below 0.5 dropped (``min_score_thresh: 0.5`` at v0.10.21);
* **NMS** (``NonMaxSuppressionCalculator``, ``calculators/util/non_max_suppression_calculator.cc``
  ``WeightedNonMaxSuppression``): IoU overlap, min_suppression_threshold 0.3, ``WEIGHTED``:
  the best box and keypoints become the score-weighted mean of all boxes overlapping it by
  more than 0.3. ``pose_landmark_cpu.pbtxt`` keeps only the first (best) detection, so that is
  the only one computed;
* **letterbox removal** (``calculators/util/detection_letterbox_removal_calculator.cc``):
  ``(p - pad) / (1 - 2 pad)`` per axis, giving coordinates normalised to the frame.

Region of interest, ``modules/pose_landmark/pose_detection_to_roi.pbtxt``:

* ``AlignmentPointsRectsCalculator`` (``calculators/util/alignment_points_to_rects_calculator.cc``)
  with keypoints 0 (hip centre) and 1 (the point encoding size and rotation): centre = keypoint
  0, size = 2 x the distance 0-1, in pixels; rotation (``detections_to_rects_calculator.cc``
  ``ComputeRotation``) = ``normalize(pi/2 - atan2(-(y1 - y0), x1 - x0))`` so the body is upright;
* ``RectTransformationCalculator`` (``rect_transformation_calculator.cc``): ``square_long``,
  then scale 1.25 x 1.25.

Landmarks, ``modules/pose_landmark/pose_landmark_by_roi_cpu.pbtxt``,
``tensors_to_pose_landmarks_and_segmentation.pbtxt`` and
``pose_landmarks_and_segmentation_inverse_projection.pbtxt``:

* **crop**: the rotated square ROI into 256 x 256 as the OpenCV converter does it
  (``cv::boxPoints`` of the rotated rectangle mapped onto the tensor's corners, bilinear,
  ``BORDER_REPLICATE``, the default border mode); the ROI is square so there is no letterbox;
* **normalisation**: RGB ``pixel / 255`` (``output_tensor_float_range {0, 1}``);
* **outputs** (``SplitTensorVectorCalculator`` ranges): 0 landmarks (1, 195) = 39 x (x, y, z,
  visibility, presence) in 256-px crop coordinates, 1 pose flag (1, 1), 2 segmentation,
  3 heatmap (1, 64, 64, 39), 4 world landmarks; found here by shape. Pose present when the flag
  is >= 0.5 (``ThresholdingCalculator``; the flag is used as the model gives it);
* ``TensorsToLandmarksCalculator``: x / 256, y / 256; visibility and presence through a sigmoid;
* ``RefineLandmarksFromHeatmapCalculator`` (``calculators/util/
  refine_landmarks_from_heatmap_calculator.cc``), kernel 7, min_confidence_to_refine 0.5
  (default): a landmark moves to the sigmoid-weighted mean ``(col, row) / 64`` of the 7 x 7
  heatmap window around it when the window's maximum is >= 0.5;
* back to the frame (``LandmarkProjectionCalculator``): the inverse of the crop affine. MediaPipe
  rotates in coordinates normalised to the frame, which equals this for square frames (ours)
  and for unrotated ROIs; on non-square frames with a rotated ROI ours is the exact inverse.
  The first 33 of the 39 landmarks are the pose (``SplitNormalizedLandmarkListCalculator``).

Not re-implemented: tracking (reusing the previous frame's landmarks ROI), landmark smoothing
(``pose_landmark_filtering.pbtxt``), segmentation, world landmarks. Every frame is detected
afresh. MediaPipe's normalised coordinates times the frame size are our pixel coordinates.

OpenPose-18: the 33 BlazePose landmarks (``pose_landmark_by_roi_cpu.pbtxt`` lists them;
"left" is the subject's left, as in OpenPose) map by :data:`OPENPOSE18_FROM_BLAZEPOSE`; the
neck is the mean of the two shoulders, scored by the smaller of their visibilities. The score
of a keypoint is its visibility (sigmoid), as MediaPipe reports it; a frame where no person is
detected, or the landmark model's pose flag is below 0.5, gets all scores (and x, y) 0.

Small frames: ``min_size`` (default 256) upscales frames whose longer side is shorter, with
bilinear interpolation, before detection; keypoints come back in pixels of the given frame.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from dancegen.errors import InputError

WHAT = "BlazePose model folder"
NAME = "BlazePose full"
DEFAULT_SOURCE = "MediaPipe 0.10.21 wheel"
DETECTOR_FILE = "pose_detection.tflite"
LANDMARK_FILE = "pose_landmark_full.tflite"

# --- pose_detection_cpu.pbtxt ------------------------------------------------------------------
DETECTOR_SIZE = 224
ANCHOR_STRIDES: tuple[int, ...] = (8, 16, 32, 32, 32)
ANCHOR_OFFSET = 0.5
ANCHORS_PER_STRIDE_LAYER = 2  # aspect ratio 1.0 + the interpolated-scale anchor (ratio 1.0)
NUM_ANCHORS = 2254
NUM_COORDS = 12  # box x, y, w, h + 4 keypoints x, y
DETECTION_KEYPOINTS = 4
DETECTION_SCALE = 224.0  # x_scale = y_scale = w_scale = h_scale
SCORE_CLIPPING = 100.0
MIN_DETECTION_SCORE = 0.5
NMS_IOU = 0.3
# --- pose_detection_to_roi.pbtxt ---------------------------------------------------------------
ROI_CENTRE_KEYPOINT, ROI_SCALE_KEYPOINT = 0, 1  # hip centre; size and rotation point
ROI_TARGET_ANGLE = math.pi / 2  # rotation_vector_target_angle_degrees: 90
ROI_SCALE = 1.25
# --- pose_landmark_by_roi_cpu.pbtxt, tensors_to_pose_landmarks_and_segmentation.pbtxt --------
LANDMARK_SIZE = 256
LANDMARK_OUTPUTS = 39  # 33 pose + 6 auxiliary landmarks
LANDMARK_VALUES = 5  # x, y, z, visibility, presence
POSE_LANDMARKS = 33
POSE_FLAG_THRESHOLD = 0.5
HEATMAP_SIZE = 64
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONFIDENCE = 0.5

DEFAULT_MIN_SIZE = 256  # frames smaller than this (longer side) are upscaled before detection

# BlazePose landmark indices (pose_landmark_by_roi_cpu.pbtxt's list)
BP_NOSE, BP_LEFT_EYE, BP_RIGHT_EYE, BP_LEFT_EAR, BP_RIGHT_EAR = 0, 2, 5, 7, 8
BP_LEFT_SHOULDER, BP_RIGHT_SHOULDER = 11, 12
BP_NECK = -1  # marker: the mean of the two shoulders
# "OpenPose keypoint i <- BlazePose landmark", in pose2d.OPENPOSE18_NAMES order
OPENPOSE18_FROM_BLAZEPOSE: tuple[int, ...] = (
    BP_NOSE, BP_NECK,
    BP_RIGHT_SHOULDER, 14, 16,  # right shoulder, elbow, wrist
    BP_LEFT_SHOULDER, 13, 15,   # left shoulder, elbow, wrist
    24, 26, 28,                 # right hip, knee, ankle
    23, 25, 27,                 # left hip, knee, ankle
    BP_RIGHT_EYE, BP_LEFT_EYE, BP_RIGHT_EAR, BP_LEFT_EAR,
)  # fmt: skip


def default_folder() -> Path:
    """Where ``scripts/fetch_blazepose.sh`` puts the models by default: the environment's
    ``share/dancegen/blazepose`` (``.venv/share/dancegen/blazepose`` in this repository)."""
    return Path(sys.prefix) / "share" / "dancegen" / "blazepose"


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# --- detection -----------------------------------------------------------------------------------


def ssd_anchors() -> np.ndarray:
    """(2254, 2) anchor centres (x, y), normalised, in SsdAnchorsCalculator's order: layer by
    layer (equal strides merged), row by row, column by column, anchor by anchor."""
    centres = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        stride = ANCHOR_STRIDES[layer]
        same = 0
        while layer + same < len(ANCHOR_STRIDES) and ANCHOR_STRIDES[layer + same] == stride:
            same += 1
        cells = math.ceil(DETECTOR_SIZE / stride)
        grid = (np.arange(cells) + ANCHOR_OFFSET) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        xy = np.stack([xs, ys], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(xy, ANCHORS_PER_STRIDE_LAYER * same, axis=1).reshape(-1, 2))
        layer += same
    return np.concatenate(centres)


def letterbox_padding(width: int, height: int) -> tuple[float, float]:
    """(horizontal, vertical) padding on each side, as a fraction of the square tensor, of a
    frame letterboxed into a square (``PadRoi`` with keep_aspect_ratio)."""
    if height > width:
        return (1.0 - width / height) / 2.0, 0.0
    return 0.0, (1.0 - height / width) / 2.0


def detector_matrix(width: int, height: int) -> np.ndarray:
    """(2, 3) frame-to-tensor affine of the letterbox: the frame's rectangle, widened to a
    square about its centre, onto (0, 0)..(224, 224)."""
    side = float(max(width, height))
    factor = DETECTOR_SIZE / side
    return np.array([
        [factor, 0.0, DETECTOR_SIZE / 2 - factor * width / 2],
        [0.0, factor, DETECTOR_SIZE / 2 - factor * height / 2],
    ])  # fmt: skip


def detector_input(frame: np.ndarray) -> np.ndarray:
    """(1, 224, 224, 3) float32 in [-1, 1]: the letterboxed RGB frame, zero border."""
    height, width = frame.shape[:2]
    tensor = cv2.warpAffine(frame, detector_matrix(width, height), (DETECTOR_SIZE,) * 2,
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return (tensor.astype(np.float32) / 127.5 - 1.0)[None]


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray,
                      anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (N, 4) xmin, ymin, xmax, ymax; keypoints (N, 4, 2) x, y; scores (N,)) normalised
    to the letterboxed tensor, from the (2254, 12) regressors and (2254,) logits, as
    ``DecodeBoxes`` with XYWH order; boxes scoring below 0.5 dropped."""
    scores = sigmoid(np.clip(raw_scores, -SCORE_CLIPPING, SCORE_CLIPPING))
    keep = scores >= MIN_DETECTION_SCORE
    raw, centre = raw_boxes[keep].astype(np.float64), anchors[keep]
    xy = raw[:, 0:2] / DETECTION_SCALE + centre  # anchor w = h = 1 (fixed_anchor_size)
    wh = raw[:, 2:4] / DETECTION_SCALE
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
    keypoints = raw[:, 4:].reshape(-1, DETECTION_KEYPOINTS, 2) / DETECTION_SCALE + centre[:, None]
    return boxes, keypoints, scores[keep]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (4,) box with (N, 4) boxes, all xmin, ymin, xmax, ymax."""
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def best_detection(boxes: np.ndarray, keypoints: np.ndarray,
                   scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The first detection of ``WeightedNonMaxSuppression`` (IoU > 0.3): box and keypoints are
    the score-weighted means over the boxes overlapping the best one; its score is the best's.
    None when there is no box."""
    if len(scores) == 0:
        return None
    best = int(np.argmax(scores))
    group = iou(boxes[best], boxes) > NMS_IOU
    weights = scores[group] / scores[group].sum()
    box = (boxes[group] * weights[:, None]).sum(axis=0)
    points = (keypoints[group] * weights[:, None, None]).sum(axis=0)
    return box, points, float(scores[best])


def remove_letterbox(points: np.ndarray, padding: tuple[float, float]) -> np.ndarray:
    """Points (..., 2) normalised to the letterboxed tensor -> normalised to the frame."""
    pad = np.asarray(padding, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - pad) / (1.0 - 2.0 * pad)


# --- region of interest --------------------------------------------------------------------------


@dataclass(frozen=True)
class Roi:
    """A rotated square in frame pixels: centre, side, rotation (radians, clockwise on screen
    as cv2.RotatedRect's angle)."""

    x: float
    y: float
    size: float
    rotation: float


def normalize_radians(angle: float) -> float:
    """Angle in [-pi, pi), as MediaPipe's ``NormalizeRadians``."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def detection_roi(centre: np.ndarray, scale_point: np.ndarray) -> Roi:
    """The landmark model's ROI from detection keypoints 0 and 1 in frame pixels
    (``AlignmentPointsRectsCalculator`` then ``RectTransformationCalculator`` scale 1.25)."""
    x0, y0 = (float(v) for v in centre)
    x1, y1 = (float(v) for v in scale_point)
    size = 2.0 * math.hypot(x1 - x0, y1 - y0) * ROI_SCALE  # square already: w = h in pixels
    rotation = normalize_radians(ROI_TARGET_ANGLE - math.atan2(-(y1 - y0), x1 - x0))
    return Roi(x0, y0, size, rotation)


def roi_matrix(roi: Roi, output_size: int = LANDMARK_SIZE) -> np.ndarray:
    """(2, 3) frame-to-crop affine: the rotated square's corners (``cv2.boxPoints``: bottom-left,
    top-left, top-right) onto the crop's (0, S), (0, 0), (S, 0), as the OpenCV converter."""
    corners = cv2.boxPoints(((roi.x, roi.y), (roi.size, roi.size), math.degrees(roi.rotation)))
    size = float(output_size)
    target = np.array([[0.0, size], [0.0, 0.0], [size, 0.0]], dtype=np.float32)
    return cv2.getAffineTransform(corners[:3].astype(np.float32), target).astype(np.float64)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) through a (2, 3) affine."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def landmark_input(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(1, 256, 256, 3) float32 in [0, 1]: the ROI crop, bilinear, replicated border."""
    crop = cv2.warpAffine(frame, matrix, (LANDMARK_SIZE,) * 2, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return (crop.astype(np.float32) / 255.0)[None]


# --- landmarks ------------------------------------------------------------------------------------


def decode_landmarks(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(xy (39, 2) normalised to the crop, visibility (39,)) from the (195,) landmark tensor
    (``TensorsToLandmarksCalculator``: x / 256, y / 256, sigmoid visibility)."""
    values = np.asarray(raw, dtype=np.float64).reshape(LANDMARK_OUTPUTS, LANDMARK_VALUES)
    return values[:, :2] / LANDMARK_SIZE, sigmoid(values[:, 3])


def refine_from_heatmap(xy: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """``RefineLandmarksFromHeatmap`` with kernel 7: each landmark (normalised xy (K, 2)) inside
    the (64, 64, K) heatmap moves to the sigmoid-weighted mean of ``(col, row) / 64`` over the
    window around ``int(xy * 64)`` (clipped at the edges) if the window's maximum is >= 0.5."""
    height, width, channels = heatmap.shape
    out = np.array(xy, dtype=np.float64)
    half = (HEATMAP_KERNEL - 1) // 2
    for k in range(channels):
        col, row = int(xy[k, 0] * width), int(xy[k, 1] * height)  # C++ truncation toward zero
        if not (0 <= col < width and 0 <= row < height):
            continue
        rows = slice(max(0, row - half), min(height, row + half + 1))
        cols = slice(max(0, col - half), min(width, col + half + 1))
        confidence = sigmoid(heatmap[rows, cols, k])
        total = confidence.sum()
        if confidence.max() >= HEATMAP_MIN_CONFIDENCE and total > 0:
            grid_r, grid_c = np.mgrid[rows, cols]
            out[k] = ((grid_c * confidence).sum() / width / total,
                      (grid_r * confidence).sum() / height / total)
    return out


def openpose18_from_blazepose(landmarks: np.ndarray) -> np.ndarray:
    """(N, 18, 3) OpenPose-18 keypoints (x, y, score) from (N, 33, 3) BlazePose landmarks
    (x, y, visibility): the index map :data:`OPENPOSE18_FROM_BLAZEPOSE`; the neck is the mean
    of the two shoulders' x, y with the smaller of their visibilities."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    shoulders = landmarks[:, [BP_RIGHT_SHOULDER, BP_LEFT_SHOULDER]]
    neck = np.concatenate([shoulders[..., :2].mean(axis=1), shoulders[..., 2:].min(axis=1)],
                          axis=-1)
    index = [i if i != BP_NECK else 0 for i in OPENPOSE18_FROM_BLAZEPOSE]
    out = landmarks[:, index].copy()
    out[:, OPENPOSE18_FROM_BLAZEPOSE.index(BP_NECK)] = neck
    return out


def upscale_factor(width: int, height: int, min_size: int) -> float:
    """The factor that brings the frame's longer side up to ``min_size`` (1 if not shorter)."""
    longer = max(width, height)
    return min_size / longer if 0 < longer < min_size else 1.0


# --- the models -----------------------------------------------------------------------------------


def _load(folder: Path, name: str, threads: int | None) -> Interpreter:
    path = folder / name
    if not path.is_file():
        raise InputError(f"{WHAT} {folder}: {name} is missing (run scripts/fetch_blazepose.sh "
                         f"{folder})")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise InputError(f"{WHAT} {folder}: {name} is not a readable TFLite model ({error})") \
            from None
    return interpreter


def _shapes(details: list[dict]) -> list[tuple[str, tuple[int, ...]]]:
    return [(d["name"], tuple(int(s) for s in d["shape"])) for d in details]


def _float_input(interpreter: Interpreter, folder: Path, name: str, size: int) -> int:
    """Index of the model's one float32 (1, size, size, 3) input; InputError otherwise."""
    inputs = interpreter.get_input_details()
    want = (1, size, size, 3)
    if (len(inputs) != 1 or tuple(inputs[0]["shape"]) != want
            or inputs[0]["dtype"] != np.float32):
        raise InputError(f"{WHAT} {folder}: {name}: expected one float32 input {want}, got "
                         f"{_shapes(inputs)}")
    return int(inputs[0]["index"])


def _outputs_by_shape(interpreter: Interpreter, folder: Path, name: str,
                      wanted: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Output tensor index per role, each found by its (unique) shape; InputError otherwise."""
    outputs = interpreter.get_output_details()
    found: dict[str, int] = {}
    for role, shape in wanted.items():
        matches = [int(o["index"]) for o in outputs
                   if tuple(o["shape"]) == shape and o["dtype"] == np.float32]
        if len(matches) != 1:
            expected = ", ".join(f"{r} {s}" for r, s in wanted.items())
            raise InputError(f"{WHAT} {folder}: {name}: expected float32 outputs {expected}, "
                             f"got {_shapes(outputs)}")
        found[role] = matches[0]
    return found


def _read_source(folder: Path) -> str:
    """The wheel named in ``SOURCE.txt`` (written by the fetch script), as "MediaPipe X wheel"."""
    try:
        for line in (folder / "SOURCE.txt").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "wheel" and value.strip().startswith("mediapipe-"):
                return f"MediaPipe {value.strip().split('-')[1]} wheel"
    except OSError:
        pass
    return DEFAULT_SOURCE


class BlazePose:
    """BlazePose's detector and full landmark model in LiteRT interpreters, loaded once."""

    name = NAME

    def __init__(self, detector: Interpreter, landmarker: Interpreter, folder: Path,
                 min_size: int = DEFAULT_MIN_SIZE) -> None:
        self.folder = folder
        self.source = _read_source(folder)
        self.min_size = min_size
        self.detector, self.landmarker = detector, landmarker
        self._detector_in = _float_input(detector, folder, DETECTOR_FILE, DETECTOR_SIZE)
        self._detector_out = _outputs_by_shape(detector, folder, DETECTOR_FILE, {
            "boxes": (1, NUM_ANCHORS, NUM_COORDS), "scores": (1, NUM_ANCHORS, 1)})
        self._landmark_in = _float_input(landmarker, folder, LANDMARK_FILE, LANDMARK_SIZE)
        self._landmark_out = _outputs_by_shape(landmarker, folder, LANDMARK_FILE, {
            "landmarks": (1, LANDMARK_OUTPUTS * LANDMARK_VALUES), "flag": (1, 1),
            "heatmap": (1, HEATMAP_SIZE, HEATMAP_SIZE, LANDMARK_OUTPUTS)})
        self.anchors = ssd_anchors()

    @classmethod
    def from_folder(cls, folder: str | Path | None = None, *, min_size: int = DEFAULT_MIN_SIZE,
                    threads: int | None = None) -> BlazePose:
        """Load ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` from ``folder``
        (default :func:`default_folder`). InputError when the folder or a file is missing,
        unreadable, or not shaped as BlazePose's. ``threads``: LiteRT's CPU threads."""
        path = Path(folder) if folder is not None else default_folder()
        if not path.is_dir():
            raise InputError(f"{WHAT} {path}: not a folder (run scripts/fetch_blazepose.sh "
                             f"{path})")
        return cls(_load(path, DETECTOR_FILE, threads), _load(path, LANDMARK_FILE, threads),
                   path, min_size)

    @property
    def label(self) -> str:
        """For a report: "BlazePose full (MediaPipe 0.10.21 wheel)"."""
        return f"{self.name} ({self.source})"

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, float] | None:
        """(detection keypoints (4, 2) in frame pixels, score) of the best person, or None."""
        height, width = frame.shape[:2]
        self.detector.set_tensor(self._detector_in, detector_input(frame))
        self.detector.invoke()
        raw_boxes = self.detector.get_tensor(self._detector_out["boxes"])[0]
        raw_scores = self.detector.get_tensor(self._detector_out["scores"])[0, :, 0]
        best = best_detection(*decode_detections(raw_boxes, raw_scores, self.anchors))
        if best is None:
            return None
        _, keypoints, score = best
        frame_norm = remove_letterbox(keypoints, letterbox_padding(width, height))
        return frame_norm * np.array([width, height], dtype=np.float64), score

    def landmarks(self, frame: np.ndarray, roi: Roi) -> np.ndarray | None:
        """(33, 3) landmarks (x, y in frame pixels, visibility) in ``roi``, or None when the
        pose flag is below 0.5."""
        matrix = roi_matrix(roi)
        self.landmarker.set_tensor(self._landmark_in, landmark_input(frame, matrix))
        self.landmarker.invoke()
        flag = float(self.landmarker.get_tensor(self._landmark_out["flag"]).reshape(-1)[0])
        if not flag >= POSE_FLAG_THRESHOLD:
            return None
        xy, visibility = decode_landmarks(self.landmarker.get_tensor(
            self._landmark_out["landmarks"])[0])
        xy = refine_from_heatmap(xy, self.landmarker.get_tensor(self._landmark_out["heatmap"])[0])
        frame_xy = apply_affine(cv2.invertAffineTransform(matrix), xy * LANDMARK_SIZE)
        return np.concatenate([frame_xy, visibility[:, None]], axis=1)[:POSE_LANDMARKS]

    def frame_landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """(33, 3) landmarks of one (H, W, 3) uint8 RGB frame in its pixels, or None (nobody)."""
        factor = upscale_factor(frame.shape[1], frame.shape[0], self.min_size)
        if factor != 1.0:
            size = (round(frame.shape[1] * factor), round(frame.shape[0] * factor))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        detection = self.detect(frame)
        if detection is None:
            return None
        keypoints, _ = detection
        found = self.landmarks(frame, detection_roi(keypoints[ROI_CENTRE_KEYPOINT],
                                                    keypoints[ROI_SCALE_KEYPOINT]))
        if found is not None and factor != 1.0:
            # pixel centres at integer coordinates in both frames
            found[:, :2] = (found[:, :2] + 0.5) / factor - 0.5
        return found

    def keypoints(self, frames: np.ndarray) -> np.ndarray:
        """OpenPose-18 keypoints (T, 18, 3) float32 of ``frames`` (T, H, W, 3) uint8 RGB: x, y
        in pixels of the frame, score = BlazePose's visibility (neck: the smaller shoulder's);
        all 0 for a frame where nobody is found."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} "
                             f"{frames.dtype}")
        result = np.zeros((len(frames), 18, 3), dtype=np.float32)
        for t, frame in enumerate(frames):
            found = self.frame_landmarks(np.ascontiguousarray(frame))
            if found is not None:
                result[t] = openpose18_from_blazepose(found[None])[0]
        return result
