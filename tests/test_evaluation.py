"""The evaluation: per-clip metrics on known answers, the aggregate and the report, and the
evaluate flow on a trained run (generation through Ray, records beside the checkpoint, a
missing weight file named while the other metrics run, resume without recomputing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ldm_helpers import FAST, SHORT, short_config
from prefect_ray import RayTaskRunner
from weight_files import StyleganVStandIn, alexnet_file, save_torchscript

from dancegen.config import EvaluationWeights
from dancegen.flows.evaluate import evaluate
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.evaluation import EvaluationRun
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.storage.media import probe_mp4
from dancegen.storage.snapshot import current_snapshot_id
from dancegen.tasks.evaluation import (
    KEYPOINTS_M2PENC,
    ClipData,
    MetricModels,
    _metric_models,
    clip_metrics,
)
from dancegen.tasks.evaluation_report import summarize, write_report
from dancegen.tasks.frame_metrics import PSNR_CAP

FPS, RATE = 30, 22050


def dancing_clip(frames: int = 90) -> ClipData:
    """A square swaying with a clicking beat every 15 frames; it stands still on the beats."""
    video = np.zeros((frames, 64, 64, 3), np.uint8)
    keypoints = np.zeros((frames, 18, 3), np.float32)
    beats = np.arange(0, frames, 15)
    t = np.arange(frames)
    # speed sin^2: 0 exactly on the beats; the direction flips on each beat
    speed = np.sin(np.pi * t / 15) ** 2 * np.where((t // 15) % 2, -1, 1)
    offset = 2 * np.cumsum(speed)
    for i in range(frames):
        x = round(20 + offset[i])
        video[i, 20:40, x:x + 16] = 255
        keypoints[i, :, 0] = 20 + offset[i] + np.arange(18)
        keypoints[i, :, 1] = 30 + np.arange(18)
        keypoints[i, :, 2] = 1
    samples = np.arange(round(frames / FPS * RATE)) / RATE
    clicks = (np.sin(2 * np.pi * 880 * samples) * (np.mod(samples, 0.5) < 0.03)).astype(np.float32)
    return ClipData("clip-a", video, np.zeros((frames, 35), np.float32), clicks, RATE, beats,
                    keypoints)


def test_the_ground_truth_against_itself_is_perfect() -> None:
    clip = dancing_clip()
    record = clip_metrics(clip, clip.frames, clip.keypoints, FPS, MetricModels(), "bailando")
    assert record["psnr"] == PSNR_CAP and record["ssim"] == pytest.approx(1.0)
    assert record["beat_align"]["generated"] == record["beat_align"]["ground_truth"] > 0.5
    assert record["av_align"]["generated"] == record["av_align"]["ground_truth"]
    assert record["keypoints"] == KEYPOINTS_M2PENC
    assert record["keypoints_detected"] == {"generated": 1.0, "ground_truth": 1.0}
    assert "lpips" not in record


def test_a_static_video_scores_lower_everywhere() -> None:
    clip = dancing_clip()
    still = np.repeat(clip.frames[:1], len(clip.frames), axis=0)
    still_keypoints = np.repeat(clip.keypoints[:1], len(clip.frames), axis=0)
    record = clip_metrics(clip, still, still_keypoints, FPS, MetricModels(), "bailando")
    assert record["av_align"]["generated"] == 0.0
    assert record["beat_align"]["generated"] < record["beat_align"]["ground_truth"]
    assert record["ssim"] < 0.95
    assert np.isfinite(record["per_frame"]["psnr"]).mean() > 0.5  # exact only where it rests


def test_a_clip_without_music_beats_has_no_beat_align() -> None:
    clip = dancing_clip()
    clip.beats = np.array([], dtype=np.int64)
    record = clip_metrics(clip, clip.frames, clip.keypoints, FPS, MetricModels(), "bailando")
    assert record["beat_align"] == {"generated": None, "ground_truth": None}
    assert record["timeline"]["motion_beats"] == {"generated": [], "ground_truth": []}
    assert record["psnr"] == PSNR_CAP                        # the other metrics still run


def test_summary_and_report(tmp_path: Path) -> None:
    config = short_config()
    evaluation = EvaluationRun(str(tmp_path / "store"), config, "stage3/checkpoint-0000004",
                               "20261203T000000Z-0123456789")
    clip = dancing_clip()
    records = []
    for name, shift in (("a", 0), ("b", 7), ("c", 0)):
        record = clip_metrics(clip, np.roll(clip.frames, shift, axis=0),
                              np.roll(clip.keypoints, shift, axis=0), FPS, MetricModels(),
                              "bailando")
        record.update(clip=name, frames=90, fps=FPS, generation_seconds=4.0,
                      generated_seconds=2.0, missing={"FVD": "no weights configured"},
                      video=f"videos/{name}.mp4", sample=f"samples/{name}.png")
        records.append(record)
    records[2]["beat_align"] = {"generated": None, "ground_truth": None}  # no music beat in c
    records[2]["beat_align_variants"] = {v: dict(records[2]["beat_align"])
                                         for v in ("fact", "bailando")}
    summary = summarize(evaluation, records, {}, 16)
    for variant in ("fact", "bailando"):  # both variants, the configured one in Table 1
        assert summary[f"beat_align_{variant}_generated"] == pytest.approx(np.mean(
            [r["beat_align_variants"][variant]["generated"] for r in records[:2]]))
    assert summary["beat_align_bailando_generated"] == summary["beat_align"]
    assert summary["beat_align_fact_generated"] != summary["beat_align"]
    assert summary["clips"] == 3 and summary["frames"] == 270
    assert summary["seconds_per_generated_second"] == pytest.approx(2.0)
    # clips a and c are exact: 100 dB each (capped), so the mean is finite
    assert summary["fvd"] is None and records[0]["psnr"] == 100.0
    assert records[1]["psnr"] < summary["psnr"] < 100.0
    assert summary["beat_align"] == pytest.approx(np.mean(
        [r["beat_align"]["generated"] for r in records[:2]]))
    markdown = write_report(evaluation, summary, records, "test report", ["a note"])
    assert "213.289" in markdown and "dancegen (this run)" in markdown
    assert "| a | 90 | 100.00 |" in markdown
    location = Path(evaluation.url)
    assert (location / "report.html").read_text().count("<table>") == 4
    assert "2D-BeatAlign in both variants" in markdown
    for plot in ("per_clip.png", "beats_a.png", "beats_b.png", "beats_c.png"):
        assert (location / "plots" / plot).stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "ray_cluster")
def test_evaluate_flow_scores_the_test_split_and_resumes(trained: Path, tmp_path: Path) -> None:
    i3d = save_torchscript(StyleganVStandIn(), tmp_path / "i3d_torchscript.pt")
    alexnet = alexnet_file(tmp_path / "alexnet-owt-7be5be79.pth")
    missing = tmp_path / "dw-ll_ucoco_384.onnx"
    overrides = [*FAST, "evaluation.max_clips=2", "evaluation.clip_frames=24",
                 "evaluation.fvd_frames=8", f"evaluation.weights.i3d={i3d}",
                 f"evaluation.weights.lpips_backbone={alexnet}",
                 f"evaluation.weights.dwpose={missing}"]
    flow = evaluate.with_options(task_runner=RayTaskRunner())
    state = flow(out=str(trained), config="configs/local-cpu.yaml",
                 overrides=[*SHORT, *overrides], return_state=True)
    assert state.is_completed(), state.message
    config = short_config(*overrides)
    checkpoint = LdmRun(str(trained), config.ldm.run_name).require_done(3)["checkpoint"]
    snapshot = current_snapshot_id(DatasetStore(str(trained), config.dataset.version))
    evaluation = EvaluationRun(str(trained), config, checkpoint, snapshot)
    summary = evaluation.summary()
    assert summary["snapshot"] == snapshot
    assert summary["clips"] == 2 and summary["frames"] == 48
    assert 0 < summary["psnr"] < 60 and -1 < summary["ssim"] < 1
    assert summary["lpips"] > 0 and summary["fvd"] > 0      # from the self-built weights
    assert 0 <= summary["beat_align"] <= 1 and summary["av_align"] >= 0
    assert set(summary["missing"]) == {"DWPose"} and str(missing) in summary["missing"]["DWPose"]
    # without DWPose, BlazePose (fetched by set-up) detects the keypoints of both videos
    assert summary["keypoints"].startswith("BlazePose full (MediaPipe 0.10.21 wheel")
    # BlazePose reads the rendered ground truth in (nearly) every frame
    assert summary["keypoints_detected_ground_truth"] > 0.9
    assert 0 <= summary["keypoints_detected_generated"] <= 1
    records = evaluation.clips()
    for record in records.values():
        video = Path(evaluation.url) / record["video"]
        assert probe_mp4(video) == {"frames": 24, "size": (128, 128), "fps": 30.0, "audio": True}
        assert evaluation.features(record["clip"])["generated"].shape == (3, 400)
    report = (Path(evaluation.url) / "report.md").read_text()
    assert "not computed: DWPose" in report and "OFFLINE STAND-INS" in report
    assert "BlazePose stands in for the paper's DWPose" in report
    assert "keypoints detected: " in report
    assert f"dataset snapshot {snapshot}" in report
    assert all(record["snapshot"] == snapshot for record in records.values())

    # a re-run finds every clip done: nothing is generated again
    again = flow(out=str(trained), config="configs/local-cpu.yaml",
                 overrides=[*SHORT, *overrides], return_state=True)
    assert again.is_completed(), again.message
    assert json.dumps(evaluation.clips(), sort_keys=True) == json.dumps(records, sort_keys=True)


def test_without_any_pose_detector_the_keypoints_are_m2pencs_and_say_so(tmp_path: Path) -> None:
    weights = EvaluationWeights(blazepose=str(tmp_path / "no-blazepose"))
    models = _metric_models(weights.model_dump_json())
    assert models.pose is None and models.keypoints_source == KEYPOINTS_M2PENC
    assert "no-blazepose" in models.missing["BlazePose"]
    assert "DWPose" in models.missing  # not configured: the reason is recorded too
