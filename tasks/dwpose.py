"""DWPose body keypoints of video frames, in the OpenPose-18 order of :mod:`.pose2d`.

The paper's 2D-BeatAlign runs DWPose on the generated and the real videos. We run DWPose's
whole-body pose model (``dw-ll_ucoco_384.onnx``, RTMPose-l with SimCC heads, 133 COCO-WholeBody
keypoints) with onnxruntime, re-implementing what IDEA-Research/DWPose's ControlNet annotator
does (``ControlNet-v1-1-nightly/annotator/dwpose/onnxpose.py`` and ``wholebody.py``, commit
3dca5db79d9f9ffdd378753ddf6ec66535aace88; the same steps as Tau-J/rtmlib's ``RTMPose``):

* **input size** from the model's input shape ``(1, 3, H, W)``: 384 x 288 for DWPose-l;
* **box**: ``bbox_xyxy2cs`` with padding 1.25 (centre, scale = 1.25 x the box's size), the
  scale widened or heightened to the model's aspect ratio ``W / H`` (``_fix_aspect_ratio``);
* **crop**: ``cv2.warpAffine`` with the rotation-free affine that maps the box centre to the
  input centre and scales by ``W / scale_w`` (``get_warp_matrix``), bilinear, black border;
* **normalisation**: ``(pixel - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]`` on
  the channels as given, NCHW float32. The model was trained on RGB (its mmpose config has
  ``bgr_to_rgb=True`` with these RGB means) and ControlNet hands the annotator RGB images, so
  our RGB frames go in unchanged;
* **decoding** (``get_simcc_maximum``, ``decode``): per keypoint the argmax of ``simcc_x``
  and of ``simcc_y``, divided by the SimCC split ratio 2.0; the score is the *smaller* of the
  two maxima; a keypoint whose score is <= 0 gets location -1 (before the division);
* **back to the frame**: ``p / (W, H) * scale + centre - scale / 2``;
* **OpenPose-18** (``wholebody.py``): the neck is the mean of COCO's shoulders 5 and 6, with
  score 1 when both shoulders score above 0.3 and 0 otherwise (DWPose overwrites the mean
  score with that flag); then COCO's body order becomes OpenPose's by the index map below.

Person box: DWPose first finds people with YOLOX; our videos show one dancer filling the frame,
so we use the whole frame as the box, which is also what DWPose's ``preprocess`` falls back to
when the detector finds nobody. Running a detector (for clips where the dancer is small) is
out of scope.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from dancegen.errors import InputError
from dancegen.storage.weights_cache import local_file

WHAT = "2D-BeatAlign (DWPose) model"

BBOX_PADDING = 1.25
PIXEL_MEAN = np.array([123.675, 116.28, 103.53])
PIXEL_STD = np.array([58.395, 57.12, 57.375])
SIMCC_SPLIT_RATIO = 2.0
NECK_SCORE_THRESHOLD = 0.3  # wholebody.py: neck visible when both shoulders score > 0.3

COCO_BODY_KEYPOINTS = 17  # COCO-WholeBody's first 17 keypoints are COCO's body
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6
# wholebody.py inserts the neck at index 17 of the COCO list, then writes
# new[openpose_idx] = new[mmpose_idx]; OpenPose 0 (nose), 5 (left shoulder) and 11 (left hip)
# are already where COCO has them. Spelled out as "OpenPose keypoint i <- COCO index":
_NECK = COCO_BODY_KEYPOINTS
OPENPOSE18_FROM_COCO: tuple[int, ...] = (
    0, _NECK, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3,
)  # fmt: skip

_BATCH = 16  # frames per run when the model's batch dimension is dynamic


def crop_box(width: int, height: int, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(centre (x, y), scale (w, h)) of the whole-frame box, padded and fixed to the aspect
    ratio of ``input_size`` (W, H), as ``bbox_xyxy2cs`` + ``_fix_aspect_ratio``."""
    center = np.array([width, height], dtype=np.float64) * 0.5
    scale_w, scale_h = width * BBOX_PADDING, height * BBOX_PADDING
    aspect = input_size[0] / input_size[1]
    if scale_w > scale_h * aspect:
        scale = np.array([scale_w, scale_w / aspect])
    else:
        scale = np.array([scale_h * aspect, scale_h])
    return center, scale


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """The (2, 3) frame-to-input affine of ``get_warp_matrix`` with rotation 0: a uniform
    scale ``W / scale_w`` about the box centre, which lands on the input's centre."""
    factor = input_size[0] / scale[0]
    return np.array([
        [factor, 0.0, input_size[0] * 0.5 - factor * center[0]],
        [0.0, factor, input_size[1] * 0.5 - factor * center[1]],
    ])  # fmt: skip


def model_input(frame: np.ndarray, center: np.ndarray, scale: np.ndarray,
                input_size: tuple[int, int]) -> np.ndarray:
    """One frame cropped and normalised as DWPose's ``preprocess``: (3, H, W) float32."""
    matrix = crop_matrix(center, scale, input_size)
    crop = cv2.warpAffine(frame, matrix, input_size, flags=cv2.INTER_LINEAR)
    return ((crop - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1).astype(np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 split_ratio: float = SIMCC_SPLIT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """(locations (N, K, 2) in input pixels, scores (N, K)) from SimCC outputs, as DWPose's
    ``get_simcc_maximum`` + ``decode``: argmax per axis, score = the smaller maximum,
    location -1 (before the split-ratio division) where the score is <= 0."""
    locs = np.stack([simcc_x.argmax(axis=-1), simcc_y.argmax(axis=-1)], axis=-1)
    locs = locs.astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1))
    locs[scores <= 0.0] = -1.0
    return locs / split_ratio, scores


def to_frame(locs: np.ndarray, center: np.ndarray, scale: np.ndarray,
             input_size: tuple[int, int]) -> np.ndarray:
    """Input-pixel locations back to frame pixels: ``p / (W, H) * scale + centre - scale / 2``."""
    return locs / np.asarray(input_size, dtype=np.float64) * scale + center - scale / 2


def openpose18_from_coco(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, 18, 3) OpenPose-18 keypoints (x, y, score) from COCO(-WholeBody) keypoints
    (N, K >= 17, 2) and scores (N, K), as DWPose's ``wholebody.py`` converts them."""
    body = np.concatenate([keypoints[:, :COCO_BODY_KEYPOINTS],
                           scores[:, :COCO_BODY_KEYPOINTS, None]], axis=-1)
    shoulders = body[:, [COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER]]
    neck = shoulders.mean(axis=1)
    neck[:, 2] = (shoulders[..., 2] > NECK_SCORE_THRESHOLD).all(axis=1)
    with_neck = np.concatenate([body, neck[:, None]], axis=1)  # (N, 18, 3), neck at 17
    return with_neck[:, list(OPENPOSE18_FROM_COCO)]


def _static_dim(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class DwPose:
    """DWPose's pose model in an onnxruntime session, loaded once and run on many frames."""

    def __init__(self, session: ort.InferenceSession, source: str) -> None:
        self.session = session
        self.source = source
        self.input_name, self.input_size, self.batch = self._check_input()
        self._check_outputs()

    @classmethod
    def from_path(cls, url: str | Path) -> DwPose:
        """Load the ONNX model from a local path or an ``s3://`` URL (downloaded once to the
        weights cache). InputError when it is missing, unreadable or not DWPose-shaped."""
        path = local_file(str(url), WHAT)
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            session = ort.InferenceSession(str(path), providers=providers)
        except Exception as error:  # onnxruntime raises its own pybind classes
            raise InputError(f"{WHAT} {url}: not a readable ONNX model ({error})") from None
        return cls(session, str(url))

    def _refuse(self, expected: str, got: object) -> InputError:
        return InputError(f"{WHAT} {self.source}: expected {expected}, got {got}")

    def _check_input(self) -> tuple[str, tuple[int, int], int | None]:
        """(name, (W, H), fixed batch size or None) of the one NCHW float image input."""
        inputs = self.session.get_inputs()
        shapes = [(i.name, i.shape, i.type) for i in inputs]
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type != "tensor(float)":
            raise self._refuse("one float input of shape (N, 3, H, W)", shapes)
        batch, channels, height, width = (_static_dim(d) for d in inputs[0].shape)
        if channels != 3 or height is None or width is None:
            raise self._refuse("one float input of shape (N, 3, H, W) with fixed H and W",
                               shapes)
        if batch not in (None, 1):
            raise self._refuse("a batch dimension of 1 or dynamic", shapes)
        return inputs[0].name, (width, height), batch

    def _expected_outputs(self) -> str:
        width, height = self.input_size
        return (f"two outputs simcc_x (N, K, {width}*2) and simcc_y (N, K, {height}*2) "
                f"with K >= {COCO_BODY_KEYPOINTS}")

    def _check_outputs(self) -> None:
        outputs = self.session.get_outputs()
        shapes = [(o.name, o.shape) for o in outputs]
        if len(outputs) != 2 or any(len(o.shape) != 3 for o in outputs):
            raise self._refuse(self._expected_outputs(), shapes)
        widths = [_static_dim(o.shape[-1]) for o in outputs]
        wanted = [round(s * SIMCC_SPLIT_RATIO) for s in self.input_size]
        keypoints = [_static_dim(o.shape[1]) for o in outputs]
        if (any(w is not None and w != x for w, x in zip(widths, wanted, strict=True))
                or any(k is not None and k < COCO_BODY_KEYPOINTS for k in keypoints)):
            raise self._refuse(self._expected_outputs(), shapes)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SimCC outputs of one batch, checked again now that dynamic dimensions are known."""
        simcc_x, simcc_y = self.session.run(None, {self.input_name: batch})
        keypoints = simcc_x.shape[1] if simcc_x.ndim == 3 else 0
        expected = [
            (len(batch), keypoints, round(size * SIMCC_SPLIT_RATIO)) for size in self.input_size
        ]
        if keypoints < COCO_BODY_KEYPOINTS or [simcc_x.shape, simcc_y.shape] != expected:
            raise self._refuse(self._expected_outputs(), [simcc_x.shape, simcc_y.shape])
        return simcc_x, simcc_y

    def keypoints(self, frames: np.ndarray) -> np.ndarray:
        """OpenPose-18 keypoints (T, 18, 3) float32 of ``frames`` (T, H, W, 3) uint8 RGB:
        x, y in pixels of the frame (pixel centres at integer coordinates) and DWPose's score
        (the neck's is 0 or 1)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} "
                             f"{frames.dtype}")
        center, scale = crop_box(frames.shape[2], frames.shape[1], self.input_size)
        step = self.batch or _BATCH
        result = []
        for start in range(0, len(frames), step):
            batch = np.stack([model_input(frame, center, scale, self.input_size)
                              for frame in frames[start:start + step]])
            locs, scores = decode_simcc(*self._run(batch))
            coco = to_frame(locs, center, scale, self.input_size)
            result.append(openpose18_from_coco(coco, scores))
        if not result:
            return np.empty((0, 18, 3), dtype=np.float32)
        return np.concatenate(result).astype(np.float32)
