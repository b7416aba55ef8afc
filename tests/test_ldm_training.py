"""The three LDM training stages on a built fixture dataset: losses fall, checkpoints land in
the store in the diffusers-like layout, resume is exact (also after a kill -9), stage 3 needs
stages 1 and 2, and the train-ldm flow drives Ray Train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ldm_helpers import SHORT, short_config
from prefect_ray import RayTaskRunner
from progress_helpers import assert_published_while_running
from safetensors.torch import load_file

from dancegen.errors import ConfigError, StoreError
from dancegen.flows import reports
from dancegen.flows.train_ldm import train_ldm
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.tasks.ldm_data import ClipSource, SampleSpec, depth_image
from dancegen.tasks.ldm_train import train_stage

pytestmark = [pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def falls(losses: list[list[float]], column: int = 1) -> tuple[float, float]:
    """Mean of the first and of the last third of a logged loss column."""
    values = np.array([row[column] for row in losses])
    third = max(1, len(values) // 3)
    return float(values[:third].mean()), float(values[-third:].mean())


def test_clip_batches_have_the_stage_shapes(built_store: Path) -> None:
    config = short_config()
    source = ClipSource(str(built_store), config)
    batch = source.batch(torch.Generator().manual_seed(0), 2, 8, 128)
    assert batch["music"].shape == (2, 8, 35)
    assert batch["guidance_64"].shape == (2, 8, 12, 64, 64)
    assert batch["heatmaps"].shape == (2, 8, 18, 64, 64)
    assert batch["frames"].shape == (2, 3, 8, 128, 128)
    assert batch["reference"].shape == (2, 3, 128, 128)
    assert batch["guidance"].shape == (2, 4, 3, 8, 128, 128)
    assert batch["frames"].min() >= -1 and batch["frames"].max() <= 1
    assert batch["guidance"].min() >= 0 and batch["guidance"].max() <= 1
    # the same generator state draws the same clips: what makes resume exact
    again = source.batch(torch.Generator().manual_seed(0), 2, 8, 128)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    # only train-split segments
    splits = {source.snapshot.table.rows[row].split for row in source.rows}
    assert splits == {"train"}
    # the DataLoader's worker process reads exactly what this process reads
    assert config.training.loader.workers == 1
    spec = SampleSpec(128)

    def draw(step: int) -> list:
        return source.requests(torch.Generator().manual_seed(step), 2, 8)

    from_worker = list(source.loader(spec, draw, 3, 5))
    samples = source.dataset(spec)
    for step, loaded in zip((3, 4), from_worker, strict=True):
        here = [samples[request] for request in draw(step)]
        assert all(torch.equal(loaded[k], torch.stack([h[k] for h in here])) for k in loaded)


def test_depth_images_are_relative_and_background_black() -> None:
    depth = np.zeros((1, 4, 4), np.float16)
    depth[0, 1, 1], depth[0, 2, 2] = 2.0, 3.0
    grey = depth_image(depth)
    assert grey.shape == (1, 4, 4, 3)
    assert grey[0, 1, 1, 0] == pytest.approx(1.0) and grey[0, 2, 2, 0] == pytest.approx(0.2)
    assert grey[0, 0, 0].max() == 0


def test_stages_train_their_losses_fall_and_checkpoints_land(trained: Path) -> None:
    run = LdmRun(str(trained), "ldm-tiny")
    assert run.base_ready()
    stand_in = json.loads((Path(run.base.root) / "stand_in.json").read_text())
    assert stand_in["stand_in"] and stand_in["vae_losses"][-1] < 0.5 * stand_in["vae_losses"][0]
    first, last = falls(run.state(1)["losses"])
    assert last < 0.8 * first, (first, last)               # M2PEnc: L1 + heatmap MSE
    first, last = falls(run.state(2)["losses"])
    # image stage, v-prediction MSE: 0.708 -> 0.552 in these 24 steps (seeded, so the same on
    # every run); that it learnt to draw the frame is test_ldm_schedule's sampling test
    assert last < 0.95 * first, (first, last)
    state3 = run.state(3)
    assert state3["loss_columns"] == ["step", "loss", "guidance_l1", "heatmap_mse", "denoise_mse"]
    assert state3["done"] and state3["step"] == 4
    folder = Path(run.location.root) / state3["checkpoint"]
    assert sorted(p.name for p in folder.iterdir()) == ["m2penc", "motion_module",
                                                        "training_state.pt"]
    motion = load_file(folder / "motion_module/diffusion_pytorch_model.safetensors")
    assert all(".motion_modules." in k for k in motion)
    stage2 = Path(run.location.root) / run.state(2)["checkpoint"]
    assert {p.name for p in stage2.iterdir()} == {
        "reference_unet", "denoising_unet", "training_state.pt",
        *(f"guidance_encoder_{t}" for t in ("depth", "normal", "semantic_map", "dwpose"))}
    config = json.loads((stage2 / "denoising_unet/config.json").read_text())
    assert config["block_out_channels"] == [32, 64, 64]  # a diffusers UNet2DConditionModel config
    # stage 3 trains only the temporal layers of the U-Net: the spatial weights are stage 2's
    assert len(run.checkpoints(1)) == 2  # older checkpoints pruned
    # a stage's own learning rate (M2PEnc's in local-cpu) wins over training.learning_rate
    config = short_config()
    assert config.training.stage1.learning_rate != config.training.learning_rate
    assert run.training_state(1)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        config.training.stage1.learning_rate)
    assert config.training.stage2.learning_rate is None
    assert run.training_state(2)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        config.training.learning_rate)


def test_resume_after_kill_is_exact(built_store: Path, tmp_path: Path) -> None:
    """Stage 1 killed with SIGKILL after its first checkpoint, then re-run: the weights equal
    those of an uninterrupted run (same step, same batches, same optimizer state)."""
    store = tmp_path / "store.zarr"
    store.mkdir()
    (store / "v1").symlink_to(built_store / "v1")
    overrides = [*SHORT, "training.stage1.steps=20"]
    script = ("from dancegen.config import load_config\n"
              "from dancegen.tasks.ldm_train import train_stage\n"
              f"config = load_config({str(REPO / 'configs/local-cpu.yaml')!r}, {overrides!r})\n"
              f"train_stage(1, {str(store)!r}, config)\n")
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    latest = store / "models/ldm/ldm-tiny/stage1/latest.json"
    deadline = time.monotonic() + 300
    while not latest.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at == 10 and not json.loads(latest.read_text())["done"]

    config = short_config("training.stage1.steps=20")
    resumed = train_stage(1, str(store), config)
    assert resumed["resumed_from"] == killed_at and resumed["step"] == 20 and resumed["done"]
    run = LdmRun(str(store), "ldm-tiny")
    after_kill = run.module_state(1, "m2penc")[1]

    straight = tmp_path / "straight.zarr"
    straight.mkdir()
    (straight / "v1").symlink_to(built_store / "v1")
    train_stage(1, str(straight), config)
    uninterrupted = LdmRun(str(straight), "ldm-tiny").module_state(1, "m2penc")[1]
    for key, value in uninterrupted.items():
        torch.testing.assert_close(after_kill[key], value, rtol=0, atol=0)
    # a finished stage returns at once
    assert train_stage(1, str(store), config)["resumed_from"] == 20


def test_stage3_needs_stages_1_and_2(trained: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.zarr"
    (store / "models/ldm/ldm-tiny").mkdir(parents=True)
    (store / "v1").symlink_to(trained / "v1")
    (store / "models/ldm/ldm-tiny/base").symlink_to(trained / "models/ldm/ldm-tiny/base")
    config = short_config()
    with pytest.raises(StoreError, match="stage 2 of run 'ldm-tiny' has not finished"):
        train_stage(3, str(store), config)


@pytest.mark.usefixtures("prefect_server", "ray_cluster")
def test_flow_trains_a_stage_with_ray_train(trained: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # checkpoints a second or more apart, read ten times a second: each is published
    monkeypatch.setattr(reports, "PROGRESS_SECONDS", 0.1)
    store = tmp_path / "store.zarr"
    store.mkdir()
    (store / "v1").symlink_to(trained / "v1")
    flow = train_ldm.with_options(task_runner=RayTaskRunner())
    refused = flow(stage=3, out=str(store), config=short_config(), return_state=True)
    assert refused.is_failed() and "needs finished stages 1 and 2" in refused.message
    # deployed, a stage finds its store and config up the trigger chain (here: the refused run)
    # two DDP ranks (gloo on CPU), one CPU each
    ddp = short_config("training.stage1.steps=4", "training.workers=2",
                       "training.stage3.batch_size=2", "ray.stages.ldm_train={num_cpus: 1}",
                       "training.checkpoint_every=2", "training.log_every=1")
    head = flow(stage=1, out=str(store), config=ddp, return_state=True)
    assert head.is_completed(), head.message
    assert LdmRun(str(store), "ldm-tiny").state(1)["world_size"] == 2
    # it published its progress while Ray Train ran it: each checkpoint, then the summary
    assert_published_while_running(head, "ldm-stage1", [50.0, 100.0], final_rows=4)
    state = flow(stage=1, upstream_flow_run=f"prefect.flow-run.{head.state_details.flow_run_id}",
                 return_state=True)
    assert state.is_completed(), state.message
    assert "LDM stage 1 (ldm-tiny): 4 steps" in state.message
    assert LdmRun(str(store), "ldm-tiny").done(1)


def test_a_changed_model_is_not_resumed_into(trained: Path) -> None:
    config = short_config("training.stage1.steps=31", "ldm.m2penc.channels=[8,16,32]")
    with pytest.raises(ConfigError, match="holds a m2penc of another configuration"):
        train_stage(1, str(trained), config)
    assert LdmRun(str(trained), "ldm-tiny").state(1)["step"] == 30  # untouched


def test_the_local_ray_trainer_leaves_out_the_dashboard_only_cleaner() -> None:
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from dancegen.config import load_config
    from dancegen.flows.train_ldm import TrainerWithoutDashboard, trainer_class

    assert trainer_class(short_config()) is TrainerWithoutDashboard  # local, no dashboard
    assert trainer_class(load_config("configs/paper.yaml")) is TorchTrainer  # a cluster
    trainer = TrainerWithoutDashboard(lambda: None, scaling_config=ScalingConfig(num_workers=1))
    kept = {type(callback).__name__ for callback in trainer._create_default_callbacks()}
    assert "PlacementGroupCleanerCallback" not in kept and "BackendSetupCallback" in kept
