"""Train EDGE on AIST++-layout inputs, resumably: one Prefect task, run on a (GPU) Ray worker.

The loop, as EDGE's ``train_loop``: a batch of normalised windows from a DataLoader (each
step's windows drawn from the step's own generator), diffusion loss, optimiser step, EMA
update every step. Every ``checkpoint_every`` steps the model, EMA, optimizer, step and the
RNG state go to the store, so a killed run re-started with the same arguments continues from
the last checkpoint and ends with the same weights as an
uninterrupted run (on the same device).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dancegen.config import DancegenConfig, LoaderConfig
from dancegen.errors import ConfigError
from dancegen.models.edge import DanceDecoder, EdgeModelConfig
from dancegen.models.edge_diffusion import EdgeDiffusion, ema_update
from dancegen.models.edge_normalizer import MinMaxNormalizer
from dancegen.storage.aistpp import AistppInputs
from dancegen.storage.edge_checkpoint import EdgeCheckpoint, EdgeRun
from dancegen.tasks.edge_data import (
    EdgeWindows,
    build_windows,
    check_feature_backend,
    training_sequences,
    windows_key,
)
from dancegen.tasks.retries import retry_unless_deterministic
from dancegen.tasks.step_loader import step_loader


@dataclass
class EdgeTrainResult:
    """What the task returns: where the weights are and how training went (no tensors)."""

    checkpoint: str
    steps: int
    resumed_from: int
    windows: int
    first_loss: float
    last_loss: float
    seconds: float
    steps_per_second: float


def model_config_for(config: DancegenConfig, feature_dim: int) -> EdgeModelConfig:
    """DanceDecoder sizes from the config; the window length from the dataset settings."""
    sizes = config.edge.model
    return EdgeModelConfig(cond_feature_dim=feature_dim, seq_len=config.dataset.segment_frames,
                           latent_dim=sizes.latent_dim, ff_size=sizes.ff_size,
                           num_layers=sizes.num_layers, num_heads=sizes.num_heads,
                           dropout=sizes.dropout)


def load_windows(inputs_url: str, run: EdgeRun,
                 config: DancegenConfig) -> tuple[EdgeWindows, str]:
    """The training windows and their key; from the store's cache when nothing changed."""
    inputs = AistppInputs(inputs_url)
    sequences = training_sequences(inputs)
    key = windows_key(inputs, sequences, config)
    cached = run.read_windows(key)
    if cached is not None:
        return EdgeWindows.from_bytes(cached), key
    cache = None
    if config.edge.features == "jukebox":  # tracks shared by many sequences: extracted once
        from dancegen.tasks.jukebox_features import store_cache

        cache = store_cache(run.store.url, inputs, config)
    windows = build_windows(inputs, sequences, config, cache)
    run.write_windows(key, windows.to_bytes())
    return windows, key


def _check_resumable(run: EdgeRun, trained: EdgeModelConfig, configured: EdgeModelConfig,
                     data_key: str, config: DancegenConfig) -> None:
    """A run continues only with the model and data it started with (normaliser included)."""
    name = config.edge.run_name
    if trained != configured:
        raise ConfigError(f"EDGE run {name!r} was trained with {trained}, the config now says "
                          f"{configured}: set a new edge.run_name to train that model")
    recorded = (run.state() or {}).get("windows_key")
    if recorded is not None and recorded != data_key:
        raise ConfigError(f"EDGE run {name!r} was trained on other data (inputs or window "
                          "settings changed): set a new edge.run_name to train on these")


class WindowDataset(torch.utils.data.Dataset):
    """EDGE's training samples: normalised motion and music features of one window each."""

    def __init__(self, motion: torch.Tensor, cond: torch.Tensor) -> None:
        self.motion, self.cond = motion, cond

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.motion[index], self.cond[index]

    def __len__(self) -> int:
        return len(self.motion)


def window_loader(windows: WindowDataset, seed: int, batch_size: int, start_step: int,
                  steps: int) -> torch.utils.data.DataLoader:
    """The batches of steps ``start_step`` to ``steps``, each step's windows drawn from its
    own generator (a resumed run sees the same batches). Read in this process: the windows
    are in memory already, and worker processes would each get a copy of all of them."""
    def draw(step: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return torch.randint(len(windows), (batch_size,), generator=generator).tolist()

    return step_loader(windows, draw, start_step, steps, LoaderConfig(workers=0))


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_edge_now(inputs_url: str, store_url: str, config: DancegenConfig,
                   log=print) -> EdgeTrainResult:
    """Train (or continue training) ``config.edge.run_name`` up to ``edge.train.steps``."""
    check_feature_backend(AistppInputs(inputs_url), config)
    settings = config.edge.train
    started = time.perf_counter()
    run = EdgeRun(store_url, config.edge.run_name)
    data, data_key = load_windows(inputs_url, run, config)
    device = _device()
    torch.manual_seed(settings.seed)

    previous = run.latest()
    model_config = model_config_for(config, data.cond.shape[-1])
    if previous is not None:
        _check_resumable(run, previous.model_config, model_config, data_key, config)
    model = DanceDecoder(model_config)
    ema = copy.deepcopy(model)
    diffusion = EdgeDiffusion(model, config.edge.diffusion.timesteps,
                              config.edge.diffusion.cond_drop_prob,
                              config.edge.diffusion.guidance_weight).to(device)
    ema.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    step, losses = 0, []
    if previous is not None:
        normalizer = previous.normalizer
        model.load_state_dict(previous.model_state)
        ema.load_state_dict(previous.ema_state)
        optimizer.load_state_dict(previous.optimizer_state)
        rng = previous.dancegen["rng"]
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"])
        step, losses = previous.step, list(run.state().get("losses", []))
        log(f"resuming {config.edge.run_name} from step {step}")
    else:
        normalizer = MinMaxNormalizer.fit(data.motion)
    resumed_from = step
    normalizer.to(device)
    windows = WindowDataset(normalizer.normalize(data.motion.to(device)).cpu(), data.cond)
    model.train()
    tick, run_steps = time.perf_counter(), 0
    for motion, cond in window_loader(windows, settings.seed, settings.batch_size, step,
                                      settings.steps):
        total, parts = diffusion.loss(motion.to(device, non_blocking=True),
                                      cond.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        ema_update(ema, model, settings.ema_decay)
        step += 1
        run_steps += 1
        if step % settings.log_every == 0 or step == settings.steps:
            losses.append([step, total.item()] + [v.item() for v in parts.values()])
            log(f"step {step}/{settings.steps} loss {total.item():.4f}")
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            rng = {"torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}
            checkpoint = EdgeCheckpoint(
                model_config=model_config, ema_state=ema.state_dict(),
                model_state=model.state_dict(), normalizer=normalizer,
                optimizer_state=optimizer.state_dict(),
                dancegen={"step": step, "rng": rng, "smpl_scaling": data.smpl_scaling,
                          "features": config.edge.features, "fps": config.dataset.fps},
            )
            run.save(checkpoint, {"step": step, "steps": settings.steps, "losses": losses,
                                  "loss_columns": ["step", "total", *parts],
                                  "windows": len(windows), "windows_key": data_key},
                     publish=step == settings.steps)
    seconds = time.perf_counter() - started
    rate = run_steps / max(time.perf_counter() - tick, 1e-9)
    first = losses[0][1] if losses else float("nan")
    last = losses[-1][1] if losses else float("nan")
    return EdgeTrainResult(run.checkpoint_url, step, resumed_from, len(windows), first, last,
                           seconds, rate)


@task(name="train-edge-model", cache_policy=NO_CACHE, persist_result=False,
      retry_condition_fn=retry_unless_deterministic)
def train_edge_model(inputs_url: str, store_url: str, config: DancegenConfig) -> dict:
    """Prefect task (on a Ray worker with the configured resources): run the training loop."""
    logger = get_run_logger()
    return asdict(train_edge_now(inputs_url, store_url, config, log=logger.info))
