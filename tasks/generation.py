"""Music + one reference image -> a dancing video, with the trained M2PEnc and LDM.

Per segment (:func:`dancegen.tasks.ldm_sampling.segment_spans`): the segment's music
features, computed on its own audio window as the dataset computes them, go through M2PEnc
to guidance images; the guidance encoders turn them into features; DDIM denoises the
segment (:func:`~dancegen.tasks.ldm_sampling.sample_segment`), conditioned on the end of the
previous segment; the VAE decodes it and the overlap is cross-faded.

The models are loaded once per process (:func:`worker_pipeline`) and reused for every video.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from diffusers import AutoencoderKL
from transformers import CLIPVisionModelWithProjection

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.models.champ import ChampModel
from dancegen.models.m2penc import GRID, M2PEnc
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.tasks.ldm_models import (
    base_weights,
    check_schedule,
    frozen_encoders,
    load_finished,
    m2penc_config,
    new_champ,
)
from dancegen.tasks.ldm_objectives import clip_embeds, m2penc_guidance_images
from dancegen.tasks.ldm_sampling import (
    SamplerSettings,
    crossfade,
    decode_frames,
    sample_segment,
    segment_spans,
)
from dancegen.tasks.music_features import baseline_features, edge_start_bpm, feature_sample_rate
from dancegen.tasks.segment_inputs import audio_window, resample_audio


@dataclass
class LdmPipeline:
    """Everything sampling needs, in eval mode on one device."""

    champ: ChampModel
    m2penc: M2PEnc
    vae: AutoencoderKL
    image_encoder: CLIPVisionModelWithProjection
    config: DancegenConfig
    device: torch.device
    checkpoint: str          # stage 3's checkpoint the weights came from

    @property
    def resolution(self) -> int:
        """The video stage's training resolution: the size frames are generated at."""
        return self.config.training.stage3.resolution

    @property
    def segment_frames(self) -> int:
        return self.config.generation.segment_frames or self.config.dataset.segment_frames


def load_pipeline(store: str, config: DancegenConfig, device: torch.device | None = None
                  ) -> LdmPipeline:
    """The finished LDM run ``config.ldm.run_name`` of ``store`` (stages 2 and 3 done)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = LdmRun(store, config.ldm.run_name)
    checkpoint = run.require_done(3)["checkpoint"]
    for stage in (2, 3):  # the sampler must read the denoiser as what it was trained to predict
        check_schedule(stage, run, config.ldm.schedule)
    champ, m2penc = new_champ(run, config), M2PEnc(m2penc_config(config))
    load_finished(2, run, champ, None)
    load_finished(3, run, champ, m2penc)
    weights = base_weights(run, config)
    vae, image_encoder = frozen_encoders(weights.vae, weights.image_encoder)
    champ.requires_grad_(False).eval()
    m2penc.requires_grad_(False).eval()
    return LdmPipeline(champ.to(device), m2penc.to(device), vae.to(device),
                       image_encoder.to(device), config, device, checkpoint)


@functools.lru_cache(maxsize=1)
def _cached_pipeline(store: str, config_json: str, checkpoint: str) -> LdmPipeline:
    return load_pipeline(store, DancegenConfig.model_validate_json(config_json))


def worker_pipeline(store: str, config: DancegenConfig) -> LdmPipeline:
    """This process's pipeline, loaded once (again only when stage 3 has a new checkpoint)."""
    latest = LdmRun(store, config.ldm.run_name).require_done(3)["checkpoint"]
    return _cached_pipeline(store, config.model_dump_json(), latest)


def prepare_reference(image: np.ndarray, resolution: int, where: str) -> np.ndarray:
    """An RGB(A)/grey image of any size -> centre-cropped square RGB uint8 at ``resolution``."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"{where}: expected an RGB image, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"{where}: expected 8-bit colour, got {image.dtype}")
    height, width = image.shape[:2]
    if min(height, width) < 32:
        raise InputError(f"{where}: {width}x{height} is too small for a reference photo")
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = np.ascontiguousarray(image[top:top + side, left:left + side, :3])
    shrink = side > resolution
    return cv2.resize(square, (resolution, resolution),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def music_features(audio: np.ndarray, rate: int, spans: list[tuple[int, int]],
                   config: DancegenConfig, music_id: str) -> list[np.ndarray]:
    """Per-segment conditioning features, computed as the dataset computes them."""
    fps, music = config.dataset.fps, config.music
    if music.backend == "jukebox":
        from dancegen.tasks.jukebox_features import track_features, worker_jukebox

        settings = config.jukebox
        jukebox = worker_jukebox(settings, settings.vqvae, settings.prior)
        track = track_features(jukebox, audio, rate, settings, fps)
        return [track[start:end] for start, end in spans]
    feature_rate = feature_sample_rate(fps, music.hop_length)
    resampled = resample_audio(audio, rate, feature_rate)
    return [baseline_features(audio_window(resampled, feature_rate, start / fps,
                                           (end - start) / fps),
                              fps, end - start, music.hop_length,
                              start_bpm=edge_start_bpm(music_id), tightness=music.tightness)
            for start, end in spans]


@dataclass
class GeneratedVideo:
    """A generated video and what it was generated from."""

    frames: np.ndarray        # (T, R, R, 3) uint8
    keypoints: np.ndarray     # (T, 18, 3): the peaks of M2PEnc's heatmaps, x y in pixels, peak
    fps: int


def heatmap_keypoints(heatmaps: torch.Tensor, resolution: int) -> np.ndarray:
    """(F, K, 64, 64) heatmaps -> (F, K, 3): argmax position in pixels of the frame, peak value."""
    f, k = heatmaps.shape[:2]
    flat = heatmaps.float().reshape(f, k, -1)
    peak, index = flat.max(dim=-1)
    scale = resolution / GRID  # pixel centres: cell i covers [i, i + 1) * scale
    x = ((index % GRID).float() + 0.5) * scale - 0.5
    y = ((index // GRID).float() + 0.5) * scale - 0.5
    return torch.stack([x, y, peak.clamp(0, 1)], dim=-1).cpu().numpy()


def generate_for_music(pipeline: LdmPipeline, audio: np.ndarray, rate: int,
                       reference: np.ndarray, music_id: str = "", frames: int | None = None,
                       seed: int | None = None,
                       on_step: Callable[[int, int], None] = lambda done, total: None
                       ) -> GeneratedVideo:
    """A video of the person in ``reference`` dancing to ``audio`` (mono, ``rate`` Hz).

    ``frames``: length (default: the whole music); ``music_id`` an AIST++ music name gives
    EDGE's tempo prior to the beat tracker. See :func:`generate`.
    """
    fps = pipeline.config.dataset.fps
    total = len(audio) * fps // rate
    if frames:
        total = min(frames, total)  # never past the music's end
    if total < 2:
        raise InputError(f"the music is too short: {len(audio) / rate:.2f} s")
    spans = segment_spans(total, pipeline.segment_frames, pipeline.config.generation.overlap_frames)
    features = music_features(audio, rate, spans, pipeline.config, music_id)
    return generate(pipeline, spans, features, reference, seed, on_step)


@torch.no_grad()
def reference_conditioning(champ: ChampModel, vae: AutoencoderKL,
                           image_encoder: CLIPVisionModelWithProjection, pixels: torch.Tensor
                           ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A (1, 3, R, R) reference image in [-1, 1] -> (its banked reference-U-Net states, its
    CLIP token): computed once per video, the same at every denoising step."""
    clip = clip_embeds(image_encoder, pixels)
    latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    return champ.reference_states(latents, clip), clip


@torch.no_grad()
def generate(pipeline: LdmPipeline, spans: list[tuple[int, int]], features: list[np.ndarray],
             reference: np.ndarray, seed: int | None = None,
             on_step: Callable[[int, int], None] = lambda done, total: None) -> GeneratedVideo:
    """Generate the segments ``spans`` (:func:`segment_spans`) from their music ``features``.

    ``reference``: (R, R, 3) uint8 at the pipeline's resolution (:func:`prepare_reference`);
    ``on_step(done, total)`` reports progress in denoising steps.
    """
    config, device = pipeline.config, pipeline.device
    settings = SamplerSettings.of(config.generation)
    generator = torch.Generator().manual_seed(config.generation.seed if seed is None else seed)
    if reference.shape != (pipeline.resolution, pipeline.resolution, 3):
        raise InputError(f"reference image is {reference.shape}, the model generates "
                         f"{pipeline.resolution}x{pipeline.resolution} RGB")

    pixels = torch.from_numpy(reference).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1
    reference_states, clip = reference_conditioning(pipeline.champ, pipeline.vae,
                                                    pipeline.image_encoder, pixels)

    steps_total, done = len(spans) * settings.steps, 0

    def step() -> None:
        nonlocal done
        done += 1
        on_step(done, steps_total)

    total = spans[-1][1]
    video = np.zeros((total, pipeline.resolution, pipeline.resolution, 3), np.uint8)
    keypoints = np.zeros((total, pipeline.m2penc.config.heatmap_channels, 3), np.float32)
    latents = guidance = None
    end_before = 0
    for (start, end), music in zip(spans, features, strict=True):
        music = torch.from_numpy(np.asarray(music, np.float32))[None].to(device)
        guidance_64, heatmaps = pipeline.m2penc(music)
        images = m2penc_guidance_images(guidance_64, pipeline.resolution, clamp=True)
        shared = end_before - start
        prefix = None
        if shared > 0:
            # the overlap shows the previous segment's frames: keep the pose they were made for
            previous_guidance = guidance[:, :, -shared:]
            prefix = latents[:, :, -shared:]
        guidance = pipeline.champ.encode_guidance(images)
        if prefix is not None:
            guidance[:, :, :shared] = previous_guidance
        latents = sample_segment(pipeline.champ, guidance, reference_states, clip,
                                 config.ldm.schedule, settings, generator, prefix, step)
        decoded = decode_frames(pipeline.vae, latents)
        if shared > 0:
            decoded[:shared] = crossfade(video[start:end_before], decoded[:shared])
        video[start:end] = decoded
        segment_keypoints = heatmap_keypoints(heatmaps[0], pipeline.resolution)
        keypoints[end_before:end] = segment_keypoints[shared:]
        end_before = end
    return GeneratedVideo(video, keypoints, config.dataset.fps)
