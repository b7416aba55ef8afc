"""Assemble M2PEnc and the LDM from the config, the base weights and finished stages.

Base weights are the published ones (``ldm.weights``) or, offline, the stand-ins that
:mod:`dancegen.tasks.ldm_stand_in` wrote to the run's ``base/`` folder in the same layouts; both
load through :mod:`dancegen.storage.ldm_weights`. The frozen VAE and CLIP encoder are loaded
once per worker process.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict

from diffusers import AutoencoderKL
from transformers import CLIPVisionModelWithProjection

from dancegen.config import DancegenConfig, LdmWeights, NoiseSchedule
from dancegen.errors import ConfigError, StoreError
from dancegen.models.champ import ChampModel
from dancegen.models.edge import BASELINE_FEATURE_DIM, JUKEBOX_FEATURE_DIM
from dancegen.models.m2penc import M2PEnc, M2PEncConfig
from dancegen.models.motion_module import MotionModuleConfig
from dancegen.storage.contract import KEYPOINTS
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.storage.ldm_weights import build_champ, load_image_encoder, load_vae


def base_weights(run: LdmRun, config: DancegenConfig) -> LdmWeights:
    """The configured pretrained weights, or the run's offline stand-ins."""
    if config.ldm.weights is not None:
        return config.ldm.weights
    if not run.base_ready():
        raise StoreError(f"no stand-in base weights in {run.base.url}: the stage-2 flow "
                         "builds them (ldm.stand_in), or configure ldm.weights")
    return LdmWeights(stable_diffusion=run.base.url, vae=run.base.child("vae").url,
                      image_encoder=run.base.child("image_encoder").url)


def m2penc_config(config: DancegenConfig) -> M2PEncConfig:
    sizes = config.ldm.m2penc
    music_dim = JUKEBOX_FEATURE_DIM if config.music.backend == "jukebox" else BASELINE_FEATURE_DIM
    return M2PEncConfig(music_dim=music_dim, channels=tuple(sizes.channels),
                        attention_blocks=sizes.attention_blocks,
                        attention_heads=sizes.attention_heads, heatmap_channels=KEYPOINTS)


def motion_config(config: DancegenConfig) -> MotionModuleConfig:
    return MotionModuleConfig(num_attention_heads=config.ldm.motion_heads,
                              max_frames=config.ldm.motion_max_frames)


def new_champ(run: LdmRun, config: DancegenConfig) -> ChampModel:
    """The LDM from the base weights (SD 1.5, then CHAMP's files when configured)."""
    weights = base_weights(run, config)
    return build_champ(weights.stable_diffusion, weights.champ, motion_config(config),
                       config.ldm.guidance_channels, config.ldm.guidance_heads,
                       weights.motion_module)


# What a denoiser learns depends on these; the DDIM spacing is a sampling choice only
TRAINED_SCHEDULE_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                           "prediction_type", "zero_terminal_snr")
# checkpoints from before the schedule was recorded could only be trained this way
UNRECORDED_SCHEDULE = {"prediction_type": "epsilon", "zero_terminal_snr": False}


def trained_schedule(schedule: NoiseSchedule) -> dict:
    """The part of the schedule a checkpoint records and a resume or sampler must match."""
    return {name: getattr(schedule, name) for name in TRAINED_SCHEDULE_FIELDS}


def check_schedule(stage: int, run: LdmRun, schedule: NoiseSchedule) -> None:
    """Refuse to resume, extend or sample a denoising stage under another parameterisation
    than it was trained with (its weights would be read as the wrong quantity)."""
    state = run.state(stage)
    if state is None:  # nothing trained yet: nothing to contradict (loading it says so)
        return
    recorded = state.get("schedule") or {**trained_schedule(NoiseSchedule()),
                                         **UNRECORDED_SCHEDULE}
    configured = trained_schedule(schedule)
    differ = {k: (recorded.get(k), v) for k, v in configured.items() if recorded.get(k) != v}
    if differ:
        listed = ", ".join(f"{k} {was!r} (configured: {now!r})" for k, (was, now) in differ.items())
        raise ConfigError(f"stage {stage} of LDM run {run.name!r} was trained with {listed}; "
                          "set ldm.schedule back to what it was trained with, or train "
                          "under a new ldm.run_name")


def load_finished(stage: int, run: LdmRun, champ: ChampModel | None,
                  m2penc: M2PEnc | None) -> None:
    """Load what a finished stage trained into ``champ`` / ``m2penc``."""
    run.require_done(stage)
    load_stage_checkpoint(stage, run, champ, m2penc)


def stage_modules(stage: int, champ: ChampModel | None,
                  m2penc: M2PEnc | None) -> dict[str, tuple[dict, dict]]:
    """What a stage's checkpoint holds: name -> (config dict, state dict)."""
    if stage == 1:
        return {"m2penc": (m2penc.config.to_dict(), m2penc.state_dict())}
    if stage == 2:
        denoising = champ.denoising_unet
        modules = {
            "reference_unet": (dict(champ.reference_unet.config),
                               champ.reference_unet.state_dict()),
            "denoising_unet": (dict(denoising.unet.config), denoising.spatial_state_dict()),
        }
        for name, encoder in champ.guidance_encoders.items():
            modules[f"guidance_encoder_{name}"] = (encoder.config.to_dict(), encoder.state_dict())
        return modules
    return {"m2penc": (m2penc.config.to_dict(), m2penc.state_dict()),
            "motion_module": (asdict(champ.denoising_unet.motion_config),
                              champ.denoising_unet.motion_state_dict())}


def load_stage_checkpoint(stage: int, run: LdmRun, champ: ChampModel | None,
                          m2penc: M2PEnc | None) -> None:
    """Load a stage's latest checkpoint (finished or not) into its modules (to resume)."""
    for name, (configured, _) in stage_modules(stage, champ, m2penc).items():
        saved, state = run.module_state(stage, name)
        if _comparable(saved) != _comparable(configured):
            raise ConfigError(f"stage {stage} of LDM run {run.name!r} holds a {name} of another "
                              f"configuration than the one configured now; train it under a "
                              f"new ldm.run_name (or restore the config it was trained with)")
        if name == "m2penc":
            m2penc.load_state_dict(state)
        elif name == "reference_unet":
            champ.reference_unet.load_state_dict(state)
        elif name == "denoising_unet":
            champ.denoising_unet.unet.load_state_dict(
                {**champ.denoising_unet.motion_state_dict(), **state})
        elif name == "motion_module":
            champ.denoising_unet.unet.load_state_dict(
                {**champ.denoising_unet.spatial_state_dict(), **state})
        else:
            champ.guidance_encoders[name.removeprefix("guidance_encoder_")].load_state_dict(state)


def _comparable(config: dict) -> dict:
    """A module config as JSON would store it, without diffusers' bookkeeping (``_...``)."""
    return {k: v for k, v in json.loads(json.dumps(dict(config))).items()
            if not k.startswith("_")}


@functools.lru_cache(maxsize=2)
def frozen_encoders(vae_url: str, image_encoder_url: str
                    ) -> tuple[AutoencoderKL, CLIPVisionModelWithProjection]:
    """The frozen VAE and CLIP image encoder, loaded once per worker process."""
    vae, encoder = load_vae(vae_url), load_image_encoder(image_encoder_url)
    vae.requires_grad_(False).eval()
    encoder.requires_grad_(False).eval()
    return vae, encoder
