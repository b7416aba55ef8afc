"""EDGE throughput: training steps/s, and long-form sampling vs a window-at-a-time loop.

    .venv/bin/python benchmarks/edge.py [--config configs/local-cpu.yaml] [--seconds 60]

Sampling: a track of ``--seconds`` of (random) music features is sampled the way the synthesis
task does it, every half-overlapping 5-s window of the track denoised together as one batch
(EDGE's long-form mode), against a loop that denoises one window at a time (what a first
script would do; it cannot chain the windows either). Both use the same DDIM steps; the figure
is seconds of motion produced per second of compute, and the ratio dancegen/naive.

Model loading: ``worker_edge`` (loaded once per worker process, then cached) against loading
the checkpoint and building the model for every track.

Training: steps/s of EDGE's full loss (recon, velocity, FK, foot skate) with AdamW and EMA at
the config's model size and batch, on random data; for scale, one step of the paper's model
(512 wide, 8 layers, Jukebox 4800-d features) at batch 2.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

from dancegen.config import DancegenConfig, load_config
from dancegen.models.edge import DanceDecoder, EdgeModelConfig
from dancegen.models.edge_diffusion import EdgeDiffusion, ema_update
from dancegen.models.edge_normalizer import MinMaxNormalizer
from dancegen.storage.edge_checkpoint import EdgeCheckpoint, save_checkpoint
from dancegen.tasks.edge_synthesis import _edge, window_starts_covering, worker_edge
from dancegen.tasks.edge_train import model_config_for


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def sampling(diffusion: EdgeDiffusion, seconds: float, steps: int) -> dict[str, float]:
    """Seconds of motion per compute second: one batch vs one window at a time."""
    windows = len(window_starts_covering(seconds, 5.0))
    cond = torch.randn(windows, diffusion.model.config.seq_len,
                       diffusion.model.config.cond_feature_dim)
    batched = _timed(lambda: diffusion.sample_long(cond, steps=steps))
    naive = _timed(lambda: [diffusion.sample(cond[i:i + 1], steps=steps) for i in range(windows)])
    return {"windows": windows, "batched_rate": seconds / batched, "naive_rate": seconds / naive}


def loading(checkpoint_url: str, config: DancegenConfig, tracks: int) -> dict[str, float]:
    """Per-track cost of getting the model once a worker has it, vs loading it every track."""
    _edge.cache_clear()
    worker_edge(checkpoint_url, config)  # the worker's first track loads it

    def reload() -> None:
        _edge.cache_clear()
        worker_edge(checkpoint_url, config)

    cached = _timed(lambda: [worker_edge(checkpoint_url, config) for _ in range(tracks)])
    fresh = _timed(lambda: [reload() for _ in range(tracks)])
    return {"cached_s": cached / tracks, "fresh_s": fresh / tracks}


def training_rate(model_config: EdgeModelConfig, batch: int, steps: int) -> float:
    """Training steps/s with EDGE's loss, AdamW and an EMA copy."""
    model = DanceDecoder(model_config)
    ema = copy.deepcopy(model)
    diffusion = EdgeDiffusion(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, model_config.seq_len, 151) * 2 - 1
    cond = torch.randn(batch, model_config.seq_len, model_config.cond_feature_dim)

    def step() -> None:
        total, _ = diffusion.loss(x, cond)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        ema_update(ema, model, 0.999)

    step()  # warm-up
    return steps / _timed(lambda: [step() for _ in range(steps)])


def _checkpoint(url: str, model_config: EdgeModelConfig, config: DancegenConfig) -> str:
    """A randomly initialised checkpoint of the given size, written where synthesis reads it."""
    model = DanceDecoder(model_config)
    checkpoint = EdgeCheckpoint(model_config, model.state_dict(), model.state_dict(),
                                MinMaxNormalizer.fit(torch.randn(2, 150, 151)), {},
                                {"fps": config.dataset.fps, "smpl_scaling": 1.0})
    save_checkpoint(checkpoint, url)
    return url


def main() -> None:
    """Print each figure and its ratio against the baseline measured in the same run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local-cpu.yaml")
    parser.add_argument("--seconds", type=float, default=60.0, help="track length to sample")
    parser.add_argument("--train-steps", type=int, default=10)
    args = parser.parse_args()
    config = load_config(args.config)
    torch.manual_seed(0)
    model_config = model_config_for(config, 35)
    steps = config.edge.diffusion.sampling_steps
    print(f"EDGE benchmark ({config.name}: {model_config.latent_dim} wide, "
          f"{model_config.num_layers} layers; torch threads {torch.get_num_threads()}, "
          f"{'CUDA' if torch.cuda.is_available() else 'CPU'})")

    with tempfile.TemporaryDirectory() as tmp:
        url = _checkpoint(f"{tmp}/tiny.pt", model_config, config)
        load = loading(url, config, tracks=5)
        edge = worker_edge(url, config)
        sample = sampling(edge.diffusion, args.seconds, steps)
        paper_url = _checkpoint(f"{tmp}/paper.pt", EdgeModelConfig.paper(35), config)
        paper_load = loading(paper_url, config, tracks=2)
        _edge.cache_clear()

    print(f"sampling a {args.seconds:g}-s track ({sample['windows']} windows, {steps} DDIM "
          f"steps): batched {sample['batched_rate']:.1f} s of motion/s, one window at a time "
          f"{sample['naive_rate']:.1f} s/s")
    print(f"sampling ratio (batched/naive): {sample['batched_rate'] / sample['naive_rate']:.1f}x")
    print(f"model per track: cached {load['cached_s'] * 1e3:.2f} ms, loaded per track "
          f"{load['fresh_s'] * 1e3:.1f} ms")
    print(f"model-load ratio (per track / cached): {load['fresh_s'] / load['cached_s']:.0f}x")
    print(f"paper-size model per track: cached {paper_load['cached_s'] * 1e3:.2f} ms, loaded "
          f"per track {paper_load['fresh_s'] * 1e3:.0f} ms; ratio "
          f"{paper_load['fresh_s'] / paper_load['cached_s']:.0f}x")
    tiny = training_rate(model_config, config.edge.train.batch_size, args.train_steps)
    paper = training_rate(EdgeModelConfig.paper(4800), 2, 1)
    print(f"training: {tiny:.2f} steps/s at batch {config.edge.train.batch_size} "
          f"({config.name} model); paper-size EDGE at batch 2: {paper:.2f} steps/s "
          f"(ratio tiny/paper {tiny / paper:.0f}x)")


if __name__ == "__main__":
    main()
