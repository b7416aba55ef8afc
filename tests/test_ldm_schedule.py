"""The LDM's noise parameterisation (``ldm.schedule``): epsilon or v-prediction, zero terminal
SNR, timestep spacing, min-SNR weights; training and sampling agree, checkpoints record it and
another one is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from ldm_helpers import short_config

from dancegen.config import NoiseSchedule
from dancegen.errors import ConfigError
from dancegen.storage.ldm_checkpoint import LdmRun
from dancegen.storage.snapshot import DatasetSnapshot
from dancegen.tasks.generation import load_pipeline
from dancegen.tasks.ldm_data import ClipDataset, ClipRequest, SampleSpec
from dancegen.tasks.ldm_models import base_weights, frozen_encoders, load_finished, new_champ
from dancegen.tasks.ldm_objectives import (
    clip_embeds,
    denoising_target,
    encode_latents,
    min_snr_weights,
)
from dancegen.tasks.ldm_sampling import SamplerSettings, ddim_scheduler, sample_segment
from dancegen.tasks.ldm_train import train_stage

V_ZERO_SNR = NoiseSchedule(prediction_type="v_prediction", zero_terminal_snr=True,
                           timestep_spacing="trailing")
EPSILON = NoiseSchedule()


def test_zero_terminal_snr_needs_v_prediction() -> None:
    with pytest.raises(ValueError, match="zero_terminal_snr needs prediction_type"):
        NoiseSchedule(zero_terminal_snr=True)
    scheduler = DDPMScheduler(**V_ZERO_SNR.scheduler_kwargs())
    assert float(scheduler.alphas_cumprod[-1]) < 1e-6          # the last step is pure noise
    assert float(DDPMScheduler(**EPSILON.scheduler_kwargs()).alphas_cumprod[-1]) > 1e-3


def test_trailing_ddim_starts_at_the_last_training_step() -> None:
    trailing, leading = ddim_scheduler(V_ZERO_SNR), ddim_scheduler(EPSILON)
    trailing.set_timesteps(10)
    leading.set_timesteps(10)
    assert int(trailing.timesteps[0]) == 999 and int(trailing.timesteps[-1]) == 99
    assert int(leading.timesteps[0]) == 901 and int(leading.timesteps[-1]) == 1  # SD's


def test_targets_are_noise_or_velocity() -> None:
    latents, noise = torch.randn(3, 4, 2, 8, 8), torch.randn(3, 4, 2, 8, 8)
    timesteps = torch.tensor([0, 500, 999])
    eps = DDPMScheduler(**EPSILON.scheduler_kwargs())
    assert torch.equal(denoising_target(eps, latents, noise, timesteps), noise)
    v = DDPMScheduler(**V_ZERO_SNR.scheduler_kwargs())
    alpha = v.alphas_cumprod[timesteps].view(3, 1, 1, 1, 1)
    expected = alpha.sqrt() * noise - (1 - alpha).sqrt() * latents
    torch.testing.assert_close(denoising_target(v, latents, noise, timesteps), expected)
    # at zero SNR the velocity is -x0: the model must recover the image from pure noise
    torch.testing.assert_close(denoising_target(v, latents, noise, timesteps)[2], -latents[2],
                               atol=1e-3, rtol=0)


def test_min_snr_weights_match_diffusers_training_scripts() -> None:
    timesteps = torch.tensor([1, 50, 300, 700, 998])
    for schedule in (EPSILON, NoiseSchedule(prediction_type="v_prediction")):
        scheduler = DDPMScheduler(**schedule.scheduler_kwargs())
        snr = compute_snr(scheduler, timesteps)
        clipped = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]
        expected = clipped / (snr + 1 if schedule.prediction_type == "v_prediction" else snr)
        torch.testing.assert_close(min_snr_weights(scheduler, timesteps, 5.0), expected)
    # low-noise steps (high SNR) are weighted down, noisy ones keep weight ~1 (epsilon)
    weights = min_snr_weights(DDPMScheduler(**EPSILON.scheduler_kwargs()), timesteps, 5.0)
    assert weights[0] < 0.01 and weights[-1] == pytest.approx(1.0)


def _sample_frame(store: Path, config, schedule: NoiseSchedule) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2's weights sample one test frame from its rendered guidance under ``schedule``;
    returns (sampled latents, the frame's own latents)."""
    run = LdmRun(str(store), config.ldm.run_name)
    champ = new_champ(run, config)
    load_finished(2, run, champ, None)
    champ.requires_grad_(False).eval()
    weights = base_weights(run, config)
    vae, image_encoder = frozen_encoders(weights.vae, weights.image_encoder)
    snapshot = DatasetSnapshot.open(str(store), config.dataset.version)
    row = snapshot.segments("test")[0][0]
    sample = ClipDataset(snapshot, "music/baseline", SampleSpec(128))[ClipRequest(row, 40, 1, 0)]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        reference = sample["reference"][None]
        token = clip_embeds(image_encoder, reference)
        states = champ.reference_states(encode_latents(vae, reference, generator), token)
        guidance = champ.encode_guidance(sample["guidance"][None])
        latents = sample_segment(champ, guidance, states, token, schedule,
                                 SamplerSettings.of(config.generation), generator)
        target = encode_latents(vae, sample["frames"][None], generator)
    return latents.numpy(), target.numpy()


def test_a_model_samples_well_only_under_its_own_parameterisation(trained: Path) -> None:
    """The check that would have caught CHAMP's weights read as epsilon: stage 2 of the
    session's run (trained briefly with v-prediction and zero SNR, local-cpu.yaml) samples a
    test frame close to the frame's latents under its own schedule; the same weights read as
    an epsilon model give a sample far from it."""
    config = short_config()
    assert config.ldm.schedule.prediction_type == "v_prediction"
    own, target = _sample_frame(trained, config, config.ldm.schedule)
    other, _ = _sample_frame(trained, config, EPSILON)
    error = lambda x: float(np.sqrt(np.mean((x - target) ** 2)) / target.std())  # noqa: E731
    # measured (24 stage-2 steps on a 20-step VAE): correlation 0.76 and error 0.85 under its
    # own schedule; read as epsilon, error 9.3, an order of magnitude off
    assert np.corrcoef(own.ravel(), target.ravel())[0, 1] > 0.6
    assert not np.isfinite(other).all() or error(other) > 4 * error(own), (error(own),
                                                                          error(other))


def test_checkpoints_record_the_parameterisation_and_refuse_another(trained: Path,
                                                                    tmp_path: Path) -> None:
    config = short_config()
    run = LdmRun(str(trained), config.ldm.run_name)
    for stage in (2, 3):
        assert run.state(stage)["schedule"]["prediction_type"] == "v_prediction"
        assert run.state(stage)["schedule"]["zero_terminal_snr"] is True
    assert "schedule" not in run.state(1)  # M2PEnc has no noise
    epsilon = short_config("ldm.schedule.prediction_type=epsilon",
                           "ldm.schedule.zero_terminal_snr=false",
                           "ldm.schedule.timestep_spacing=leading")
    with pytest.raises(ConfigError, match="prediction_type 'v_prediction'"):
        load_pipeline(str(trained), epsilon, torch.device("cpu"))
    # the DDIM spacing is a sampling choice: another one still loads
    load_pipeline(str(trained), short_config("ldm.schedule.timestep_spacing=linspace"),
                  torch.device("cpu"))
    # resuming (more steps) or extending stage 2 into stage 3 under epsilon is refused (both
    # before any data is read: a copy of the run alone will do)
    store = tmp_path / "store.zarr"
    models = Path("models/ldm", config.ldm.run_name)
    shutil.copytree(trained / models, store / models)
    with pytest.raises(ConfigError, match="was trained with"):
        train_stage(2, str(store), short_config("training.stage2.steps=30",
                                                "ldm.schedule.prediction_type=epsilon",
                                                "ldm.schedule.zero_terminal_snr=false"))
    shutil.rmtree(store / models / "stage3")
    with pytest.raises(ConfigError, match="stage 2 of LDM run"):
        train_stage(3, str(store), epsilon)
