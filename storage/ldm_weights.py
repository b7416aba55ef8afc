"""Pretrained LDM weights in their published layouts, from a local folder or S3.

- Stable Diffusion 1.5 (``stable-diffusion-v1-5/``): ``unet/config.json`` +
  ``unet/diffusion_pytorch_model.{safetensors,bin}`` (diffusers). The reference U-Net and the
  denoising U-Net both start from it.
- VAE (``sd-vae-ft-mse/``): ``config.json`` + weights (diffusers ``AutoencoderKL``).
- CLIP image encoder (``image_encoder/``): ``config.json`` + ``pytorch_model.bin`` or
  ``model.safetensors`` (transformers ``CLIPVisionModelWithProjection``).
- CHAMP (``champ/``): ``denoising_unet.pth``, ``reference_unet.pth``, ``motion_module.pth`` and
  ``guidance_encoder_{depth,normal,semantic_map,dwpose}.pth``, each a plain ``state_dict`` saved
  with ``torch.save``; read with ``weights_only=True``.
- AnimateDiff's motion module (``mm_sd_v15_v2.ckpt``): a ``torch.save``-d dict of the temporal
  layers' tensors in the same key layout as CHAMP's ``motion_module.pth`` (588 keys for SD
  1.5's widths, e.g. ``down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight``,
  the sinusoidal ``...pos_encoder.pe`` of ``[1, 32, C]`` included and kept), possibly wrapped
  in ``{"state_dict": ...}`` and with a ``global_step`` entry (AnimateDiff's loader accepts both).

Every missing or unreadable file is an :class:`InputError` naming the file and the weight.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import CLIPVisionModelWithProjection
from transformers.utils import logging as transformers_logging

from dancegen.errors import InputError
from dancegen.models.champ import GUIDANCE_TYPES, ChampModel
from dancegen.models.guidance_encoder import GuidanceEncoder, GuidanceEncoderConfig
from dancegen.models.motion_module import MotionModuleConfig
from dancegen.models.unet3d import DenoisingUNet3D
from dancegen.storage.weights_cache import local_file, local_folder

# transformers draws a progress bar per loaded model: noise in worker logs and the CLI
transformers_logging.disable_progress_bar()


def _from_pretrained(cls: type, url: str, what: str) -> nn.Module:
    """``cls.from_pretrained`` on a local folder, or a cached copy of an S3 prefix."""
    folder = local_folder(url, what)
    if not (folder / "config.json").exists():
        raise InputError(f"{what}: {url}/config.json not found")
    kwargs = {}
    if issubclass(cls, (UNet2DConditionModel, AutoencoderKL)):
        kwargs["low_cpu_mem_usage"] = False  # accelerate is not a dependency
    try:
        return cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"{what}: cannot load {url}: {error}") from None


def load_unet(stable_diffusion: str) -> UNet2DConditionModel:
    """SD 1.5's U-Net from ``<stable_diffusion>/unet`` (only that folder is downloaded)."""
    return _from_pretrained(UNet2DConditionModel, f"{stable_diffusion.rstrip('/')}/unet",
                            "Stable Diffusion U-Net")


def load_vae(url: str) -> AutoencoderKL:
    """The (frozen) VAE, e.g. ``sd-vae-ft-mse``."""
    return _from_pretrained(AutoencoderKL, url, "VAE")


def load_image_encoder(url: str) -> CLIPVisionModelWithProjection:
    """The (frozen) CLIP image encoder of the reference image."""
    return _from_pretrained(CLIPVisionModelWithProjection, url, "CLIP image encoder")


def read_state_dict(url: str, what: str) -> dict[str, torch.Tensor]:
    """A ``torch.save``-d state dict (CHAMP's ``*.pth``, AnimateDiff's ``*.ckpt``), loaded
    without running any code; a ``{"state_dict": ...}`` wrapper and AnimateDiff's
    ``global_step`` entry are unwrapped."""
    path: Path = local_file(url, what)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{what}: {url} is not a readable state dict ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict):
        state.pop("global_step", None)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{what}: {url} does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str,
              allow_missing: tuple[str, ...] = ()) -> None:
    """``load_state_dict`` with an error that names the weight and the first mismatches.

    ``allow_missing``: key prefixes or substrings that may be absent (e.g. the motion
    modules of a U-Net loaded from an image-stage file); those keep their current values.
    """
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes differ: another architecture's file
        mismatches = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise InputError(f"{what}: tensor shapes do not match the model ({len(mismatches)}): "
                         f"{mismatches[0] if mismatches else error}") from None
    missing = [k for k in result.missing_keys if not any(a in k for a in allow_missing)]
    if missing or result.unexpected_keys:
        raise InputError(f"{what}: keys do not match the model: missing {missing[:3]}"
                         f"{'...' if len(missing) > 3 else ''} ({len(missing)}), unexpected "
                         f"{result.unexpected_keys[:3]} ({len(result.unexpected_keys)})")


def guidance_encoder_config(unet: UNet2DConditionModel, channels: list[int],
                            heads: int) -> GuidanceEncoderConfig:
    """A guidance encoder whose output width is the U-Net's first width (320 for SD 1.5)."""
    return GuidanceEncoderConfig(guidance_embedding_channels=unet.config.block_out_channels[0],
                                 block_out_channels=tuple(channels), attention_num_heads=heads)


def build_champ(stable_diffusion: str, champ: str | None, motion: MotionModuleConfig,
                guidance_channels: list[int], guidance_heads: int,
                motion_module: str | None = None) -> ChampModel:
    """The trainable LDM initialised from SD 1.5, then from CHAMP's files when given.

    Without CHAMP the guidance encoders start fresh (zero output); the motion modules start
    from AnimateDiff's ``motion_module`` file when given (as CHAMP's own video stage does),
    else fresh (identity). With ``champ`` set everything comes from CHAMP's files, in CHAMP's
    loading order: motion_module.pth, then denoising_unet.pth over it.
    """
    champ_model = assemble_champ(load_unet(stable_diffusion), load_unet(stable_diffusion), motion,
                                 guidance_channels, guidance_heads)
    if champ is not None:
        load_champ_files(champ_model, champ)
    elif motion_module is not None:
        load_motion_module(champ_model.denoising_unet, motion_module,
                           "AnimateDiff motion module")
    return champ_model


def load_motion_module(denoising: DenoisingUNet3D, url: str, what: str) -> None:
    """Load a motion-module file (CHAMP's or AnimateDiff's layout) into the temporal layers;
    every temporal key must be in it, and nothing else."""
    load_into(denoising.unet, {**denoising.spatial_state_dict(), **read_state_dict(url, what)},
              what)


def assemble_champ(reference: UNet2DConditionModel, denoising: UNet2DConditionModel,
                   motion: MotionModuleConfig, guidance_channels: list[int],
                   guidance_heads: int) -> ChampModel:
    """Wire two (SD-1.5-style) U-Nets, fresh motion modules and guidance encoders together."""
    guidance = guidance_encoder_config(reference, guidance_channels, guidance_heads)
    return ChampModel(reference, DenoisingUNet3D(denoising, motion),
                      {name: GuidanceEncoder(guidance) for name in GUIDANCE_TYPES})


def load_champ_files(model: ChampModel, champ: str) -> None:
    """Load CHAMP's published ``champ/*.pth`` into ``model``."""
    base, denoising = champ.rstrip("/"), model.denoising_unet
    # CHAMP's reference U-Net has no output layers (it is only read through its banks)
    load_into(model.reference_unet,
              read_state_dict(f"{base}/reference_unet.pth", "CHAMP reference U-Net"),
              "CHAMP reference U-Net", allow_missing=("conv_norm_out.", "conv_out."))
    load_motion_module(denoising, f"{base}/motion_module.pth", "CHAMP motion module")
    load_into(denoising.unet,
              read_state_dict(f"{base}/denoising_unet.pth", "CHAMP denoising U-Net"),
              "CHAMP denoising U-Net", allow_missing=(".motion_modules.",))
    for name, encoder in model.guidance_encoders.items():
        what = f"CHAMP guidance encoder ({name})"
        load_into(encoder, read_state_dict(f"{base}/guidance_encoder_{name}.pth", what), what)
