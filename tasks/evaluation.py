"""Evaluate one test clip: generate it from its first frame and its music, compare with the
ground truth, and write the clip's record (one unit of the evaluation flow).

The metrics, the paper's Table 1 (REFERENCE.md section 4.5 for the definitions):

* PSNR, SSIM, LPIPS: per frame, generated vs ground truth, averaged over the clip;
* FVD: over all clips at once (the flow), from the I3D features stored here per clip;
* 2D-BeatAlign (FACT's and Bailando's scores on 2D keypoints vs the music beats), of both
  videos, with keypoints *detected on the frames* by one detector for both: DWPose when its
  weights are configured (as the paper), else BlazePose (MediaPipe's pretrained models from the
  mediapipe wheel, which set-up fetches); only when neither loads (labelled in the record) the
  keypoints M2PEnc's heatmaps asked the generator to draw, and the ground truth's rendered
  keypoints;
* AV-Align (audio onsets vs optical-flow peaks), of both videos.

A metric whose weights are not configured (or fail to load) is left out with the reason,
and the others still run.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dancegen.config import DancegenConfig, EvaluationWeights
from dancegen.errors import InputError
from dancegen.storage.evaluation import EvaluationRun
from dancegen.storage.media import write_mp4
from dancegen.storage.metric_weights import load_i3d, load_lpips
from dancegen.storage.snapshot import DatasetSnapshot
from dancegen.storage.weights_cache import local_folder
from dancegen.tasks.av_align import av_align
from dancegen.tasks.beat_align_2d import DEFAULT_MIN_SCORE, BeatAlign2d, beat_align_2d
from dancegen.tasks.blazepose import BlazePose
from dancegen.tasks.dwpose import DwPose
from dancegen.tasks.frame_metrics import psnr, ssim
from dancegen.tasks.generation import generate, worker_pipeline
from dancegen.tasks.ldm_data import resize_images
from dancegen.tasks.perceptual_metrics import fvd_clips, i3d_features, lpips_per_frame

BEAT_ALIGN_VARIANTS = ("fact", "bailando")  # the report shows both
KEYPOINTS_M2PENC = ("M2PEnc's heatmap peaks (no pose detector loaded: the pose asked for, "
                    "not seen)")


@dataclass
class MetricModels:
    """The metrics' pretrained networks in this worker; ``missing``: metric -> why absent."""

    lpips: Any = None
    i3d: Any = None
    pose: DwPose | BlazePose | None = None   # the 2D-BeatAlign detector, run on both videos
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def keypoints_source(self) -> str:
        """What the 2D-BeatAlign keypoints are, for the record and the report."""
        if self.pose is None:
            return KEYPOINTS_M2PENC
        return f"{self.pose.label} on the generated and the ground-truth frames"


def _load(models: MetricModels, metric: str, url: str | None, setting: str, loader: Any) -> Any:
    if url is None:
        models.missing[metric] = f"no weights configured (evaluation.weights.{setting})"
        return None
    try:
        return loader(url)
    except InputError as error:
        models.missing[metric] = str(error)
        return None


@functools.lru_cache(maxsize=1)
def _metric_models(weights_json: str) -> MetricModels:
    weights = EvaluationWeights.model_validate_json(weights_json)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = MetricModels()
    models.lpips = _load(models, "LPIPS", weights.lpips_backbone, "lpips_backbone",
                         lambda url: load_lpips(url, weights.lpips_net).to(device))
    models.i3d = _load(models, "FVD", weights.i3d, "i3d",
                       lambda url: load_i3d(url, protocol=weights.i3d_protocol).to(device))
    models.pose = _load(models, "DWPose", weights.dwpose, "dwpose", DwPose.from_path)
    if models.pose is None:  # the offline detector; DWPose stays the paper's choice
        models.pose = _load_blazepose(models, weights.blazepose)
    return models


def _load_blazepose(models: MetricModels, folder: str | None) -> BlazePose | None:
    try:
        return BlazePose.from_folder(local_folder(folder, "BlazePose") if folder else None)
    except InputError as error:
        models.missing["BlazePose"] = str(error)
        return None


def worker_metric_models(weights: EvaluationWeights) -> MetricModels:
    """The metric networks of this process, loaded once."""
    return _metric_models(weights.model_dump_json())


@dataclass
class ClipData:
    """One test clip's ground truth, at the generator's resolution."""

    clip_id: str
    frames: np.ndarray        # (T, R, R, 3) uint8
    music: np.ndarray         # (T, D) the conditioning features the dataset holds
    audio: np.ndarray         # mono waveform of the clip
    sample_rate: int
    beats: np.ndarray         # music beat frames
    keypoints: np.ndarray     # (T, 18, 3) rendered keypoints, pixels of the R x R frame


def read_clip(snapshot: DatasetSnapshot, row: int, clip_id: str, config: DancegenConfig,
              resolution: int) -> ClipData:
    """The first ``evaluation.clip_frames`` frames (default: all) of segment ``row``, the
    frames resized as training resizes them (``ldm_data``), the keypoints with them."""
    frames = config.evaluation.clip_frames or config.dataset.segment_frames
    frames = min(frames, config.dataset.segment_frames)
    clip = slice(0, frames)
    video = snapshot.read("video/frames", row, clip)
    rate = config.music.audio_sample_rate
    keypoints = snapshot.read("pose/keypoints2d", row, clip).astype(np.float32)
    height, width = video.shape[1:3]
    scale = np.array([resolution / width, resolution / height], np.float32)
    keypoints[..., :2] = (keypoints[..., :2] + 0.5) * scale - 0.5  # pixel centres
    if (height, width) != (resolution, resolution):
        pixels = torch.from_numpy(video).permute(0, 3, 1, 2).float()
        video = resize_images(pixels, resolution).round().clamp(0, 255).to(torch.uint8)
        video = video.permute(0, 2, 3, 1).numpy()
    return ClipData(
        clip_id=clip_id, frames=video,
        music=snapshot.read(f"music/{config.music.backend}", row, clip).astype(np.float32),
        audio=snapshot.read("music/audio", row, slice(0, round(frames / config.dataset.fps
                                                               * rate))),
        sample_rate=rate, beats=np.flatnonzero(snapshot.read("music/beats", row, clip)),
        keypoints=keypoints)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values))


def _beat_align(keypoints: np.ndarray, beats: np.ndarray, fps: int, variant: str,
                min_score: float) -> BeatAlign2d | None:
    """The clip's 2D-BeatAlign, or None when no music beat falls inside the clip (the score
    averages over music beats: a short clip of a slow song can have none)."""
    scored = len(keypoints) - 1 if variant == "bailando" else len(keypoints)  # as motion_quality
    if not np.any(beats < scored):
        return None
    return beat_align_2d(keypoints, beats, fps, variant, min_score=min_score)


def clip_metrics(clip: ClipData, generated: np.ndarray, generated_keypoints: np.ndarray,
                 fps: int, models: MetricModels, variant: str) -> dict[str, Any]:
    """Every per-clip metric the models allow; per-frame curves and beat timelines too."""
    real = clip.frames
    frame_psnr, frame_ssim = psnr(generated, real), ssim(generated, real)
    record: dict[str, Any] = {"psnr": _mean(frame_psnr), "ssim": _mean(frame_ssim),
                              "per_frame": {"psnr": frame_psnr.tolist(),
                                            "ssim": frame_ssim.tolist()}}
    if models.lpips is not None:
        frame_lpips = lpips_per_frame(models.lpips, real, generated)
        record["lpips"] = _mean(frame_lpips)
        record["per_frame"]["lpips"] = frame_lpips.tolist()
    # a detector's scores are confidences (below 0.3: missing); the peaks of M2PEnc's heatmaps
    # are not, every frame's argmax is the position the generator was asked for
    min_score = DEFAULT_MIN_SCORE
    real_keypoints = clip.keypoints
    if models.pose is not None:  # like for like, as the paper: one detector on both videos
        generated_keypoints = models.pose.keypoints(generated)
        real_keypoints = models.pose.keypoints(real)
    else:
        min_score = 0.0
    # both variants (FACT's, which the paper cites, and Bailando's, which EDGE-era papers
    # report); ``variant`` is the one Table 1 shows
    variants = {name: {"generated": _beat_align(generated_keypoints, clip.beats, fps, name,
                                                min_score),
                       "ground_truth": _beat_align(real_keypoints, clip.beats, fps, name,
                                                   DEFAULT_MIN_SCORE)}
                for name in BEAT_ALIGN_VARIANTS}
    beats = variants[variant]
    sync = {"generated": av_align(clip.audio, clip.sample_rate, generated, fps),
            "ground_truth": av_align(clip.audio, clip.sample_rate, real, fps)}
    record["beat_align"] = {k: None if v is None else v.score for k, v in beats.items()}
    record["beat_align_variants"] = {
        name: {k: None if v is None else v.score for k, v in sides.items()}
        for name, sides in variants.items()}
    record["av_align"] = {k: v.score for k, v in sync.items()}
    record["keypoints"] = models.keypoints_source
    # how much of each video the detector could read: a blurred dancer yields few keypoints,
    # and the BeatAlign of few keypoints says little
    record["keypoints_detected"] = {
        "generated": float(np.mean(generated_keypoints[..., 2] >= min_score)),
        "ground_truth": float(np.mean(real_keypoints[..., 2] >= DEFAULT_MIN_SCORE))}
    record["timeline"] = {
        "music_beats": clip.beats.tolist(),
        "motion_beats": {k: [] if v is None else np.asarray(v.motion_beats).tolist()
                         for k, v in beats.items()},
        "audio_peaks": np.asarray(sync["generated"].audio_peaks).tolist(),
        "video_peaks": {k: np.asarray(v.video_peaks).tolist() for k, v in sync.items()},
    }
    return record


def sample_strip(real: np.ndarray, generated: np.ndarray, count: int) -> np.ndarray:
    """``count`` evenly spaced frames: ground truth on top, generated below."""
    picks = np.linspace(0, len(real) - 1, min(count, len(real))).round().astype(int)
    return np.concatenate([np.concatenate(list(real[picks]), axis=1),
                           np.concatenate(list(generated[picks]), axis=1)], axis=0)


def evaluate_clip(snapshot: DatasetSnapshot, config: DancegenConfig, row: int, clip_id: str
                  ) -> dict[str, Any]:
    """Generate and score segment ``row`` (id ``clip_id``) of ``snapshot``; writes its video,
    sample, features and record."""
    store = snapshot.dataset.store.url
    pipeline = worker_pipeline(store, config)
    models = worker_metric_models(config.evaluation.weights)
    evaluation = EvaluationRun(store, config, pipeline.checkpoint, snapshot.id)
    clip = read_clip(snapshot, row, clip_id, config, pipeline.resolution)
    fps, frames = config.dataset.fps, len(clip.frames)

    started = time.perf_counter()
    video = generate(pipeline, [(0, frames)], [clip.music], clip.frames[0])
    seconds = time.perf_counter() - started

    record = {"clip": clip.clip_id, "row": row, "snapshot": snapshot.id, "frames": frames,
              "fps": fps,
              "generation_seconds": seconds, "generated_seconds": frames / fps,
              "missing": dict(models.missing),
              "fvd_network": models.i3d.protocol if models.i3d is not None else None,
              **clip_metrics(clip, video.frames, video.keypoints, fps, models,
                             config.evaluation.beat_align)}
    if models.i3d is not None:
        length = config.evaluation.fvd_frames
        evaluation.write_features(
            clip.clip_id, real=i3d_features(models.i3d, fvd_clips(clip.frames, length)),
            generated=i3d_features(models.i3d, fvd_clips(video.frames, length)))
    write_mp4(evaluation.url_of(f"videos/{clip.clip_id}.mp4"), video.frames, fps, clip.audio,
              clip.sample_rate)
    record["video"] = f"videos/{clip.clip_id}.mp4"
    record["sample"] = evaluation.write_png(
        f"samples/{clip.clip_id}.png",
        sample_strip(clip.frames, video.frames, config.evaluation.sample_frames))
    evaluation.write_clip(clip.clip_id, record)
    return record
