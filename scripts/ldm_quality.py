"""Where does a trained LDM run lose the picture? Measures each part on the test split.

    .venv/bin/python scripts/ldm_quality.py STORE [--config local-cpu] [--set key=value ...]

1. the VAE alone: PSNR/SSIM of decode(encode(frame)) against the frame, and its dancer's
   silhouette against the body (the ceiling of everything below);
2. the image stage (stage 2) alone: single frames sampled with the *rendered* guidance of
   those frames and the clip's first frame as reference (what stage 2 learnt to do), then
   with that guidance moved ``DISPLACEMENT`` pixels to the right: a model that follows the
   guidance draws the dancer there (high IoU with the moved body, low with the unmoved one),
   one that copies the reference leaves it in place;
3. the video model (stages 2 + 3): the clip sampled with the rendered guidance, then with
   M2PEnc's guidance from the music (what the evaluation scores: the pose is then M2PEnc's),
   and how M2PEnc's guidance maps compare with the rendered ones.

Each line prints mean PSNR (dB) and SSIM over the test clips' frames and, where the rendered
body is known, the IoU of the generated dancer's silhouette (pixels unlike the background) with
the rendered body, next to a baseline: the reference frame's body against each frame's (what a
generator that ignored the guidance and kept the reference pose would reach). ``--png`` writes
a strip (ground truth, VAE, image stage, video with rendered and with M2PEnc guidance).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dancegen.config import load_config
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.storage.snapshot import DatasetSnapshot
from dancegen.tasks.frame_metrics import psnr, ssim
from dancegen.tasks.generation import generate, load_pipeline, reference_conditioning
from dancegen.tasks.ldm_data import ClipDataset, ClipRequest, SampleSpec
from dancegen.tasks.ldm_models import base_weights, frozen_encoders, load_finished, new_champ
from dancegen.tasks.ldm_objectives import m2penc_guidance_images, shift_images
from dancegen.tasks.ldm_sampling import SamplerSettings, decode_frames, sample_segment


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(3, F, R, R) in [-1, 1] -> (F, R, R, 3) uint8."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).numpy()


DISPLACEMENT = 24  # pixels (of 128): well clear of the body's own width (~15 px)
SILHOUETTE_TOLERANCE = 24  # 8-bit units from the background colour: the dancer's pixels


def silhouette(frames: np.ndarray) -> np.ndarray:
    """(F, R, R, 3) uint8 -> (F, R, R) bool: pixels unlike the frame's border colour."""
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]],
                            axis=1)
    background = np.median(border, axis=1)[:, None, None]
    return np.abs(frames.astype(np.int16) - background).max(axis=-1) > SILHOUETTE_TOLERANCE


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame intersection over union of two (F, R, R) masks."""
    return float(np.mean((a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)))


def score(name: str, generated: np.ndarray, real: np.ndarray, seconds: float,
          body: np.ndarray | None = None, clips: int = 2) -> None:
    """PSNR and SSIM against the real frames; with the rendered ``body`` masks also whether
    the generated dancer takes the guided pose: the IoU of its silhouette with the body, and
    with the body of the ``clips`` reference frames (each clip's first frame)."""
    line = (f"{name:<38} PSNR {psnr(generated, real).mean():6.2f} dB  "
            f"SSIM {ssim(generated, real).mean():.3f}")
    if body is not None:  # (the first frame of each clip is the reference: its own pose)
        drawn, frames = silhouette(generated), len(body) // clips
        reference_pose = np.concatenate([np.repeat(body[i * frames:i * frames + 1], frames, 0)
                                         for i in range(clips)])
        line += (f"  silhouette IoU {iou(drawn, body):.2f} with the guided body, "
                 f"{iou(drawn, reference_pose):.2f} with the reference's")
    print(f"{line}  ({seconds:.1f} s)")


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--config", default="configs/local-cpu.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--frames", type=int, default=4, help="image-stage frames per clip")
    parser.add_argument("--png", help="write a strip of frames here")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    resolution = config.training.stage3.resolution
    snapshot = DatasetSnapshot.open(args.store, config.dataset.version)
    clip_frames = config.evaluation.clip_frames or config.dataset.segment_frames
    rows = [row for row, _ in snapshot.segments("test")][: config.evaluation.max_clips]
    samples = ClipDataset(snapshot, f"music/{config.music.backend}", SampleSpec(resolution))
    clips = [samples[ClipRequest(row, 0, clip_frames, 0)] for row in rows]
    run = LdmRun(args.store, config.ldm.run_name)
    weights = base_weights(run, config)
    vae, image_encoder = frozen_encoders(weights.vae, weights.image_encoder)
    generator = torch.Generator().manual_seed(0)
    strips = []
    picks = np.linspace(0, clip_frames - 1, args.frames).round().astype(int)

    started, real, decoded = time.perf_counter(), [], []
    for clip in clips:
        latents = vae.encode(clip["frames"].transpose(0, 1)).latent_dist.mode()
        decoded.append(decode_frames(vae, latents.transpose(0, 1)[None]
                                     * vae.config.scaling_factor))
        real.append(to_uint8(clip["frames"]))
    # the body as rendered (semantic map > 0): what a generator that follows the guidance draws
    bodies = [clip["guidance"][2].sum(0).numpy() > 0 for clip in clips]
    score("VAE reconstruction", np.concatenate(decoded), np.concatenate(real),
          time.perf_counter() - started, np.concatenate(bodies))
    strips.append([r[picks] for r in real])
    strips.append([d[picks] for d in decoded])

    # stage 2 alone: the image stage's weights, temporal layers as they were before stage 3
    image_stage = new_champ(run, config)
    load_finished(2, run, image_stage, None)
    image_stage.requires_grad_(False).eval()
    settings = SamplerSettings.of(config.generation)
    picked_real = np.concatenate([r[picks] for r in real])
    picked_bodies = np.concatenate([b[picks] for b in bodies])
    for moved in (0, DISPLACEMENT):
        started, images = time.perf_counter(), []
        for clip in clips:
            states, clip_token = reference_conditioning(image_stage, vae, image_encoder,
                                                        clip["frames"][:, 0][None])
            frames = []
            for f in picks:  # one frame at a time: stage 2 never saw frames beside each other
                rendered = shift_images(clip["guidance"][None, :, :, f:f + 1], moved, 0,
                                        "constant")
                latents = sample_segment(image_stage, image_stage.encode_guidance(rendered),
                                         states, clip_token, config.ldm.schedule, settings,
                                         generator)
                frames.append(decode_frames(vae, latents)[0])
            images.append(np.stack(frames))
        seconds = time.perf_counter() - started
        if moved:
            drawn = silhouette(np.concatenate(images))
            moved_bodies = np.roll(picked_bodies, moved, axis=2)  # the body is far from the edge
            print(f"{f'image stage, guidance moved {moved} px':<38} silhouette IoU "
                  f"{iou(drawn, moved_bodies):.2f} with the moved body, "
                  f"{iou(drawn, picked_bodies):.2f} with the unmoved one  ({seconds:.1f} s)")
        else:
            score("image stage, rendered guidance", np.concatenate(images), picked_real,
                  seconds, picked_bodies)
        strips.append(images)
    if run.done(3):
        strips += video_parts(args.store, config, clips, rows, real, picks, generator,
                              np.concatenate(bodies))
    write_strip(args.png, strips)


def video_parts(store: str, config, clips: list[dict], rows: list[int], real: list,
                picks: np.ndarray, generator: torch.Generator, bodies: np.ndarray
                ) -> list[list[np.ndarray]]:
    """Parts 3: the video model with rendered guidance, then with M2PEnc's."""
    pipeline = load_pipeline(store, config, torch.device("cpu"))
    settings, strips = SamplerSettings.of(config.generation), []
    snapshot = DatasetSnapshot.open(store, config.dataset.version)
    clip_frames = len(real[0])
    started, videos = time.perf_counter(), []
    for clip in clips:
        states, clip_token = reference_conditioning(pipeline.champ, pipeline.vae,
                                                    pipeline.image_encoder,
                                                    clip["frames"][:, 0][None])
        guidance = pipeline.champ.encode_guidance(clip["guidance"][None])
        latents = sample_segment(pipeline.champ, guidance, states, clip_token,
                                 config.ldm.schedule, settings, generator)
        videos.append(decode_frames(pipeline.vae, latents))
    score("video model, rendered guidance", np.concatenate(videos), np.concatenate(real),
          time.perf_counter() - started, bodies)
    strips.append([v[picks] for v in videos])

    started, videos, asked = time.perf_counter(), [], []
    for clip, row in zip(clips, rows, strict=True):
        music = snapshot.read(f"music/{config.music.backend}", row,
                              slice(0, clip_frames)).astype(np.float32)
        first = to_uint8(clip["frames"][:, :1])[0]
        videos.append(generate(pipeline, [(0, clip_frames)], [music], first).frames)
        guidance_64, _ = pipeline.m2penc(torch.from_numpy(music)[None])
        asked.append(m2penc_guidance_images(guidance_64, clip["guidance"].shape[-1],
                                            clamp=True)[0])
    rendered = torch.stack([clip["guidance"] for clip in clips])
    print(f"{'M2PEnc guidance vs the rendered maps':<38} "
          + guidance_comparison(torch.stack(asked), rendered))
    score("video model, M2PEnc guidance (= eval)", np.concatenate(videos),
          np.concatenate(real), time.perf_counter() - started, bodies)
    strips.append([v[picks] for v in videos])
    return strips


def guidance_comparison(asked: torch.Tensor, rendered: torch.Tensor) -> str:
    """How much of the rendered maps' picture M2PEnc draws, on (B, G, 3, F, R, R) guidance
    images: the mean absolute error, and its spatial contrast (the std over pixels: is there
    a body?) and its frame-to-frame change (does it move?) as fractions of the rendered ones'."""
    def change(maps: torch.Tensor) -> float:
        return float((maps[:, :, :, 1:] - maps[:, :, :, :-1]).abs().mean())

    contrast = float(asked.std(dim=(-2, -1)).mean() / rendered.std(dim=(-2, -1)).mean())
    return (f"L1 {float((asked - rendered).abs().mean()):.3f}, contrast {contrast:.0%}, "
            f"frame-to-frame change {change(asked) / change(rendered):.0%} of the rendered")


def write_strip(path: str | None, strips: list[list[np.ndarray]]) -> None:
    if path:
        import imageio.v3 as iio

        rows_of_strip = [np.concatenate([np.concatenate(list(part), axis=1) for part in kind],
                                        axis=1) for kind in strips]
        iio.imwrite(path, np.concatenate(rows_of_strip, axis=0))
        print(f"wrote {path}: rows = ground truth, VAE, image stage (rendered guidance, "
              f"then moved {DISPLACEMENT} px), video (rendered guidance), video (M2PEnc's)")


if __name__ == "__main__":
    main()
