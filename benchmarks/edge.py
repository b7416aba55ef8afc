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
the config's model size and batch, on random data, against the bare forward + backward pass of
the same loss and batch in the same run (no optimiser step, no EMA update: the least a
training step costs), so the ratio is what AdamW and the EMA copy add; for scale, one step of
the paper's model (512 wide, 8 layers, Jukebox 4800-d features) at batch 2.

``--parts`` picks what to measure (default all three); ``--json PATH`` also writes the figures.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import write_json

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


def training_rate(model_config: EdgeModelConfig, batch: int, steps: int,
                  optimise: bool = True) -> float:
    """Training steps/s with EDGE's loss, AdamW and an EMA copy; with ``optimise`` false, the
    forward and backward pass alone (the baseline: no optimiser step, no EMA update)."""
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
        if optimise:
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


def measure_model_use(config: DancegenConfig, model_config: EdgeModelConfig,
                      seconds: float, parts: list[str]) -> dict[str, Any]:
    """The sampling and model-loading parts (both need a checkpoint on disk)."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = _checkpoint(f"{tmp}/tiny.pt", model_config, config)
        if "loading" in parts:
            figures["loading"] = loading(url, config, tracks=5)
        if "sampling" in parts:
            edge = worker_edge(url, config)
            figures["sampling"] = sampling(edge.diffusion, seconds,
                                           config.edge.diffusion.sampling_steps)
        if "loading" in parts:
            paper_url = _checkpoint(f"{tmp}/paper.pt", EdgeModelConfig.paper(35), config)
            figures["paper_loading"] = loading(paper_url, config, tracks=2)
        _edge.cache_clear()
    return figures


def report_model_use(figures: dict[str, Any], seconds: float, steps: int) -> None:
    """Print the sampling and loading figures that were measured."""
    if "sampling" in figures:
        sample = figures["sampling"]
        print(f"sampling a {seconds:g}-s track ({sample['windows']} windows, {steps} DDIM "
              f"steps): batched {sample['batched_rate']:.1f} s of motion/s, one window at a "
              f"time {sample['naive_rate']:.1f} s/s")
        print(f"sampling ratio (batched/naive): "
              f"{sample['batched_rate'] / sample['naive_rate']:.1f}x")
    if "loading" in figures:
        load, paper_load = figures["loading"], figures["paper_loading"]
        print(f"model per track: cached {load['cached_s'] * 1e3:.2f} ms, loaded per track "
              f"{load['fresh_s'] * 1e3:.1f} ms")
        print(f"model-load ratio (per track / cached): {load['fresh_s'] / load['cached_s']:.0f}x")
        print(f"paper-size model per track: cached {paper_load['cached_s'] * 1e3:.2f} ms, "
              f"loaded per track {paper_load['fresh_s'] * 1e3:.0f} ms; ratio "
              f"{paper_load['fresh_s'] / paper_load['cached_s']:.0f}x")


def measure_training(config: DancegenConfig, model_config: EdgeModelConfig,
                     steps: int) -> dict[str, Any]:
    """Steps/s of the full step and of its forward + backward baseline; paper size for scale."""
    batch = config.edge.train.batch_size
    return {"batch": batch, "steps": steps,
            "steps_per_s": training_rate(model_config, batch, steps),
            "bare_steps_per_s": training_rate(model_config, batch, steps, optimise=False),
            "paper_steps_per_s": training_rate(EdgeModelConfig.paper(4800), 2, 1)}


def main() -> None:
    """Print each figure and its ratio against the baseline measured in the same run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local-cpu.yaml")
    parser.add_argument("--seconds", type=float, default=60.0, help="track length to sample")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--parts", nargs="+", choices=["sampling", "loading", "training"],
                        default=["sampling", "loading", "training"], help="what to measure")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    config = load_config(args.config)
    torch.manual_seed(0)
    model_config = model_config_for(config, 35)
    print(f"EDGE benchmark ({config.name}: {model_config.latent_dim} wide, "
          f"{model_config.num_layers} layers; torch threads {torch.get_num_threads()}, "
          f"{'CUDA' if torch.cuda.is_available() else 'CPU'})")
    figures = measure_model_use(config, model_config, args.seconds, args.parts)
    report_model_use(figures, args.seconds, config.edge.diffusion.sampling_steps)
    if "training" in args.parts:
        train = figures["training"] = measure_training(config, model_config, args.train_steps)
        print(f"training: {train['steps_per_s']:.2f} steps/s at batch {train['batch']} "
              f"({config.name} model, AdamW + EMA); forward + backward alone "
              f"{train['bare_steps_per_s']:.2f} steps/s; ratio full/bare "
              f"{train['steps_per_s'] / train['bare_steps_per_s']:.2f}x")
        print(f"paper-size EDGE at batch 2: {train['paper_steps_per_s']:.2f} steps/s (ratio "
              f"tiny/paper {train['steps_per_s'] / train['paper_steps_per_s']:.0f}x)")
    write_json(args.json, {"config": config.name, "seconds": args.seconds,
                           "sampling_steps": config.edge.diffusion.sampling_steps, **figures})


if __name__ == "__main__":
    main()
