"""DWPose's pre- and post-processing, run on small ONNX models in DWPose's I/O format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dancegen.errors import InputError
from dancegen.tasks.dwpose import DwPose, crop_box, crop_matrix
from dancegen.tasks.pose2d import OPENPOSE18_NAMES

INPUT_H, INPUT_W = 384, 288  # DWPose-l's input, 1x3x384x288
K = 133
COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
FRAME_H, FRAME_W = 240, 320


# --- ONNX models in DWPose's format ------------------------------------------------------------


def _save(path: Path, nodes: list, initializers: list, batch: int | str,
          widths: tuple[int, int] = (INPUT_W * 2, INPUT_H * 2)) -> Path:
    """A model with DWPose's I/O: input (batch, 3, 384, 288); simcc_x, simcc_y (batch, K, *)."""
    graph = helper.make_graph(
        nodes, "dwpose_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, INPUT_H, INPUT_W])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [batch, K, widths[0]]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [batch, K, widths[1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what any recent onnxruntime reads
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _int64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _constant_model(path: Path, simcc_x: np.ndarray, simcc_y: np.ndarray,
                    batch: int | str = 1, widths: tuple[int, int] | None = None) -> Path:
    """Outputs the given (1, K, *) SimCC arrays whatever the input, broadcast over the batch:
    ``simcc + 0 * mean(input)`` so that the graph still has the input's batch size."""
    nodes = [
        helper.make_node("Reshape", ["input", "flat_shape"], ["flat"]),
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[2], keepdims=1),  # (N, 1, 1)
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "const_x"], ["simcc_x"]),
        helper.make_node("Add", ["nothing", "const_y"], ["simcc_y"]),
    ]
    initializers = [
        _int64("flat_shape", [0, 1, -1]),
        numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero"),
        numpy_helper.from_array(simcc_x.astype(np.float32), "const_x"),
        numpy_helper.from_array(simcc_y.astype(np.float32), "const_y"),
    ]
    return _save(path, nodes, initializers, batch, widths or (INPUT_W * 2, INPUT_H * 2))


def _red_finder_model(path: Path, batch: int | str = 1) -> Path:
    """Every keypoint at the reddest column and row of the crop: simcc_x is the maximum of
    input channel 0 over rows, each input column repeated twice (split ratio 2); simcc_y alike."""
    nodes = [helper.make_node("Gather", ["input", "channel"], ["red"], axis=1)]  # (N, H, W)
    initializers = [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "channel"),  # scalar: drops axis 1
        _int64("axis2", [2]),
        _int64("to_row", [0, 1, -1]),
        numpy_helper.from_array(np.zeros((1, K, 1), dtype=np.float32), "zeros"),
    ]
    for name, reduced in (("simcc_x", 1), ("simcc_y", 2)):
        nodes += [
            helper.make_node("ReduceMax", ["red"], [f"{name}_1d"], axes=[reduced], keepdims=0),
            helper.make_node("Unsqueeze", [f"{name}_1d", "axis2"], [f"{name}_col"]),
            helper.make_node("Concat", [f"{name}_col", f"{name}_col"], [f"{name}_twice"],
                             axis=2),
            helper.make_node("Reshape", [f"{name}_twice", "to_row"], [f"{name}_row"]),
            helper.make_node("Add", [f"{name}_row", "zeros"], [name]),
        ]
    return _save(path, nodes, initializers, batch)


# --- expectations derived independently ---------------------------------------------------------


def _dwpose_warp(center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """DWPose's get_warp_matrix (rot 0, no shift): three point pairs to cv2.getAffineTransform."""
    src_dir = np.array([0.0, scale[0] * -0.5])
    dst_dir = np.array([0.0, INPUT_W * -0.5])
    src = np.array([center, center + src_dir, center + src_dir + [src_dir[1], 0.0]])
    dst_center = np.array([INPUT_W * 0.5, INPUT_H * 0.5])
    dst = np.array([dst_center, dst_center + dst_dir, dst_center + dst_dir + [dst_dir[1], 0.0]])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def _frame_point(input_xy: np.ndarray, frame_w: int = FRAME_W, frame_h: int = FRAME_H
                 ) -> np.ndarray:
    """A point of the model's input back in the frame, through the inverse of DWPose's warp."""
    center = np.array([frame_w / 2, frame_h / 2])
    w, h = frame_w * 1.25, frame_h * 1.25  # bbox_xyxy2cs(padding=1.25), then _fix_aspect_ratio
    aspect = INPUT_W / INPUT_H
    scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    inverse = cv2.invertAffineTransform(_dwpose_warp(center, scale))
    return inverse[:, :2] @ input_xy + inverse[:, 2]


def _peaks(bins: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """(1, K, width) SimCC rows: a small floor and one peak of ``values[k]`` at ``bins[k]``."""
    rows = np.full((1, K, width), 0.01)
    rows[0, np.arange(K), bins] = values
    return rows


def _frames(count: int = 3, height: int = FRAME_H, width: int = FRAME_W) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


# --- tests ----------------------------------------------------------------------------------------


def test_crop_is_dwposes_warp() -> None:
    for width, height in ((FRAME_W, FRAME_H), (FRAME_H, FRAME_W), (640, 640)):
        center, scale = crop_box(width, height, (INPUT_W, INPUT_H))
        assert center.tolist() == [width / 2, height / 2]
        assert scale[0] / scale[1] == pytest.approx(INPUT_W / INPUT_H)
        # the padded frame just fits: one side is 1.25 x the frame's, the other at least that
        padded = 1.25 * np.array([width, height])
        assert (scale >= padded - 1e-9).all() and np.isclose(scale, padded).any()
        np.testing.assert_allclose(crop_matrix(center, scale, (INPUT_W, INPUT_H)),
                                   _dwpose_warp(center, scale), atol=1e-4)


def test_keypoints_land_where_the_simcc_peaks_say_in_openpose_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    bins_x, bins_y = rng.integers(0, 2 * INPUT_W, K), rng.integers(0, 2 * INPUT_H, K)
    values_x, values_y = rng.uniform(0.4, 0.9, K), rng.uniform(0.4, 0.9, K)
    model = _constant_model(tmp_path / "dw.onnx", _peaks(bins_x, values_x, 2 * INPUT_W),
                            _peaks(bins_y, values_y, 2 * INPUT_H))
    keypoints = DwPose.from_path(model).keypoints(_frames())
    assert keypoints.shape == (3, 18, 3) and keypoints.dtype == np.float32
    assert np.array_equal(keypoints[0], keypoints[2])  # the same answer for every frame
    coco_xy = np.stack([_frame_point(np.array([bx / 2, by / 2]))
                        for bx, by in zip(bins_x, bins_y, strict=True)])
    coco_score = np.minimum(values_x, values_y)  # DWPose keeps the smaller maximum
    for index, name in enumerate(OPENPOSE18_NAMES):
        if name == "neck":
            continue
        coco = COCO17_NAMES.index(name)
        np.testing.assert_allclose(keypoints[0, index, :2], coco_xy[coco], atol=1e-3, err_msg=name)
        assert keypoints[0, index, 2] == pytest.approx(coco_score[coco], abs=1e-6), name
    neck = OPENPOSE18_NAMES.index("neck")
    shoulders = [COCO17_NAMES.index("left_shoulder"), COCO17_NAMES.index("right_shoulder")]
    np.testing.assert_allclose(keypoints[0, neck, :2], coco_xy[shoulders].mean(axis=0), atol=1e-3)
    assert keypoints[0, neck, 2] == 1.0  # both shoulders above 0.3


def test_neck_score_is_zero_unless_both_shoulders_are_sure_and_unsure_points_go_to_minus_one(
    tmp_path: Path,
) -> None:
    values = np.full(K, 0.8)
    right_shoulder, nose = COCO17_NAMES.index("right_shoulder"), 0
    values[right_shoulder] = 0.25
    simcc_x = _peaks(np.full(K, 100), values, 2 * INPUT_W)
    simcc_y = _peaks(np.full(K, 200), np.full(K, 0.8), 2 * INPUT_H)
    simcc_x[0, nose] = -0.5  # nothing positive: DWPose sets the location to -1
    keypoints = DwPose.from_path(
        _constant_model(tmp_path / "dw.onnx", simcc_x, simcc_y)
    ).keypoints(_frames(1))[0]
    assert keypoints[OPENPOSE18_NAMES.index("neck"), 2] == 0.0
    assert keypoints[OPENPOSE18_NAMES.index("right_shoulder"), 2] == pytest.approx(0.25)
    assert keypoints[OPENPOSE18_NAMES.index("nose"), 2] == pytest.approx(-0.5)
    np.testing.assert_allclose(keypoints[OPENPOSE18_NAMES.index("nose"), :2],
                               _frame_point(np.array([-0.5, -0.5])), atol=1e-3)


@pytest.mark.parametrize(("height", "width", "batch"), [(240, 320, 1), (320, 240, "N")])
def test_the_model_sees_the_rgb_frame_through_the_crop(
    tmp_path: Path, height: int, width: int, batch: int | str,
) -> None:
    """A model that finds the reddest spot finds the red dot, not the blue one, at its pixel."""
    red_at = np.array([[60, 50], [200, 180], [130, 90]])  # (x, y) per frame
    red_at[:, 0] = np.minimum(red_at[:, 0], width - 3)
    frames = np.zeros((20 if batch == "N" else 3, height, width, 3), dtype=np.uint8)
    for index, frame in enumerate(frames):
        x, y = red_at[index % 3]
        frame[y - 1:y + 2, x - 1:x + 2] = (255, 0, 0)
        frame[height - 20:height - 17, 10:13] = (0, 0, 255)  # channel 2 only
    pose = DwPose.from_path(_red_finder_model(tmp_path / "red.onnx", batch))
    assert pose.input_size == (INPUT_W, INPUT_H)
    keypoints = pose.keypoints(frames)
    assert keypoints.shape == (len(frames), 18, 3)
    for index in range(len(frames)):
        # one input pixel is 1.25 * 320 / 288 = 1.4 frame pixels: the argmax is within that
        np.testing.assert_allclose(keypoints[index, 0, :2], red_at[index % 3], atol=1.5)
        assert keypoints[index, 0, 2] > 1.0  # normalised red, well above the background


def test_missing_and_unreadable_models_are_input_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "dw-ll_ucoco_384.onnx"
    with pytest.raises(InputError, match=r"DWPose.*dw-ll_ucoco_384\.onnx"):
        DwPose.from_path(missing)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf")
    with pytest.raises(InputError, match=r"DWPose.*corrupt\.onnx"):
        DwPose.from_path(corrupt)


def test_models_of_another_format_are_refused(tmp_path: Path) -> None:
    rows_x = _peaks(np.zeros(K, dtype=int), np.ones(K), 2 * INPUT_W)
    rows_y = _peaks(np.zeros(K, dtype=int), np.ones(K), 2 * INPUT_H)
    # SimCC rows of the wrong length: a split ratio of 1 instead of DWPose's 2
    ratio_one = _constant_model(tmp_path / "ratio1.onnx", rows_x[..., :INPUT_W],
                                rows_y[..., :INPUT_H], widths=(INPUT_W, INPUT_H))
    with pytest.raises(InputError, match=r"DWPose.*ratio1\.onnx.*expected two outputs simcc_x"):
        DwPose.from_path(ratio_one)
    # a single output
    one_output = onnx.load(_constant_model(tmp_path / "one.onnx", rows_x, rows_y))
    del one_output.graph.output[1]
    onnx.save(one_output, tmp_path / "one.onnx")
    with pytest.raises(InputError, match="expected two outputs"):
        DwPose.from_path(tmp_path / "one.onnx")
    # a batch of 2 fixed in the input
    with pytest.raises(InputError, match="batch"):
        DwPose.from_path(_constant_model(tmp_path / "b2.onnx", rows_x, rows_y, batch=2))


def test_frames_must_be_uint8_rgb(tmp_path: Path) -> None:
    rows_x = _peaks(np.zeros(K, dtype=int), np.ones(K), 2 * INPUT_W)
    rows_y = _peaks(np.zeros(K, dtype=int), np.ones(K), 2 * INPUT_H)
    pose = DwPose.from_path(_constant_model(tmp_path / "dw.onnx", rows_x, rows_y))
    with pytest.raises(ValueError, match="uint8"):
        pose.keypoints(_frames().astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        pose.keypoints(_frames()[..., 0])
    assert pose.keypoints(_frames(0)).shape == (0, 18, 3)
