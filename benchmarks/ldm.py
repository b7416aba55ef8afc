"""Training throughput of the LDM's three stages: steps/s and frames/s per stage.

    .venv/bin/python benchmarks/ldm.py                       # the tiny CPU config
    .venv/bin/python benchmarks/ldm.py --paper --device cuda  # paper sizes, one GPU

One optimisation step (forward, backward, AdamW) of each stage's objective on random inputs of
the stage's shapes, so the figure is the model's cost alone (reading clips from the store is
the same for every model size). The baseline is the image stage: every figure is also given as
its cost per frame relative to one stage-2 frame, measured in the same run.

``--paper``: SD 1.5's U-Net config (860M parameters, random weights: none are downloaded),
CHAMP's guidance encoders and motion modules, the paper's M2PEnc on 4800-d Jukebox features, at
``--resolution`` (640 by default, latents 80x80) with batch 1 and ``--frames`` frames for the
video stage (24, the paper's), in ``--precision`` (bf16 autocast by default) on ``--device``;
reports peak GPU memory too. That is the issue's GPU check; CPU is far too slow for it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import write_json
from diffusers import UNet2DConditionModel

from dancegen.config import load_config
from dancegen.models.champ import ChampModel
from dancegen.models.m2penc import M2PEnc
from dancegen.storage.ldm_weights import assemble_champ
from dancegen.tasks.ldm_models import m2penc_config, motion_config
from dancegen.tasks.ldm_objectives import DenoisingObjective, M2PEncObjective
from dancegen.tasks.ldm_train import freeze_for_stage

SD15_UNET = dict(  # stable-diffusion-v1-5/unet/config.json (architecture only)
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=32)


def build(config, paper: bool) -> tuple[ChampModel, M2PEnc, int]:
    """The LDM and M2PEnc at the config's (or the paper's) sizes; and the CLIP width."""
    ldm = config.ldm
    unet_kwargs = SD15_UNET if paper else dict(ldm.stand_in.unet)
    champ = assemble_champ(UNet2DConditionModel(**unet_kwargs),
                           UNet2DConditionModel(**unet_kwargs), motion_config(config),
                           ldm.guidance_channels, ldm.guidance_heads)
    champ.denoising_unet.gradient_checkpointing = config.training.gradient_checkpointing
    return champ, M2PEnc(m2penc_config(config)), unet_kwargs["cross_attention_dim"]


def stage_batch(stage: int, frames: int, resolution: int, music_dim: int, clip_dim: int,
                device: torch.device) -> dict[str, torch.Tensor]:
    latent = resolution // 8
    batch = {"music": torch.randn(1, frames, music_dim),
             "guidance_64": torch.rand(1, frames, 12, 64, 64),
             "heatmaps": torch.rand(1, frames, 18, 64, 64)}
    if stage > 1:
        batch |= {"noisy_latents": torch.randn(1, 4, frames, latent, latent),
                  "target": torch.randn(1, 4, frames, latent, latent),
                  "timesteps": torch.tensor([500]),
                  "reference_latents": torch.randn(1, 4, latent, latent),
                  "clip": torch.randn(1, 1, clip_dim),
                  "guidance": torch.rand(1, 4, 3, frames, resolution, resolution)}
    return {k: v.to(device) for k, v in batch.items()}


def time_step(objective: torch.nn.Module, batch: dict, device: torch.device, precision: str,
              repeat: int) -> float:
    """Seconds per optimisation step (best of ``repeat`` after one warm-up)."""
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    best = float("inf")
    for i in range(repeat + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = objective(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    """Time each stage's step; print steps/s, frames/s and the cost per frame vs stage 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local-cpu.yaml")
    parser.add_argument("--paper", action="store_true", help="paper model sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None, help="stage-3 frames")
    parser.add_argument("--precision", default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    config = load_config(args.config if not args.paper else "configs/paper.yaml")
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "no")
    resolution = args.resolution or config.training.stage2.resolution
    frames = {1: config.training.stage1.frames, 2: 1,
              3: args.frames or config.training.stage3.frames}
    torch.manual_seed(0)
    champ, m2penc, clip_dim = build(config, args.paper)
    objectives = {1: M2PEncObjective(m2penc, 1.0), 2: DenoisingObjective(champ),
                  3: DenoisingObjective(champ, m2penc, 0.5, 0.5, resolution=resolution)}
    print(f"{'paper' if args.paper else config.name} sizes on {device} ({precision}), "
          f"{resolution}x{resolution}, batch 1")
    rows = {}
    for stage, objective in objectives.items():
        objective.to(device).train()
        if stage > 1:
            freeze_for_stage(stage, champ)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        batch = stage_batch(stage, frames[stage], resolution, m2penc.config.music_dim, clip_dim,
                            device)
        seconds = time_step(objective, batch, device, precision, args.repeat)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        rows[stage] = (seconds, frames[stage], peak)
    per_frame_baseline = rows[2][0] / rows[2][1]
    figures = []
    for stage, (seconds, count, peak) in rows.items():
        memory = f", peak {peak:.1f} GiB" if peak is not None else ""
        per_frame = seconds / count / per_frame_baseline
        print(f"stage {stage}: {1 / seconds:.3f} steps/s, {count / seconds:.2f} frames/s "
              f"({count} frames); per frame {per_frame:.2f}x the image stage's{memory}")
        figures.append({"stage": stage, "steps_per_s": 1 / seconds, "frames": count,
                        "frames_per_s": count / seconds, "per_frame_vs_stage2": per_frame,
                        "peak_gib": peak})
    write_json(args.json, {"config": "paper" if args.paper else config.name,
                           "device": str(device), "precision": precision,
                           "resolution": resolution, "batch": 1, "stages": figures})


if __name__ == "__main__":
    main()
