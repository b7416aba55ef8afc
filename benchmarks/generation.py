"""Generation cost: seconds of compute per generated second of video, and where it goes.

    .venv/bin/python benchmarks/generation.py                       # the tiny CPU config
    .venv/bin/python benchmarks/generation.py --paper --device cuda  # paper sizes, one GPU

Samples one segment (``--frames``, default the config's 5 s) with the config's sampler: DDIM
steps, classifier-free guidance and overlapping denoiser windows (tasks/ldm_sampling.py), on
random weights (the cost does not depend on them). The baseline, measured in the same run, is
one denoiser pass per frame and step, the least any sampler of this model pays: one window
without guidance, scaled to the segment's frames. The ratio is the sampler's overhead (2 from
guidance, plus the windows' overlap).
"""

from __future__ import annotations

import argparse
import time

import torch
from ldm import build

from dancegen.config import load_config
from dancegen.tasks.ldm_sampling import SamplerSettings, sample_segment


def _timed(device: torch.device, run) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local-cpu.yaml")
    parser.add_argument("--paper", action="store_true", help="paper model sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=None, help="segment frames")
    parser.add_argument("--resolution", type=int, default=None)
    args = parser.parse_args()
    config = load_config("configs/paper.yaml" if args.paper else args.config)
    device = torch.device(args.device)
    resolution = args.resolution or config.training.stage3.resolution
    frames = args.frames or config.dataset.segment_frames
    settings = SamplerSettings.of(config.generation)
    torch.manual_seed(0)
    champ, _, clip_dim = build(config, args.paper)
    champ.to(device).eval().requires_grad_(False)
    latent = resolution // 8
    guidance = torch.randn(1, champ.denoising_unet.unet.config.block_out_channels[0], frames,
                           latent, latent, device=device)
    clip = torch.randn(1, 1, clip_dim, device=device)
    with torch.no_grad():
        reference = champ.reference_states(torch.randn(1, 4, latent, latent, device=device),
                                           clip)
        window = min(settings.window_frames, frames)
        x = torch.randn(1, 4, window, latent, latent, device=device)
        timestep = torch.tensor([500], device=device)

        def one_pass() -> None:
            with champ.banked(reference):
                champ.denoise(x, timestep, clip, guidance[:, :, :window])

        one_pass()  # warm-up
        per_frame = min(_timed(device, one_pass) for _ in range(3)) / window
        sampled = _timed(device, lambda: sample_segment(
            champ, guidance, reference, clip, config.ldm.schedule, settings,
            torch.Generator().manual_seed(0)))
    ideal = per_frame * frames * settings.steps
    seconds = frames / config.dataset.fps
    print(f"{'paper' if args.paper else config.name} sizes on {device}, {resolution}x"
          f"{resolution}, {frames} frames ({seconds:.1f} s), DDIM {settings.steps} steps, CFG "
          f"{settings.guidance_scale}, windows {settings.window_frames}/{settings.window_overlap}")
    print(f"sampler: {sampled:.1f} s = {sampled / seconds:.2f} s per generated second "
          f"(denoising only; VAE decoding and M2PEnc not included)")
    print(f"baseline, one pass per frame and step: {ideal:.1f} s; sampler / baseline = "
          f"{sampled / ideal:.2f}x")


if __name__ == "__main__":
    main()
