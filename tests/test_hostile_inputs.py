"""Untrusted inputs run no code and stay in their roots (issue 18).

Every payload pickle here is real: ``test_payloads_run_code_under_plain_pickle`` shows that
plain ``pickle.loads`` of it creates the marker file. Each reader of untrusted pickles (AIST++
motions, SMPL model files, a store's pseudo-motions) must refuse it with a one-line InputError
that names the file and the refused name, and the marker must not appear.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import shutil
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import s3fs
import scipy.sparse as sp

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.storage import weights_cache
from dancegen.storage.aistpp import AistppInputs, music_id_of
from dancegen.storage.body_model import load_body_model
from dancegen.storage.paths import is_safe_name, path_inside, safe_key, safe_name
from dancegen.storage.pseudo_motions import PseudoMotionRoot
from dancegen.storage.safe_pickle import ChumpyStandIn, safe_loads
from dancegen.tasks.edge_synthesis import motion_npz
from dancegen.tasks.plan import plan_segments_from

REPO = Path(__file__).resolve().parents[1]
SEQUENCE = "gBR_sBM_cAll_d01_mBR0_ch01"


# --- payload pickles, opcode by opcode (protocol 2) --------------------------------------------


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _value(value: Any) -> bytes:
    """The opcodes that push ``value`` (a plain value: str, list, tuple, dict, number)."""
    return pickle.dumps(value, protocol=2)[2:-1]  # without PROTO and STOP


def _call(function: bytes, *args: bytes) -> bytes:
    """Opcodes that call what ``function`` pushes with what ``args`` push (REDUCE)."""
    return function + b"(" + b"".join(args) + b"tR"


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _in_motion_dict(body: bytes) -> bytes:
    """``{"smpl_poses": <body>}``: the payload where a real motion keeps its poses."""
    return b"}" + _value("smpl_poses") + body + b"s"


class _Touch:
    """Reduces to ``os.system("touch <path>")``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.path}",)


def _payloads(marker: Path, evil_npy: Path) -> dict[str, tuple[bytes, str]]:
    """id -> (pickle that would create ``marker``, the name a reader must refuse)."""
    code = f"open({str(marker)!r}, 'w').close()"
    import_os = _call(_global("builtins", "__import__"), _value("os"))
    touch = _value(f"touch {marker}")
    return {
        "os.system": (_pickle(_call(_global("os", "system"), touch)), "os.system"),
        "subprocess": (_pickle(_call(_global("subprocess", "call"),
                                     _value(["touch", str(marker)]))), "subprocess.call"),
        "eval": (_pickle(_call(_global("builtins", "eval"), _value(code))), "builtins.eval"),
        "py2-exec": (_pickle(_call(_global("__builtin__", "exec"), _value(code))),
                     "__builtin__.exec"),
        "runstring": (_pickle(_call(_global("numpy.testing._private.utils", "runstring"),
                                    _value(code), _value({}))),
                      "numpy.testing._private.utils.runstring"),
        "getattr": (_pickle(_call(_call(_global("builtins", "getattr"), import_os,
                                        _value("system")), touch)), "builtins.getattr"),
        "attrgetter": (_pickle(_call(_call(_call(_global("operator", "attrgetter"),
                                                 _value("system")), import_os), touch)),
                       "operator.attrgetter"),
        "numpy.load": (_pickle(_call(_global("numpy", "load"), _value(str(evil_npy)),
                                     _value(None), _value(True))), "numpy.load"),
        "numpy.savetxt": (_pickle(_call(_global("numpy.lib._npyio_impl", "savetxt"),
                                        _value(str(marker)), _value([[1.0]]))),
                          "numpy.lib._npyio_impl.savetxt"),
        # a class of an allowed module that is not allowed: memmap creates its file
        "numpy.memmap": (_pickle(_call(_global("numpy", "memmap"), _value(str(marker)),
                                       _value("uint8"), _value("w+"), _value(0),
                                       _value((4,)))), "numpy.memmap"),
        "nested-in-motion": (_pickle(_in_motion_dict(_call(_global("os", "system"), touch))),
                             "os.system"),
    }


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Where a payload that ran would leave its mark."""
    return tmp_path / "marks" / "ran"


@pytest.fixture
def payloads(marker: Path, tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    marker.parent.mkdir()
    evil_npy = tmp_path / "evil.npy"  # what the numpy.load payload would unpickle
    np.save(evil_npy, np.array([_Touch(marker)], dtype=object), allow_pickle=True)
    return _payloads(marker, evil_npy)


PAYLOAD_IDS = list(_payloads(Path("m"), Path("e")))


@pytest.mark.parametrize("payload_id", PAYLOAD_IDS)
def test_payloads_run_code_under_plain_pickle(payloads: dict[str, tuple[bytes, str]],
                                              marker: Path, payload_id: str) -> None:
    data, _ = payloads[payload_id]
    pickle.loads(data)  # what the readers did before: the payload runs
    assert marker.exists()


# --- each reader of untrusted pickles refuses each payload -------------------------------------


def _motion_reader(tmp_path: Path, data: bytes) -> tuple[Callable[[], Any], str]:
    path = tmp_path / "inputs" / "motions" / f"{SEQUENCE}.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    inputs = AistppInputs(str(tmp_path / "inputs"))
    return lambda: inputs.load_motion(f"motions/{SEQUENCE}.pkl"), str(path)


def _smpl_reader(tmp_path: Path, data: bytes) -> tuple[Callable[[], Any], str]:
    path = tmp_path / "smpl" / "SMPL_NEUTRAL.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return lambda: load_body_model(str(path)), str(path)


def _pseudo_reader(tmp_path: Path, data: bytes) -> tuple[Callable[[], Any], str]:
    root = PseudoMotionRoot(tmp_path / "store.zarr")
    root.location.write_bytes(f"motions/{SEQUENCE}.pkl", data)  # as an older version wrote
    pseudo = AistppInputs(root.url)
    return lambda: pseudo.load_motion(f"motions/{SEQUENCE}.pkl"), f"{root.url}/motions"


READERS = {"motion": _motion_reader, "smpl": _smpl_reader, "pseudo-motion": _pseudo_reader}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("payload_id", PAYLOAD_IDS)
def test_readers_refuse_payloads_without_running_them(
        payloads: dict[str, tuple[bytes, str]], marker: Path, tmp_path: Path, reader: str,
        payload_id: str) -> None:
    data, refused = payloads[payload_id]
    read, where = READERS[reader](tmp_path, data)
    with pytest.raises(InputError) as error:
        read()
    message = str(error.value)
    assert where in message and f"refusing {refused}:" in message
    assert "\n" not in message
    assert not marker.exists() and not list(marker.parent.iterdir())


def test_planning_reports_a_payload_motion_and_plans_the_rest(
        inputs_copy: Path, config: DancegenConfig, payloads: dict[str, tuple[bytes, str]],
        marker: Path) -> None:
    (inputs_copy / "motions" / f"{SEQUENCE}.pkl").write_bytes(payloads["os.system"][0])
    plan = plan_segments_from(str(inputs_copy), config)
    assert "refusing os.system" in plan.failed[f"inputs/{SEQUENCE}"]
    assert set(plan.failed) == {f"inputs/{SEQUENCE}"}
    assert plan.segments and SEQUENCE not in {s.sequence for s in plan.segments}
    assert not marker.exists()


def test_pseudo_motion_npz_with_an_object_array_is_refused(tmp_path: Path, marker: Path) -> None:
    marker.parent.mkdir()
    root = PseudoMotionRoot(tmp_path / "store.zarr")
    buffer = io.BytesIO()
    np.savez(buffer, smpl_poses=np.array([_Touch(marker)], dtype=object),
             smpl_trans=np.zeros((1, 3)), smpl_scaling=np.ones(1))
    root.location.write_bytes(f"motions/{SEQUENCE}.npz", buffer.getvalue())
    with pytest.raises(InputError, match=r"not a readable motion npz .*allow_pickle=False"):
        AistppInputs(root.url).load_motion(f"motions/{SEQUENCE}.npz")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (_call(_global("_codecs", "encode"), _value("x"), _value("rot13")), "latin-1"),
        (_call(_global("__builtin__", "bytes"), _value(10**10)), "builtins.bytes"),
        (_call(_global("copyreg", "_reconstructor"), _global("numpy", "dtype"),
               _global("builtins", "set"), _value([1])), "base other than object"),
        (_call(_global("numpy.core.multiarray", "_reconstruct"), _global("builtins", "set"),
               _value((0,)), _value(b"b")), "class other than numpy.ndarray"),
        (_call(_global("numpy", "ndarray"), _value((10**6,))), "not callable"),
        # BUILD on an allow-listed function must not change it for the whole process
        (_global("_codecs", "encode") + _value({"__defaults__": ("rot13",)}) + b"b",
         "refusing to set state on an allow-listed callable"),
    ],
    ids=["codecs-rot13", "bytes-size", "reconstructor-base", "reconstruct-class",
         "ndarray-constructor", "build-on-function"],
)
def test_allowed_names_only_do_what_pickle_uses_them_for(body: bytes, refused: str) -> None:
    with pytest.raises(InputError, match=r"x\.pkl: not a readable motion pickle") as error:
        safe_loads(_pickle(body), "x.pkl", "motion pickle")
    assert refused in str(error.value)
    assert safe_loads(pickle.dumps(b"abc", protocol=2), "x.pkl", "pickle") == b"abc"


def test_sparse_matrix_with_indices_out_of_range_is_refused() -> None:
    matrix = sp.csc_matrix(np.eye(4, 6, dtype=np.float32))
    assert (safe_loads(pickle.dumps(matrix, protocol=2), "m.pkl", "pickle").toarray()
            == matrix.toarray()).all()
    matrix.indices[0] = 10**6  # toarray() would write far outside its buffer
    with pytest.raises(InputError, match=r"m\.pkl: not a readable SMPL pickle .*indices"):
        safe_loads(pickle.dumps(matrix, protocol=2), "m.pkl", "SMPL pickle")


# --- real files still load ---------------------------------------------------------------------


def _aistpp_motion(frames: int = 6) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {"smpl_poses": rng.normal(size=(frames, 72)).astype(np.float32),
            "smpl_trans": rng.normal(size=(frames, 3)).astype(np.float32),
            "smpl_scaling": np.array([93.5], np.float32), "smpl_loss": np.float64(0.25)}


# numpy 1 names are written in with the text GLOBAL opcode of protocols < 4 (from 4 on, names
# travel as length-prefixed strings that a byte replace would break)
@pytest.mark.parametrize(("protocol", "numpy_names"), [
    (2, "numpy._core"), (3, "numpy._core"), (4, "numpy._core"), (5, "numpy._core"),
    (2, "numpy.core"), (3, "numpy.core")])
def test_aistpp_motion_pickles_of_any_protocol_and_numpy_load(
        tmp_path: Path, protocol: int, numpy_names: str) -> None:
    motion = _aistpp_motion()
    data = pickle.dumps(motion, protocol=protocol)
    if numpy_names == "numpy.core":
        data = data.replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy.core.multiarray\n_reconstruct" in data
    (tmp_path / "motions").mkdir()
    (tmp_path / "motions" / f"{SEQUENCE}.pkl").write_bytes(data)
    loaded = AistppInputs(str(tmp_path)).load_motion(f"motions/{SEQUENCE}.pkl")
    np.testing.assert_array_equal(loaded.poses, motion["smpl_poses"])
    np.testing.assert_array_equal(loaded.trans, motion["smpl_trans"])
    assert loaded.scaling == pytest.approx(93.5) and loaded.fps == 60.0


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_chumpy_objects_of_python2_protocols_become_stand_ins(
        protocol: int, monkeypatch: pytest.MonkeyPatch) -> None:
    class Ch:  # what the released SMPL files pickle (chumpy.ch.Ch, state in its __dict__)
        def __init__(self, x: np.ndarray) -> None:
            self.x, self._dirty_vars = x, {"x"}

    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch, chumpy.ch = Ch, chumpy_ch
    array = np.arange(6.0).reshape(2, 3)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "chumpy", chumpy)
        patch.setitem(sys.modules, "chumpy.ch", chumpy_ch)
        data = pickle.dumps({"v_template": Ch(array)}, protocol=protocol)
    assert b"chumpy.ch" in data and "chumpy" not in sys.modules
    loaded = safe_loads(data, "SMPL_NEUTRAL.pkl", "SMPL pickle")["v_template"]
    assert isinstance(loaded, ChumpyStandIn) and loaded.state["_dirty_vars"] == {"x"}
    np.testing.assert_array_equal(loaded.state["x"], array)


def test_pseudo_motions_new_npz_and_older_pkl_both_read(tmp_path: Path) -> None:
    root = PseudoMotionRoot(tmp_path / "store.zarr")
    motion = _aistpp_motion(8)
    new, old = "gEDGE_sPM_cAll_d00_mXnew000000_ch00", "gEDGE_sPM_cAll_d00_mXold000000_ch00"
    root.location.write_bytes(f"motions/{new}.npz", motion_npz(
        motion["smpl_poses"], motion["smpl_trans"], 95.0, 30, "s3://b/ckpt.pt"))
    root.location.write_bytes(f"motions/{old}.pkl", pickle.dumps(  # what version 1 wrote
        {**motion, "fps": 30, "generator": "EDGE", "checkpoint": "s3://b/ckpt.pt"}, protocol=4))
    root.location.write_bytes("splits/crossmodal_train.txt", f"{new}\n{old}\n".encode())
    pseudo = AistppInputs(root.url)
    assert {s.name: s.motion_file for s in pseudo.sequences()} == {
        new: f"motions/{new}.npz", old: f"motions/{old}.pkl"}
    with np.load(io.BytesIO(root.location.read_bytes(f"motions/{new}.npz")),
                 allow_pickle=False) as npz:
        assert {"smpl_poses", "smpl_trans", "smpl_scaling", "fps"} <= set(npz.files)
    for sequence in pseudo.sequences():
        loaded = pseudo.load_motion(sequence.motion_file)
        np.testing.assert_array_equal(loaded.poses, motion["smpl_poses"])
        assert loaded.fps == 30.0
    assert pseudo.load_motion(f"motions/{new}.npz").scaling == 95.0


# --- the path guard --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gBR_sBM_cAll_d04_mBR0_ch01", "setting1", "mBR0", "v1",
                                  "mXnewtracka1b2c3", "c09.v2-final"])
def test_safe_names_pass(name: str) -> None:
    assert is_safe_name(name) and safe_name(name, "name", "here") == name


@pytest.mark.parametrize("name", ["", "..", ".", "../x", "a/b", "a\\b", "..x", "a..b", ".hidden",
                                  "-rf", "a b", "a\x00b", "x" * 129, "/abs", "caf\u00e9", None])
def test_unsafe_names_are_input_errors(name: Any) -> None:
    assert not is_safe_name(name)
    with pytest.raises(InputError, match=r"^here: camera setting .* is not a safe name"):
        safe_name(name, "camera setting", "here")


def test_keys_and_local_targets(tmp_path: Path) -> None:
    assert safe_key("motions/x.pkl", "key", "here") == "motions/x.pkl"
    for key in ("motions/../x.pkl", "/etc/passwd", "motions//x.pkl", "motions/"):
        with pytest.raises(InputError, match="not a safe relative key"):
            safe_key(key, "key", "here")
    root = tmp_path / "cache"
    assert path_inside(root, "unet/.gitattributes", "key", "u") == root / "unet/.gitattributes"
    for key in ("vae/../../x", "..", "/abs", "a//b", "a\\..\\b", ""):
        with pytest.raises(InputError, match="is not a relative key inside its folder"):
            path_inside(root, key, "key", "u")
    (root / "vae").mkdir(parents=True)
    (root / "vae" / "link").symlink_to(tmp_path)  # inside by name, outside once resolved
    with pytest.raises(InputError, match="leads outside"):
        path_inside(root, "vae/link/x", "key", "u")


def _nested_root(tmp_path: Path, fixtures_dir: Path) -> Path:
    """A copy of the fixtures four folders deep, so ../../../../escape lands in tmp_path."""
    return Path(shutil.copytree(fixtures_dir, tmp_path / "a" / "b" / "c" / "inputs"))


def test_camera_setting_cannot_leave_the_inputs_root(tmp_path: Path, fixtures_dir: Path) -> None:
    root = _nested_root(tmp_path, fixtures_dir)
    (tmp_path / "escape").mkdir()  # a valid camera file outside: the old reader read it
    shutil.copy(root / "cameras" / "setting1.json", tmp_path / "a" / "escape.json")
    shutil.copy(root / "cameras" / "setting1.json", tmp_path / "escape" / "evil.json")
    (root / "cameras" / "mapping.txt").write_text(
        f"{SEQUENCE} ../../../../escape/evil\ngPO_sBM_cAll_d03_mPO2_ch03 setting1\nbroken\n")
    inputs = AistppInputs(str(root))
    with pytest.raises(InputError, match=r"mapping.txt: camera setting "
                                         r"'../../../../escape/evil' is not a safe name"):
        inputs.cameras(SEQUENCE)
    assert sorted(inputs.cameras("gPO_sBM_cAll_d03_mPO2_ch03")) == [f"c{i:02d}"
                                                                     for i in range(1, 10)]
    with pytest.raises(InputError, match="has no entry for broken"):  # one field: no setting
        inputs.cameras("broken")


def test_input_keys_from_the_store_cannot_leave_the_root(fixtures_dir: Path) -> None:
    inputs = AistppInputs(str(fixtures_dir))
    for key in (f"../{fixtures_dir.name}/motions/{SEQUENCE}.pkl", "/etc/hostname"):
        with pytest.raises(InputError, match=r"input file .* is not a safe relative key"):
            inputs.read_bytes(key)
    with pytest.raises(InputError, match=r"music id 'm\.\.' is not a safe name"):
        music_id_of("gBR_sBM_cAll_d01_m.._ch01")
    with pytest.raises(InputError, match="video name"):
        inputs.video_file("../../x")


def test_finalize_writes_only_inside_the_pseudo_root(tmp_path: Path, fixtures_dir: Path) -> None:
    root = _nested_root(tmp_path, fixtures_dir)
    sequences = [line.split()[0] for line in (root / "cameras/mapping.txt").read_text().split("\n")
                 if line]
    evil = "../../../../escape/evil"  # most sequences name it: it must still not be used
    (root / "cameras/mapping.txt").write_text(
        "".join(f"{s} {evil if i else 'setting1'}\n" for i, s in enumerate(sequences)))
    store = tmp_path / "store.zarr"
    pseudo = PseudoMotionRoot(store)
    track = "gEDGE_sPM_cAll_d00_mXtrack000000_ch00"
    pseudo.location.write_json("records/mXtrack000000.json",
                               {"sequence": track, "music_file": "music/mXtrack000000.wav"})
    assert pseudo.finalize(AistppInputs(str(root))) == [track]
    assert not (tmp_path / "escape").exists() and not (store.parent / "escape").exists()
    written = sorted(p.relative_to(store / "pseudo-motions").as_posix()
                     for p in (store / "pseudo-motions").rglob("*") if p.is_file())
    assert written == ["cameras/mapping.txt", "cameras/setting1.json", "pseudo.json",
                       "records/mXtrack000000.json", "splits/crossmodal_train.txt"]
    assert (store / "pseudo-motions/cameras/mapping.txt").read_text() == f"{track} setting1\n"
    # a record whose sequence would lead outside is refused, not joined
    pseudo.location.write_json("records/mXbad.json", {"sequence": "../../x",
                                                      "music_file": "music/mXbad.wav"})
    with pytest.raises(InputError, match=r"records/mXbad.json: sequence '../../x' is not a safe"):
        pseudo.finalize(AistppInputs(str(root)))


def test_remove_deletes_the_motion_of_either_format(tmp_path: Path) -> None:
    pseudo = PseudoMotionRoot(tmp_path / "store.zarr")
    for music_id, suffix in (("mXnew", ".npz"), ("mXold", ".pkl")):
        sequence = f"gEDGE_sPM_cAll_d00_{music_id}_ch00"
        pseudo.location.write_json(f"records/{music_id}.json", {
            "sequence": sequence, "music_file": f"music/{music_id}.wav"})
        pseudo.location.write_bytes(f"motions/{sequence}{suffix}", b"motion")
        pseudo.location.write_bytes(f"music/{music_id}.wav", b"music")
    pseudo.location.write_bytes("motions/keep.npz", b"another track")
    pseudo.remove("mXnew")
    pseudo.remove("mXold")
    left = sorted(p.name for p in Path(pseudo.url).rglob("*") if p.is_file())
    assert left == ["keep.npz"]


def test_motion_copies_in_sub_folders_do_not_duplicate_segments(
        inputs_copy: Path, config: DancegenConfig) -> None:
    before = plan_segments_from(str(inputs_copy), config)
    (inputs_copy / "motions" / "old").mkdir()
    shutil.copy(inputs_copy / "motions" / f"{SEQUENCE}.pkl", inputs_copy / "motions" / "old")
    shutil.copy(inputs_copy / "motions" / f"{SEQUENCE}.pkl",
                inputs_copy / "motions" / f"._{SEQUENCE}.pkl")  # macOS metadata file
    plan = plan_segments_from(str(inputs_copy), config)
    assert [s.id for s in plan.segments] == [s.id for s in before.segments]
    assert len({s.id for s in plan.segments}) == len(plan.segments)
    assert plan.ignored == [f"motions/._{SEQUENCE}.pkl", f"motions/old/{SEQUENCE}.pkl"]
    assert not before.ignored


def test_two_files_for_one_sequence_or_an_unsafe_name_fail_clearly(inputs_copy: Path) -> None:
    motions = inputs_copy / "motions"
    (motions / f"{SEQUENCE}.npz").write_bytes(b"")
    with pytest.raises(InputError, match=rf"motions/{SEQUENCE}.npz and motions/{SEQUENCE}.pkl "
                                         rf"both give sequence {SEQUENCE}; keep one"):
        AistppInputs(str(inputs_copy)).sequences()
    (motions / f"{SEQUENCE}.npz").unlink()
    names = [s.name for s in AistppInputs(str(inputs_copy)).sequences()]
    unsafe, long = "g BR_sBM_cAll_d01_mBR0_ch01", "gBR_sBM_cAll_d01_mBR0_ch01_" + "x" * 221
    for name in (unsafe, long):
        (motions / f"{name}.pkl").write_bytes(b"")
    inputs = AistppInputs(str(inputs_copy))
    assert [s.name for s in inputs.sequences()] == names  # the others are still sequences
    refused = inputs.refused_motions()
    assert sorted(refused) == sorted([f"motions/{unsafe}.pkl", f"motions/{long}.pkl"])
    assert f"sequence name {unsafe!r} is not a safe name" in refused[f"motions/{unsafe}.pkl"]
    assert "at most 128 characters" in refused[f"motions/{long}.pkl"]


# --- S3 weights stay in the cache ----------------------------------------------------------------


def _put(s3_bucket: str, key: str, body: bytes = b"w") -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    boto3.client("s3", endpoint_url=endpoint).put_object(
        Bucket=s3_bucket.removeprefix("s3://"), Key=key, Body=body)


def test_weight_keys_with_dot_dot_stay_in_the_cache(s3_bucket: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "deep" / "cache"
    monkeypatch.setattr(weights_cache, "CACHE_DIR", cache)
    _put(s3_bucket, "weights/ok/model_index.json", b"{}")
    _put(s3_bucket, "weights/ok/unet/.gitattributes", b"*.bin lfs")
    folder = weights_cache.local_folder(f"{s3_bucket}/weights/ok", "VAE weights")
    assert (folder / "unet/.gitattributes").read_bytes() == b"*.bin lfs"
    _put(s3_bucket, "weights/vae/config.json", b"{}")
    _put(s3_bucket, "weights/vae/../../x", b"escaped")
    with pytest.raises(InputError, match=r"weights/vae: VAE weights key '../../x' is not a "
                                         r"relative key inside its folder"):
        weights_cache.local_folder(f"{s3_bucket}/weights/vae", "VAE weights")
    assert [p.name for p in tmp_path.rglob("x")] == []
    assert not list((cache / "weights").glob("*/config.json"))  # nothing fetched before the check


def test_a_failed_download_leaves_no_partial_file(s3_bucket: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_cache, "CACHE_DIR", tmp_path / "cache")
    _put(s3_bucket, "weights/model.pt", b"weights")

    async def broken_get_file(self: s3fs.S3FileSystem, rpath: str, lpath: str,
                              **kwargs: Any) -> None:
        Path(lpath).write_bytes(b"wei")  # part of the object arrived, then the network went
        raise ConnectionError("connection reset")

    # the async method: fsspec gives each (cached) instance its own sync ``get`` wrapper
    monkeypatch.setattr(s3fs.S3FileSystem, "_get_file", broken_get_file)
    with pytest.raises(ConnectionError):
        weights_cache.local_file(f"{s3_bucket}/weights/model.pt", "checkpoint")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    monkeypatch.undo()
    monkeypatch.setattr(weights_cache, "CACHE_DIR", tmp_path / "cache")
    path = weights_cache.local_file(f"{s3_bucket}/weights/model.pt", "checkpoint")
    assert path.read_bytes() == b"weights"


# --- the source tree keeps to it ------------------------------------------------------------

SOURCE_FOLDERS = ("storage", "tasks", "flows", "models", "dancegen", "benchmarks", "scripts")
UNPICKLERS = {"load", "loads", "Unpickler"}


def unsafe_loads(source: str) -> list[str]:
    """Calls in ``source`` that could run code from a file: torch.load without
    weights_only=True, pickle.load/loads/Unpickler, np.load(..., allow_pickle=True)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "_pickle", "dill"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if a.name in UNPICKLERS]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        owner, attr, line = node.value.id, node.attr, node.lineno
        if owner in ("pickle", "_pickle", "cPickle", "dill") and attr in UNPICKLERS:
            found.append(f"line {line}: {owner}.{attr}")
    for call in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)):
        name = ast.unparse(call.func)
        keywords = {k.arg: k.value for k in call.keywords}
        if name == "torch.load":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"line {call.lineno}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load") and "allow_pickle" in keywords:
            allow = keywords["allow_pickle"]
            if not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"line {call.lineno}: {name} with allow_pickle")
    return sorted(found, key=lambda text: int(text.split(":")[0].removeprefix("line ")))


def test_the_scan_finds_unsafe_loads() -> None:
    source = ("import pickle, torch, numpy as np\nfrom pickle import loads\n"
              "pickle.loads(b'')\nx = pickle.Unpickler\ntorch.load(p)\n"
              "torch.load(p, weights_only=False)\nnp.load(f, allow_pickle=True)\n"
              "torch.load(p, weights_only=True)\nnp.load(f, allow_pickle=False)\n"
              "pickle.dumps(1)\n")
    assert unsafe_loads(source) == [
        "line 2: from pickle import loads", "line 3: pickle.loads", "line 4: pickle.Unpickler",
        "line 5: torch.load without weights_only=True",
        "line 6: torch.load without weights_only=True", "line 7: np.load with allow_pickle"]


def test_no_source_file_unpickles_outside_safe_pickle() -> None:
    files = [p for folder in SOURCE_FOLDERS for p in (REPO / folder).rglob("*.py")]
    assert len(files) > 50
    found = {str(p.relative_to(REPO)): unsafe_loads(p.read_text()) for p in files
             if p.relative_to(REPO).as_posix() != "storage/safe_pickle.py"}
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_planning_fails_an_unsafe_motion_name_alone(inputs_copy: Path,
                                                    config: DancegenConfig) -> None:
    before = plan_segments_from(str(inputs_copy), config)
    long = "gBR_sBM_cAll_d01_mBR0_ch01_" + "x" * 221  # 248 characters: over the name limit
    (inputs_copy / "motions" / f"{long}.pkl").write_bytes(b"")
    plan = plan_segments_from(str(inputs_copy), config)
    assert set(plan.failed) == {f"inputs/motions/{long}.pkl"}
    assert "\n" not in plan.failed[f"inputs/motions/{long}.pkl"]
    assert [s.id for s in plan.segments] == [s.id for s in before.segments]
