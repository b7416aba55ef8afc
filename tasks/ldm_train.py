"""One training stage of M2PEnc + the LDM: the loop every Ray Train worker runs.

Readable in one sitting, as nanoGPT's: build what the stage trains, resume from the store's
latest checkpoint, then for each step draw a batch (seeded by the step, so a resumed run sees
the same batches), forward the stage's objective, backward, AdamW step. Rank 0 writes a
checkpoint every ``training.checkpoint_every`` steps and at the end; ``latest.json`` is
written last, so a worker killed mid-write leaves the previous checkpoint in charge.

Resume is bit-exact on CPU (tested). On CUDA the restored state is the same (weights,
optimizer, LR schedule, fp16 loss scale, step, batches), but cuDNN and attention kernels are
not deterministic, so weights agree only to within that noise. The logged loss is rank 0's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from diffusers import DDPMScheduler
from torch import nn

from dancegen.config import DancegenConfig
from dancegen.errors import ConfigError
from dancegen.models.champ import ChampModel
from dancegen.models.m2penc import M2PEnc
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.tasks.ldm_data import ClipSource, SampleSpec
from dancegen.tasks.ldm_models import (
    base_weights,
    check_schedule,
    frozen_encoders,
    load_finished,
    load_stage_checkpoint,
    m2penc_config,
    new_champ,
    stage_modules,
    trained_schedule,
)
from dancegen.tasks.ldm_objectives import (
    DenoisingObjective,
    M2PEncObjective,
    add_noise,
    clip_embeds,
    denoising_target,
    displace_targets,
    encode_latents,
    min_snr_weights,
)

LOSS_COLUMNS = ("step", "loss")


def build_stage(stage: int, run: LdmRun, config: DancegenConfig
                ) -> tuple[nn.Module, ChampModel | None, M2PEnc | None]:
    """(objective, champ, m2penc) for a stage, with only the stage's parameters trainable."""
    ldm = config.ldm
    if stage == 1:
        m2penc = M2PEnc(m2penc_config(config))
        return M2PEncObjective(m2penc, ldm.heatmap_loss_weight), None, m2penc
    champ = new_champ(run, config)
    champ.denoising_unet.gradient_checkpointing = config.training.gradient_checkpointing
    if stage == 2:
        freeze_for_stage(2, champ)
        return DenoisingObjective(champ), champ, None
    check_schedule(2, run, ldm.schedule)  # stage 3 goes on from stage 2's denoiser
    load_finished(2, run, champ, None)
    m2penc = M2PEnc(m2penc_config(config))
    load_finished(1, run, None, m2penc)
    freeze_for_stage(3, champ)
    objective = DenoisingObjective(champ, m2penc, ldm.stage3_pixel_weight,
                                   ldm.stage3_guidance_weight, ldm.heatmap_loss_weight,
                                   resolution=config.training.stage3.resolution)
    return objective, champ, m2penc


def freeze_for_stage(stage: int, champ: ChampModel) -> None:
    """Stage 2 trains everything but the temporal layers (unused on single frames); stage 3
    only the temporal layers. (The reference U-Net's last up block stays frozen always.)"""
    motion = champ.denoising_unet.motion_parameters()
    if stage == 3:
        champ.requires_grad_(False)
    for param in motion:
        param.requires_grad_(stage == 3)


DATA, NOISE = 0, 1  # the two random streams of a step: which clips, and noise/dropout


def step_generator(seed: int, stage: int, step: int, rank: int,
                   stream: int = DATA) -> torch.Generator:
    """The RNG of one stream of one step on one rank: batches and noise depend on nothing
    else (the data stream is drawn by the loader's sampler, the noise one in the loop)."""
    index = (((seed * 1009 + stage) * 1_000_003 + step) * 64 + rank) * 2 + stream
    return torch.Generator().manual_seed(index)


def stage_samples(stage: int, config: DancegenConfig) -> SampleSpec:
    """What a stage's samples hold: stage 1 M2PEnc's inputs and targets; stage 2 frames and
    rendered guidance; stage 3 frames and M2PEnc's inputs (it guides with M2PEnc's maps, the
    rendered ones are only their 64x64 targets)."""
    if stage == 1:
        return SampleSpec()
    return SampleSpec(config.training.stage(stage).resolution, m2penc=stage == 3,
                      rendered_guidance=stage == 2)


def stage_loader(stage: int, source: ClipSource, config: DancegenConfig, start_step: int,
                 rank: int, per_rank_batch: int) -> torch.utils.data.DataLoader:
    """The stage's batches from ``start_step`` on, each drawn from its step's data stream."""
    settings, seed = config.training.stage(stage), config.training.seed
    return source.loader(
        stage_samples(stage, config),
        lambda step: source.requests(step_generator(seed, stage, step, rank), per_rank_batch,
                                     settings.frames),
        start_step, settings.steps)


def make_batch(stage: int, data: dict[str, torch.Tensor], generator: torch.Generator,
               config: DancegenConfig, frozen: tuple | None, scheduler: DDPMScheduler | None,
               device: torch.device) -> dict[str, torch.Tensor]:
    """A stage's batch on ``device``; for stages 2 and 3, encoded into noisy latents."""
    data = {k: v.to(device) for k, v in data.items()}
    if stage == 1:
        return data
    vae, image_encoder = frozen
    if stage == 2 and config.ldm.target_shift:
        data["frames"], data["guidance"] = displace_targets(
            data["frames"], data["guidance"], config.ldm.target_shift, generator)
    latents = encode_latents(vae, data.pop("frames"), generator)
    reference = data.pop("reference")
    noisy, noise, timesteps = add_noise(scheduler, latents, generator, config.ldm.noise_offset)
    batch = {**data, "noisy_latents": noisy, "timesteps": timesteps,
             "target": denoising_target(scheduler, latents, noise, timesteps)}
    if config.ldm.snr_gamma is not None:
        batch["loss_weights"] = min_snr_weights(scheduler, timesteps, config.ldm.snr_gamma)
    # classifier-free guidance dropout, one draw per batch (CHAMP): no reference, zero CLIP
    if float(torch.rand(1, generator=generator)) < config.ldm.uncond_ratio:
        batch["clip"] = torch.zeros(len(reference), 1, image_encoder.config.projection_dim,
                                    device=device)
    else:
        batch["clip"] = clip_embeds(image_encoder, reference)
        batch["reference_latents"] = encode_latents(vae, reference, generator)
    return batch


def _autocast(device: torch.device, precision: str):
    if device.type != "cuda" or precision == "no":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def train_stage(stage: int, store: str, config: DancegenConfig, *, rank: int = 0,
                world_size: int = 1, device: torch.device | None = None,
                prepare: Callable[[nn.Module], nn.Module] = lambda m: m,
                report: Callable[[dict[str, Any]], None] = lambda metrics: None,
                ) -> dict[str, Any]:
    """Train ``stage`` (1, 2 or 3) up to ``training.stage<N>.steps``, resuming if possible.

    ``prepare`` wraps the objective for DDP (Ray Train's ``prepare_model``); ``report`` gets
    each logged step's metrics. Returns the stage's ``latest.json`` plus timing.
    """
    device = device or torch.device("cpu")
    settings, training = config.training.stage(stage), config.training
    run = LdmRun(store, config.ldm.run_name)
    torch.manual_seed(training.seed * 1009 + stage)  # fresh weights: the same on every rank
    objective, champ, m2penc = build_stage(stage, run, config)
    objective.to(device)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    learning_rate = settings.learning_rate or training.learning_rate
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=training.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant
    step, losses, scaler_state = 0, [], None
    resumed = run.training_state(stage)
    if resumed is not None:
        if stage > 1:
            check_schedule(stage, run, config.ldm.schedule)
        load_stage_checkpoint(stage, run, champ, m2penc)
        try:
            optimizer.load_state_dict(resumed["optimizer"])
        except ValueError as error:  # another set of trainable parameters
            raise ConfigError(f"stage {stage} of LDM run {run.name!r} was trained with other "
                              f"trainable parameters ({error}); train it under a new "
                              "ldm.run_name") from None
        lr_schedule.load_state_dict(resumed["lr_scheduler"])
        torch.set_rng_state(resumed["torch_rng"])
        scaler_state = resumed.get("grad_scaler")
        step, losses = resumed["step"], run.state(stage).get("losses", [])
    start_step, started = step, time.perf_counter()
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda"
                                  and training.mixed_precision == "fp16")
    if scaler_state:  # fp16: the loss scale it had reached, or early steps would be skipped
        scaler.load_state_dict(scaler_state)
    frozen = scheduler = None
    if stage > 1:
        weights = base_weights(run, config)
        vae, image_encoder = frozen_encoders(weights.vae, weights.image_encoder)
        frozen = (vae.to(device), image_encoder.to(device))
        scheduler = DDPMScheduler(**config.ldm.schedule.scheduler_kwargs())
    model = prepare(objective)
    # a resumed stage reads the snapshot it started on; a new one the current snapshot
    snapshot_id = run.state(stage).get("snapshot") if resumed is not None else None
    source = ClipSource(store, config, snapshot_id)
    per_rank_batch = settings.batch_size // world_size  # the config checks it divides
    loader = stage_loader(stage, source, config, step, rank, per_rank_batch)
    model.train()
    for data in loader:
        generator = step_generator(training.seed, stage, step, rank, NOISE)
        batch = make_batch(stage, data, generator, config, frozen, scheduler, device)
        with _autocast(device, training.mixed_precision):
            loss, parts = model(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)  # CHAMP's max_grad_norm
        scaler.step(optimizer)
        scaler.update()
        lr_schedule.step()
        step += 1
        if step % training.log_every == 0 or step == settings.steps:
            losses.append([step, loss.item(), *parts.values()])
            report({"stage": stage, "step": step, "loss": loss.item(), **parts})
        finished = step == settings.steps
        if rank == 0 and (step % training.checkpoint_every == 0 or finished):
            run.save(stage, step, stage_modules(stage, champ, m2penc),
                     {"optimizer": optimizer.state_dict(),
                      "lr_scheduler": lr_schedule.state_dict(),
                      "torch_rng": torch.get_rng_state(), "step": step,
                      "grad_scaler": scaler.state_dict()},
                     {"losses": losses, "loss_columns": [*LOSS_COLUMNS, *parts],
                      "world_size": world_size, "device": device.type,
                      "snapshot": source.snapshot.id,
                      **({"schedule": trained_schedule(config.ldm.schedule)}
                         if stage > 1 else {})},
                     done=finished)
    seconds = time.perf_counter() - started
    return {**(run.state(stage) or {}), "resumed_from": start_step, "seconds": seconds,
            "steps_per_second": (step - start_step) / seconds if seconds else 0.0}


def ray_train_worker(args: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: one DDP rank of a stage."""
    import ray.train
    import ray.train.torch

    from dancegen.config import config_from_dict

    context = ray.train.get_context()
    train_stage(args["stage"], args["store"], config_from_dict(args["config"]),
                rank=context.get_world_rank(), world_size=context.get_world_size(),
                device=ray.train.torch.get_device(),
                prepare=lambda module: ray.train.torch.prepare_model(
                    module, parallel_strategy_kwargs={"find_unused_parameters": True}),
                report=ray.train.report)
