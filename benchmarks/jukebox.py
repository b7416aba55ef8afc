"""Jukebox extraction cost on this device, and batched chunks vs one chunk per pass.

    .venv/bin/python benchmarks/jukebox.py [--seconds 20] [--width 1024] [--layers 6]

A probe with the 5B's structure (VQ-VAE level 2 at full size; top prior with the 5B's heads,
context and attention pattern at ``--width`` and ``--layers``, random weights) extracts
``--seconds`` of music the way a worker does (5-s chunks on a fixed grid). Printed: seconds of
compute per second of music for the probe, the FLOP rate it reaches, and from that the 5B
model's cost here (analytic FLOPs / measured rate), which is what ``planning.
jukebox_seconds_per_music_second`` wants when run on the GPU type of the cluster. Baseline in
the same run: the same extraction one chunk per forward pass instead of ``batch_chunks``.
"""

from __future__ import annotations

import argparse

import torch

from dancegen.config import load_config
from dancegen.models.jukebox_prior import JukeboxPriorConfig
from dancegen.models.jukebox_vqvae import JukeboxVQVAEConfig
from dancegen.tasks.jukebox_cost import flops_per_music_second, measure


def main() -> None:
    """Print the figures and the batched/unbatched ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/paper.yaml")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=6)
    args = parser.parse_args()
    settings = load_config(args.config).jukebox
    batched = measure(settings, args.seconds, args.width, args.layers)
    single = measure(settings.model_copy(update={"batch_chunks": 1}), args.seconds, args.width,
                     args.layers)
    print(f"Jukebox extraction on {batched.device} (torch threads {torch.get_num_threads()}): "
          f"probe {args.width} wide x {args.layers} layers, {args.seconds:g} s of music")
    print(f"  batched ({settings.batch_chunks} chunks/pass): "
          f"{batched.seconds_per_music_second:.3f} s per s of music, "
          f"{batched.flops_per_second / 1e9:,.0f} GFLOP/s")
    print(f"  one chunk per pass: {single.seconds_per_music_second:.3f} s per s of music")
    print(f"  batched ratio (one chunk / batched): "
          f"{single.seconds_per_music_second / batched.seconds_per_music_second:.2f}x")
    flops = flops_per_music_second(JukeboxPriorConfig(), JukeboxVQVAEConfig(), settings)
    print(f"  5B estimate on this device: {batched.estimate_5b:.2f} s of compute per s of music "
          f"({flops / 1e12:.2f} TFLOP per s of music)")


if __name__ == "__main__":
    main()
