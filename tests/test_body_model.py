"""Tests for the body model: the procedural stand-in, the SMPL file reader and SMPL posing."""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import smplx.vertex_ids
import torch
import trimesh
from scipy.sparse.csgraph import connected_components
from scipy.spatial.transform import Rotation

from dancegen.errors import InputError
from dancegen.fixtures import procedural_smpl, write_body_model
from dancegen.fixtures.body import LANDMARKS
from dancegen.models.smpl import SMPL_JOINT_NAMES, SMPLBody, vertex_part_labels
from dancegen.storage.body_model import BodyModelData, body_model_digest, load_body_model
from dancegen.storage.location import StoreLocation

SMPL_KEYS = {"v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f"}
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
J = {name: index for index, name in enumerate(SMPL_JOINT_NAMES)}
LANDMARK = {name: index for name, (index, _) in LANDMARKS.items()}
# The order in which smplx appends its vertex landmarks after the 24 joints.
SMPLX_LANDMARK_ORDER = ("nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel",
                        "RBigToe", "RSmallToe", "RHeel", "lthumb", "lindex", "lmiddle", "lring",
                        "lpinky", "rthumb", "rindex", "rmiddle", "rring", "rpinky")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in SMPL_NEUTRAL.pkl, written once for this module."""
    return write_body_model(tmp_path_factory.mktemp("body"))


@pytest.fixture(scope="module")
def raw(model_file: Path) -> dict[str, Any]:
    """The pickled dict, read with plain ``pickle`` (no chumpy, nothing custom needed)."""
    return pickle.loads(model_file.read_bytes())


@pytest.fixture(scope="module")
def model(model_file: Path) -> BodyModelData:
    return load_body_model(str(model_file))


@pytest.fixture(scope="module")
def body(model: BodyModelData) -> SMPLBody:
    return SMPLBody(model)


def _mesh(vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    return trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces), process=False)


def _winding_numbers(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalised winding number of each point: 1 inside an outward-wound closed mesh."""
    a, b, c = (vertices[faces[:, i]][None] - points[:, None] for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    numerator = np.einsum("pfk,pfk->pf", a, np.cross(b, c))
    denominator = (la * lb * lc + np.einsum("pfk,pfk->pf", a, b) * lc
                   + np.einsum("pfk,pfk->pf", b, c) * la + np.einsum("pfk,pfk->pf", c, a) * lb)
    return 2.0 * np.arctan2(numerator, denominator).sum(axis=1) / (4.0 * np.pi)


def _pose(**joint_rotvecs: tuple[float, float, float]) -> torch.Tensor:
    """A (1, 72) pose with the named joints rotated (axis-angle), all others at rest."""
    pose = torch.zeros(1, 72)
    for name, rotvec in joint_rotvecs.items():
        pose[0, 3 * J[name]:3 * J[name] + 3] = torch.tensor(rotvec)
    return pose


def _bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Distance from each of joints 1..23 to its parent."""
    return np.linalg.norm(joints[1:24] - joints[PARENTS[1:]], axis=1)


def _posed(body: SMPLBody, pose: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    vertices, joints = body(pose, torch.zeros(len(pose), 3), torch.ones(len(pose)))
    return vertices[0].numpy(), joints[0].numpy()


# --- the procedural stand-in -------------------------------------------------------------------


def test_stand_in_has_smpl_keys_shapes_and_dtypes(raw: dict[str, Any]) -> None:
    assert SMPL_KEYS | {"J", "bs_style", "bs_type", "dancegen_stand_in"} == set(raw)
    assert raw["v_template"].shape == (6890, 3) and raw["v_template"].dtype == np.float64
    assert raw["shapedirs"].shape == (6890, 3, 10)
    assert raw["posedirs"].shape == (6890, 3, 207)
    assert np.abs(raw["posedirs"]).max() > 0.0
    assert isinstance(raw["J_regressor"], sp.csc_matrix)
    assert raw["J_regressor"].shape == (24, 6890)
    assert raw["weights"].shape == (6890, 24)
    assert raw["f"].shape == (13776, 3) and raw["f"].dtype == np.uint32
    assert raw["kintree_table"].dtype == np.uint32
    assert raw["kintree_table"][0, 0] == 4294967295
    assert raw["kintree_table"][0, 1:].tolist() == PARENTS[1:]
    assert raw["kintree_table"][1].tolist() == list(range(24))
    assert (raw["bs_style"], raw["bs_type"]) == ("lbs", "lrotmin")
    assert "not SMPL" in raw["dancegen_stand_in"]


def test_stand_in_mesh_is_one_closed_outward_genus0_surface(raw: dict[str, Any]) -> None:
    mesh = _mesh(raw["v_template"], raw["f"])
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.euler_number == 2
    assert mesh.body_count == 1
    assert 0.05 < mesh.volume < 0.09  # m^3, positive: normals point outwards
    assert mesh.area_faces.min() > 0.0


def test_stand_in_is_a_t_posed_human(raw: dict[str, Any]) -> None:
    vertices, joints = raw["v_template"], raw["J"]
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    assert 1.6 < high[1] - low[1] < 1.8                      # height, metres
    assert -1.2 < low[1] < -1.12 and 0.45 < high[1] < 0.55    # feet and head top
    assert 0.78 < high[0] < 0.9 and -0.9 < low[0] < -0.78     # arms out to the sides
    np.testing.assert_allclose(joints[J["pelvis"]], [0.0, -0.23, 0.02], atol=0.02)
    for left in ("left_hip", "left_knee", "left_ankle", "left_shoulder", "left_wrist"):
        right = left.replace("left", "right")
        assert joints[J[left], 0] > 0.05 > -0.05 > joints[J[right], 0]
        np.testing.assert_allclose(joints[J[left]] * [-1, 1, 1], joints[J[right]], atol=0.01)
    heights = joints[[J[n] for n in ("left_ankle", "left_knee", "left_hip", "pelvis", "spine1",
                                     "spine2", "spine3", "neck", "head")], 1]
    assert (np.diff(heights) > 0).all()
    assert abs(joints[J["left_wrist"], 1] - joints[J["left_shoulder"], 1]) < 0.05  # horizontal
    # Every joint lies inside the body.
    winding = _winding_numbers(joints, vertices, raw["f"].astype(np.int64))
    np.testing.assert_allclose(winding, 1.0, atol=1e-3)


def test_stand_in_rig_rows_are_convex_combinations(raw: dict[str, Any]) -> None:
    weights = raw["weights"]
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    assert ((weights > 0).sum(axis=1) <= 4).all()
    regressor = raw["J_regressor"].toarray()
    assert (regressor >= 0).all()
    np.testing.assert_allclose(regressor.sum(axis=1), 1.0, atol=1e-9)
    assert ((regressor > 0).sum(axis=1) < 1000).all()  # sparse rows: vertices near the joint
    np.testing.assert_allclose(raw["J"], regressor @ raw["v_template"], atol=1e-12)


def test_stand_in_parts_are_24_contiguous_patches(raw: dict[str, Any]) -> None:
    labels = vertex_part_labels(raw["weights"])
    assert labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == set(range(1, 25))
    edges = np.concatenate([raw["f"][:, [0, 1]], raw["f"][:, [1, 2]], raw["f"][:, [2, 0]]])
    same = labels[edges[:, 0]] == labels[edges[:, 1]]
    graph = sp.coo_matrix((np.ones(same.sum()), (edges[same, 0], edges[same, 1])),
                          shape=(6890, 6890))
    count, _ = connected_components(graph, directed=False)
    assert count == 24  # one patch per part
    expected_part = {"nose": "head", "lindex": "left_hand", "rpinky": "right_hand",
                     "LBigToe": "left_foot", "RHeel": "right_ankle"}
    for landmark, part in expected_part.items():
        assert labels[LANDMARK[landmark]] == J[part] + 1, landmark


def test_landmarks_are_smplx_indices_at_the_right_places(raw: dict[str, Any]) -> None:
    assert {n: i for n, (i, _) in LANDMARKS.items()} == smplx.vertex_ids.vertex_ids["smplh"]
    v = {name: raw["v_template"][index] for name, index in LANDMARK.items()}
    head = raw["J"][J["head"]]
    assert v["nose"][2] > head[2] + 0.08 and abs(v["nose"][0]) < 0.015
    assert v["leye"][0] > 0.015 > -0.015 > v["reye"][0]
    assert min(v["leye"][2], v["reye"][2]) > head[2] + 0.05 and v["leye"][1] > v["nose"][1]
    assert v["lear"][0] > 0.06 > -0.06 > v["rear"][0]
    for side, sign in (("L", 1.0), ("R", -1.0)):
        big, small, heel = v[f"{side}BigToe"], v[f"{side}SmallToe"], v[f"{side}Heel"]
        assert big[2] > heel[2] + 0.2 and small[2] > heel[2] + 0.2    # toes in front of heels
        assert sign * small[0] > sign * big[0] > 0                     # big toe is medial
        assert max(big[1], small[1], heel[1]) < -1.1                   # on the floor
    for side, sign in (("l", 1.0), ("r", -1.0)):
        wrist = raw["J"][J[f"{'left' if side == 'l' else 'right'}_wrist"]]
        tips = np.array([v[side + f] for f in ("thumb", "index", "middle", "ring", "pinky")])
        assert (sign * tips[:, 0] > sign * wrist[0] + 0.04).all()      # beyond the wrist
        assert (np.diff(tips[:, 2]) < 0).all()                         # thumb front, pinky back


def test_write_body_model_is_deterministic(raw: dict[str, Any], model_file: Path,
                                           tmp_path: Path) -> None:
    again = write_body_model(tmp_path)
    assert again.relative_to(tmp_path) == Path("smpl/SMPL_NEUTRAL.pkl")
    assert again.read_bytes() == model_file.read_bytes()
    # A fresh computation (not the cached bytes) gives the same file.
    assert pickle.dumps(procedural_smpl(), protocol=2) == model_file.read_bytes()


# --- the reader ----------------------------------------------------------------------------------


def _chumpy_pickle(raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """``raw`` pickled as the released SMPL files are: chumpy ``Ch`` objects holding their
    array in the pickled state under 'x', a csc J_regressor, uint32 tables, extra keys."""

    class Ch:
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self._dirty_vars: set[str] = set()
            self._itr = None
            self._depends_on_deps: dict[str, Any] = {}
            self._make_dense = self._make_sparse = False

    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch, chumpy.ch = Ch, chumpy_ch
    content = dict(raw)
    for key in ("v_template", "shapedirs", "weights", "J"):
        content[key] = Ch(raw[key])
    content.pop("dancegen_stand_in")
    content["weights_prior"] = Ch(raw["weights"])
    content["vert_sym_idxs"] = np.arange(6890)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "chumpy", chumpy)
        patch.setitem(sys.modules, "chumpy.ch", chumpy_ch)
        data = pickle.dumps(content, protocol=2)
    assert b"chumpy.ch" in data and "chumpy" not in sys.modules
    # Module paths as numpy 1 and old scipy wrote them (protocol 2 names globals by text).
    data = data.replace(b"numpy._core", b"numpy.core")
    data = data.replace(b"scipy.sparse._csc\n", b"scipy.sparse.csc\n")
    assert b"numpy.core.multiarray\n_reconstruct" in data and b"sparse.csc\ncsc_matrix" in data
    return data


def _npz(raw: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    arrays = {key: raw[key] for key in SMPL_KEYS}
    arrays["J_regressor"] = raw["J_regressor"].toarray()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _assert_same(a: BodyModelData, b: BodyModelData) -> None:
    for field in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                  "kintree_table", "faces"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_reader_gives_typed_read_only_arrays(model: BodyModelData, raw: dict[str, Any],
                                             model_file: Path) -> None:
    assert model.source.endswith("smpl/SMPL_NEUTRAL.pkl")
    assert model.v_template.dtype == np.float32 and model.faces.dtype == np.int64
    assert model.J_regressor.shape == (24, 6890) and model.shapedirs.shape == (6890, 3, 10)
    assert model.parents.tolist() == PARENTS and model.parents.dtype == np.int64
    np.testing.assert_array_equal(model.faces, raw["f"])
    with pytest.raises(ValueError):
        model.v_template[0, 0] = 1.0
    assert body_model_digest(str(model_file)) == hashlib.sha256(
        model_file.read_bytes()).hexdigest()


@pytest.mark.filterwarnings("error::DeprecationWarning")  # no deprecated module paths used
def test_reader_copes_with_chumpy_pickles_and_npz(raw: dict[str, Any], model: BodyModelData,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    chumpy_file = tmp_path / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"
    chumpy_file.write_bytes(_chumpy_pickle(raw, monkeypatch))
    npz_file = tmp_path / "SMPL_NEUTRAL.npz"
    npz_file.write_bytes(_npz(raw))
    _assert_same(load_body_model(str(chumpy_file)), model)
    _assert_same(load_body_model(str(npz_file)), model)


def test_reader_reads_from_s3(s3_bucket: str, model_file: Path, model: BodyModelData) -> None:
    store = StoreLocation.parse(s3_bucket)
    store.fs.pipe_file(store.path("smpl/SMPL_NEUTRAL.pkl"), model_file.read_bytes())
    url = f"{s3_bucket}/smpl/SMPL_NEUTRAL.pkl"
    loaded = load_body_model(url)
    assert loaded.source == url
    _assert_same(loaded, model)
    assert body_model_digest(url) == body_model_digest(str(model_file))


def _without(raw: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != key}


def _with(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**raw, key: value}


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("SMPL_NEUTRAL.pkl", None, "body model file missing"),
        ("SMPL_NEUTRAL.pkl", b"\x00garbage bytes", "not a readable SMPL pickle"),
        ("SMPL_NEUTRAL.npz", b"PK\x03\x04 not a zip", "not a readable npz archive"),
        ("SMPL_NEUTRAL.pkl", pickle.dumps([1, 2, 3]), "expected a dict of SMPL arrays"),
        ("SMPL_NEUTRAL.pkl", lambda raw: _without(raw, "posedirs"), "missing key 'posedirs'"),
        ("SMPL_NEUTRAL.pkl", lambda raw: _with(raw, "posedirs", raw["posedirs"][..., :10]),
         "key 'posedirs' has shape (6890, 3, 10), expected (6890, 3, 207)"),
        ("SMPL_NEUTRAL.pkl", lambda raw: _with(raw, "f", raw["f"][:100]),
         "key 'f' has shape (100, 3), expected (13776, 3)"),
        ("SMPL_NEUTRAL.pkl", lambda raw: _with(raw, "weights", raw["weights"] * 2),
         "key 'weights' rows must sum to 1"),
        ("SMPL_NEUTRAL.pkl", lambda raw: _with(raw, "shapedirs", raw["shapedirs"][..., :5]),
         "expected at least 10"),
        ("SMPL_NEUTRAL.pkl", lambda raw: _with(raw, "v_template", "oops"),
         "key 'v_template' holds str, expected an array"),
        ("SMPL_NEUTRAL.json", b"{}", "expected .pkl or .npz"),
    ],
)
def test_reader_errors_name_the_file_and_the_expectation(
    raw: dict[str, Any], tmp_path: Path, name: str, content: Any, expected: str
) -> None:
    path = tmp_path / name
    if callable(content):
        content = pickle.dumps(content(raw), protocol=2)
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as error:
        load_body_model(str(path))
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_reader_refuses_pickles_that_call_other_code(tmp_path: Path) -> None:
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": Path("/")}, protocol=2))
    with pytest.raises(InputError, match="refusing pathlib"):
        load_body_model(str(path))


# --- posing --------------------------------------------------------------------------------------


def test_rest_pose_gives_the_template(body: SMPLBody, model: BodyModelData) -> None:
    vertices, joints = _posed(body, torch.zeros(1, 72))
    assert vertices.shape == (6890, 3) and joints.shape == (45, 3)
    np.testing.assert_allclose(vertices, model.v_template, atol=1e-6)
    np.testing.assert_allclose(joints[:24], model.J_regressor @ model.v_template, atol=1e-5)
    landmarks = [LANDMARK[name] for name in SMPLX_LANDMARK_ORDER]
    np.testing.assert_allclose(joints[24:], model.v_template[landmarks], atol=1e-6)


def test_trans_is_in_scaled_units(body: SMPLBody) -> None:
    pose = _pose(left_knee=(0.5, 0.0, 0.0))
    trans, scale = torch.tensor([[10.0, 85.0, -3.0]]), torch.tensor([95.0])
    reference, reference_joints = _posed(body, pose)
    vertices, joints = body(pose, trans, scale)
    expected = (reference + trans.numpy() / 95.0) * 95.0
    np.testing.assert_allclose(vertices[0].numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(joints[0].numpy(), (reference_joints + trans.numpy() / 95.0) * 95.0,
                               rtol=1e-5, atol=1e-4)
    # (B, 1) scaling means the same.
    np.testing.assert_allclose(body(pose, trans, scale[:, None])[0].numpy(), vertices.numpy())


def test_bending_the_left_knee_moves_only_the_left_lower_leg(body: SMPLBody) -> None:
    rest_vertices, rest_joints = _posed(body, torch.zeros(1, 72))
    vertices, joints = _posed(body, _pose(left_knee=(np.pi / 2, 0.0, 0.0)))
    moved = np.linalg.norm(joints - rest_joints, axis=1)
    for name in ("left_ankle", "left_foot"):
        assert moved[J[name]] > 0.2
    for name in ("right_ankle", "right_foot", "left_knee", "pelvis", "head"):
        assert moved[J[name]] < 1e-5
    shift = np.linalg.norm(vertices - rest_vertices, axis=1)
    assert shift[LANDMARK["LHeel"]] > 0.2 and shift[LANDMARK["RHeel"]] < 1e-5
    # The shin keeps its length; the rotation takes the ankle backwards (+90 deg about X).
    np.testing.assert_allclose(np.linalg.norm(joints[J["left_ankle"]] - joints[J["left_knee"]]),
                               np.linalg.norm(rest_joints[J["left_ankle"]]
                                              - rest_joints[J["left_knee"]]), rtol=1e-5)
    assert joints[J["left_ankle"], 2] < joints[J["left_knee"], 2] - 0.3


def test_lbs_keeps_bone_lengths_and_mesh(body: SMPLBody, model: BodyModelData) -> None:
    _, rest = _posed(body, torch.zeros(1, 72))
    pose = _pose(left_elbow=(0.0, -1.5, 0.0), right_shoulder=(0.0, 0.0, 1.2),
                 spine2=(0.3, 0.2, 0.0), right_hip=(-0.8, 0.0, 0.2))
    vertices, joints = _posed(body, pose)
    np.testing.assert_allclose(_bone_lengths(joints), _bone_lengths(rest), rtol=1e-5)
    forearm = joints[J["left_wrist"]] - joints[J["left_elbow"]]
    rest_forearm = rest[J["left_wrist"]] - rest[J["left_elbow"]]
    assert np.linalg.norm(forearm - rest_forearm) > 0.2  # it did bend
    posed = _mesh(vertices, model.faces)
    assert posed.is_watertight and posed.is_winding_consistent
    assert abs(posed.volume / _mesh(model.v_template, model.faces).volume - 1.0) < 0.05


def test_batch_of_64_and_betas(body: SMPLBody) -> None:
    generator = torch.Generator().manual_seed(0)
    poses = 0.3 * torch.randn(64, 72, generator=generator)
    trans = torch.randn(64, 3, generator=generator)
    vertices, joints = body(poses, trans, torch.full((64,), 95.0))
    assert vertices.shape == (64, 6890, 3) and joints.shape == (64, 45, 3)
    assert torch.isfinite(vertices).all()
    # One row of betas is shared by the batch; beta 0 (stature) makes the body taller.
    tall = body(torch.zeros(2, 72), torch.zeros(2, 3), torch.ones(2),
                betas=torch.tensor([[2.0] + [0.0] * 9]))[0]
    rest = body(torch.zeros(1, 72), torch.zeros(1, 3), torch.ones(1))[0]
    height = lambda v: float(v[0, :, 1].max() - v[0, :, 1].min())  # noqa: E731
    assert 1.05 < height(tall) / height(rest) < 1.12


def test_rotation_of_the_root_turns_the_whole_body(body: SMPLBody) -> None:
    rest_vertices, rest_joints = _posed(body, torch.zeros(1, 72))
    vertices, _ = _posed(body, _pose(pelvis=(0.0, np.pi / 2, 0.0)))
    rotation = Rotation.from_rotvec([0.0, np.pi / 2, 0.0]).as_matrix()
    root = rest_joints[0]
    np.testing.assert_allclose(vertices, (rest_vertices - root) @ rotation.T + root, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(body: SMPLBody, model: BodyModelData) -> None:
    poses = 0.3 * torch.randn(64, 72, generator=torch.Generator().manual_seed(1))
    trans, scaling = torch.zeros(64, 3), torch.full((64,), 95.0)
    cpu = body(poses, trans, scaling)
    gpu = SMPLBody(model).to("cuda")(poses.cuda(), trans.cuda(), scaling.cuda())
    assert gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-3, rtol=1e-4)
