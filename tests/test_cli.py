"""The CLI as a user runs it: the main job end to end, then idempotent, and info on a store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import zarr
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.storage import DatasetStore
from dancegen.storage.media import probe_mp4
from dancegen.storage.snapshot import current_snapshot_id


def dancegen(*args: str, cwd: Path, prefect_api: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI (on its own local Prefect server, or ``prefect_api``'s); the timeout only
    bounds a hang (the demo takes ~4 min alone on 2 cores)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    return subprocess.run([sys.executable, "-m", "dancegen", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200)


# EDGE, the LDM stages and the sampler shortened: the full tiny run is the main job's
SHORT_LDM = ["--set", "edge.train.steps=50", "--set", "edge.diffusion.sampling_steps=10",
             "--set", "training.stage1.steps=10", "--set", "training.stage2.steps=10",
             "--set", "training.stage3.steps=4", "--set", "training.checkpoint_every=5",
             "--set", "training.log_every=2", "--set", "ldm.stand_in.vae_steps=10",
             "--set", "generation.ddim_steps=2", "--set", "generation.guidance_scale=1",
             "--set", "evaluation.clip_frames=16", "--set", "evaluation.max_clips=1"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_demo_runs_the_main_job_and_is_idempotent(tmp_path: Path) -> None:
    first = dancegen("demo", "--workdir", "work", *SHORT_LDM, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert re.search(r"Prefect API http://127\.0\.0\.1:\d+/api", out)  # a real local server
    trained = re.search(r"Completed: EDGE edge-tiny: 50 steps, loss ([\d.]+) -> ([\d.]+)", out)
    assert trained and float(trained.group(2)) < 0.5 * float(trained.group(1))
    assert ("Completed: pseudo-motion tracks 2 new, 0 kept, 0 failed; 18 segments; "
            "shards written 20, skipped 0, failed 0") in out
    assert "(SYNTHETIC stand-in inputs)" in out
    assert "sources edge 4, synthetic 14" in out
    assert "stage music: 5/5 shards with live rows complete" in out
    assert (tmp_path / ".dancegen/prefect/prefect.db").exists()  # runs were recorded there
    assert (tmp_path / "work/store.zarr/models/edge/edge-tiny/checkpoint.pt").exists()
    store = zarr.open_group(str(tmp_path / "work/store.zarr/v1"), mode="r")
    assert store["music/baseline"].shape == (18, 150, 35)
    assert store["maps/depth"].shape == (18, 150, 128, 128)
    preview = iio.imread(tmp_path / "work/preview.png")
    assert preview.shape == (128, 7 * 128, 3) and preview.std() > 10
    table = out[out.index("| set | clips |"):]
    assert "| generated (EDGE pseudo-motions) | 2 |" in table
    assert "| training motions (reference) | 4 |" in table

    ldm = tmp_path / "work/store.zarr/models/ldm/ldm-tiny"
    for stage, steps in ((1, 10), (2, 10), (3, 4)):
        assert f"Completed: LDM stage {stage} (ldm-tiny): {steps} steps" in out
        latest = json.loads((ldm / f"stage{stage}/latest.json").read_text())
        assert latest["done"] and latest["step"] == steps
        assert (ldm / latest["checkpoint"] / "training_state.pt").exists()
    assert json.loads((ldm / "base/stand_in.json").read_text())["stand_in"] is True
    assert (ldm / "stage2/checkpoint-0000010/denoising_unet/config.json").exists()

    evaluated = re.search(r"Completed: evaluated 1 clips: FVD n/a, LPIPS n/a, PSNR ([\d.]+), "
                          r"SSIM ([-\d.]+), 2D-BeatAlign ([\d.]+|n/a), AV-Align ([\d.]+); "
                          r"([\d.]+) s of compute per generated second; report (\S+)", out)
    assert evaluated, out[-3000:]
    report = Path(evaluated.group(6))
    assert report.is_file() and report.parent.parent == ldm / "eval"
    summary = json.loads((report.parent / "metrics.json").read_text())
    assert summary["clips"] == 1 and summary["frames"] == 16
    assert set(summary["missing"]) == {"FVD", "LPIPS", "DWPose"}
    video = tmp_path / "work/dance.mp4"
    assert probe_mp4(video) == {"frames": 180, "size": (128, 128), "fps": 30.0, "audio": True}
    assert re.search(r"wrote \S+dance\.mp4: 180 frames \(6\.0 s at 30 fps, 128x128\) with music",
                     out)
    assert f"done: video work/dance.mp4  report {report}" in out

    # the re-run on the session's Prefect server: what must hold is in the store, and the
    # embedded server's start-up (checked above) is not paid twice
    from prefect.settings import PREFECT_API_URL

    second = dancegen("demo", "--workdir", "work", *SHORT_LDM, cwd=tmp_path,
                      prefect_api=PREFECT_API_URL.value())
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Completed: EDGE edge-tiny: 50 steps" in second.stdout  # nothing left to train
    assert "pseudo-motion tracks 0 new, 2 kept, 0 failed" in second.stdout
    assert "shards written 0, skipped 20, failed 0" in second.stdout
    assert "Completed: LDM stage 3 (ldm-tiny): 4 steps" in second.stdout  # already trained
    assert "evaluating 0 clips of the test split (1 already done)" in (second.stdout
                                                                      + second.stderr)
    assert "kept work/dance.mp4" in second.stdout


def test_info_describes_a_store_and_refuses_an_empty_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dataset", "info", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no dancegen dataset" in result.output


def test_fixtures_command_writes_inputs_of_any_size(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fixtures", str(tmp_path / "fx"), "--sequences", "12",
                                      "--seconds", "6"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "fx/motions").glob("*.pkl"))) == 12
    assert len(list((tmp_path / "fx/music").glob("*.wav"))) == 12  # 10 genres, then 2 more


def test_fixtures_command_writes_the_labelled_layout(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fixtures", str(tmp_path / "fx")])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in (tmp_path / "fx/SYNTHETIC.md").read_text()
    assert len(list((tmp_path / "fx/motions").glob("*.pkl"))) == 7


def test_plan_estimates_the_paper_scale() -> None:
    result = CliRunner().invoke(app, [
        "dataset", "plan", "--config", "configs/paper.yaml", "--no-measure",
        "--set", "planning.jukebox_seconds_per_music_second=0.05"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "54,700 s of motion and music" in out and "10,940 segments" in out
    assert "1.64 M frames" in out
    # 5B prior, layer 66, 5-s chunks: ~15.7 TFLOP per 5-s clip (jukemirlib's cost)
    assert "3.15 TFLOP per second of music" in out
    assert "0.050 s per s of music -> 0.8 GPU hours" in out
    jukebox_gb = 10940 * 150 * 4800 * 2 / 1e9  # float16 (T, 4800) per segment
    assert re.search(rf"jukebox\s+{jukebox_gb:.1f} GB", out)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_readme_sequence_builds_before_edge_is_trained_and_skips_synthesis_once(
        tmp_path: Path) -> None:
    """The README's first two commands on the default config (which names new music): no EDGE
    trained into the store yet, so the build warns once and builds the rest (after `dancegen
    edge train` a rebuild samples the pseudo-motions: test_demo_runs_the_main_job...)."""
    from prefect.settings import PREFECT_API_URL

    made = dancegen("fixtures", "in", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    # on the session's Prefect server: the embedded server's start is the demo test's subject
    built = dancegen("dataset", "build", "--inputs", "in", "--out", "store.zarr",
                     "--set", "stages=[motion]", "--set", "dataset.max_segments_per_sequence=1",
                     cwd=tmp_path, prefect_api=PREFECT_API_URL.value())
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-3000:]
    assert output.count("no EDGE checkpoint in the store yet") == 1, output[-3000:]
    assert "Traceback" not in output
    assert "Completed: pseudo-motion tracks 0 new, 0 kept, 0 failed" in output
    dataset = DatasetStore(tmp_path / "store.zarr", "v1")
    assert not dataset.failures()
    assert {s.source for s in dataset.segments()} == {"synthetic"}
    assert len(dataset.records("motion")) == len(dataset.shard_ranges()) > 0
    info = CliRunner().invoke(app, ["dataset", "info", str(tmp_path / "store.zarr")])
    assert info.exit_code == 0, info.output
    snapshot = current_snapshot_id(dataset)
    assert f"snapshot {snapshot} (current), one of 1" in info.output
    assert "chunk = 5 frames" in info.output and "tombstoned 0" in info.output


@pytest.mark.parametrize("out, says", [
    (".", "a folder; expected the path of a file to write"),
    ("missing/video.mp4", "missing is not an existing folder"),
    ("a-file/video.mp4", "a-file is not an existing folder"),
])
def test_generate_refuses_a_bad_out_before_anything_else(tmp_path: Path, out: str, says: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    # no music, no photo, no store at all: --out is what it must complain about, at once
    result = CliRunner().invoke(app, ["generate", "--music", "none.wav", "--image", "none.png",
                                      "--store", "no-store", "--out", out])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: --out {out}: {says}"
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_generate_refuses_an_out_in_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    result = CliRunner().invoke(app, ["generate", "--music", "none.wav", "--image", "none.png",
                                      "--store", "no-store", "--out", str(folder / "v.mp4")])
    assert result.exit_code == 1 and "not writable" in result.output, result.output
