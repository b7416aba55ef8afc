"""EDGE training on the fixtures: windows, falling loss, checkpoints in the store, exact resume."""

from __future__ import annotations

import pytest
import torch
from jukebox_helpers import jukebox_overrides, write_reduced_jukebox

from dancegen.config import load_config
from dancegen.errors import ConfigError, InputError
from dancegen.models.motion_repr import decode_edge151
from dancegen.storage.aistpp import AistppInputs
from dancegen.storage.edge_checkpoint import EdgeRun, load_checkpoint
from dancegen.tasks.edge_data import build_windows, training_sequences
from dancegen.tasks.edge_train import train_edge_now
from dancegen.tasks.jukebox_features import store_cache

# fewer, further-apart windows than EDGE's 0.5 s stride keep these tests quick
FAST = ["edge.train.window_stride_seconds=2.5", "edge.train.log_every=5"]


def _config(*overrides: str):
    return load_config("configs/local-cpu.yaml", [*FAST, *overrides])


def test_windows_follow_edges_slicing(fixtures_dir) -> None:
    config = _config()
    inputs = AistppInputs(str(fixtures_dir))
    sequences = training_sequences(inputs)
    assert {s.split for s in sequences} == {"train"} and len(sequences) == 4  # ignored dropped
    windows = build_windows(inputs, sequences, config)
    # 12.5, 16, 15 and 11 s at a 2.5-s stride: 4 + 5 + 5 + 3 windows of 150 frames
    assert windows.motion.shape == (17, 150, 151) and windows.cond.shape == (17, 150, 35)
    assert windows.names[0] == "gBR_sBM_cAll_d01_mBR0_ch01@0"
    assert windows.smpl_scaling == pytest.approx(95.0)
    contacts = windows.motion[..., :4]
    assert set(contacts.unique().tolist()) <= {0.0, 1.0}
    # the window decodes back to the motion it was cut from (AIST++ 60 fps, every 2nd frame)
    motion = inputs.load_motion(sequences[0].motion_file)
    _, trans = decode_edge151(windows.motion[1], windows.smpl_scaling)
    start = round(2.5 * 60)
    assert torch.allclose(trans, torch.from_numpy(motion.trans[start:start + 300:2]), atol=1e-2)


def test_training_loss_falls_and_checkpoints_land_in_the_store(fixtures_dir, tmp_path) -> None:
    config = _config("edge.train.steps=60", "edge.train.checkpoint_every=20")
    result = train_edge_now(str(fixtures_dir), str(tmp_path / "store"), config, log=lambda _: 0)
    run = EdgeRun(str(tmp_path / "store"), config.edge.run_name)
    state = run.state()
    losses = [row[1] for row in state["losses"]]
    assert len(losses) == 12 and state["step"] == 60
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    assert result.last_loss == losses[-1] and result.steps == 60 and result.resumed_from == 0
    # resumable checkpoints: the last KEEP of them, train.json names the newest
    assert run.checkpoints() == [f"checkpoints/step-{s:08d}.pt" for s in (20, 40, 60)]
    published = load_checkpoint(run.checkpoint_url)
    assert published.step == 60 and published.dancegen["smpl_scaling"] == pytest.approx(95.0)
    assert published.model_config.latent_dim == config.edge.model.latent_dim


def test_resume_after_interruption_gives_the_same_weights(fixtures_dir, tmp_path) -> None:
    straight = _config("edge.train.steps=12", "edge.train.checkpoint_every=6",
                       "edge.train.batch_size=4")
    train_edge_now(str(fixtures_dir), str(tmp_path / "a"), straight, log=lambda _: 0)
    # the same run "killed" after its checkpoint at step 6, then started again
    first_half = _config("edge.train.steps=6", "edge.train.checkpoint_every=6",
                         "edge.train.batch_size=4")
    train_edge_now(str(fixtures_dir), str(tmp_path / "b"), first_half, log=lambda _: 0)
    logs: list[str] = []
    result = train_edge_now(str(fixtures_dir), str(tmp_path / "b"), straight, log=logs.append)
    assert result.resumed_from == 6 and "resuming edge-tiny from step 6" in logs[0]
    a = load_checkpoint(EdgeRun(str(tmp_path / "a"), "edge-tiny").checkpoint_url)
    b = load_checkpoint(EdgeRun(str(tmp_path / "b"), "edge-tiny").checkpoint_url)
    for key, value in a.model_state.items():
        assert torch.equal(value, b.model_state[key]), key
    for key, value in a.ema_state.items():
        assert torch.equal(value, b.ema_state[key]), key
    # a finished run is not trained further
    again = train_edge_now(str(fixtures_dir), str(tmp_path / "b"), straight, log=lambda _: 0)
    assert again.resumed_from == 12 and again.steps == 12
    # nor continued with another model under the same name
    wider = _config("edge.train.steps=14", "edge.model.latent_dim=96")
    with pytest.raises(ConfigError, match=r"set a new edge\.run_name"):
        train_edge_now(str(fixtures_dir), str(tmp_path / "b"), wider, log=lambda _: 0)


def test_edge_trains_on_jukebox_features(fixtures_dir, tmp_path) -> None:
    missing = _config("edge.features=jukebox", f"jukebox.vqvae={tmp_path}/none.pth.tar")
    with pytest.raises(InputError, match=r"Jukebox checkpoint not found: .*none\.pth\.tar"):
        train_edge_now(str(fixtures_dir), str(tmp_path / "a"), missing)
    weights = write_reduced_jukebox(tmp_path)  # reduced, random: the wiring, not the features
    config = _config("edge.features=jukebox", "edge.train.steps=3", "edge.train.batch_size=2",
                     "edge.train.window_stride_seconds=5", *jukebox_overrides(weights))
    result = train_edge_now(str(fixtures_dir), str(tmp_path / "b"), config, log=lambda _: 0)
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.model_config.cond_feature_dim == 4800 and result.windows == 10
    assert checkpoint.dancegen["features"] == "jukebox"
    # each track was extracted once, into the store's feature cache the build also reads
    inputs = AistppInputs(str(fixtures_dir))
    cache = store_cache(str(tmp_path / "b"), inputs, config)
    shas = {inputs.sha256(s.music_file) for s in training_sequences(inputs)}
    assert len(shas) == 3 and all(cache.has(sha) for sha in shas)
