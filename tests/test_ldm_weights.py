"""Loading SD 1.5 / VAE / CLIP / CHAMP weights from self-built files in the published layouts."""

from __future__ import annotations

import pickle
from pathlib import Path

import boto3
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from ldm_helpers import TINY_MOTION, TINY_UNET
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from dancegen.errors import InputError
from dancegen.models.champ import GUIDANCE_TYPES
from dancegen.models.guidance_encoder import GuidanceEncoder
from dancegen.storage import weights_cache
from dancegen.storage.ldm_weights import (
    build_champ,
    guidance_encoder_config,
    load_image_encoder,
    load_vae,
)

GUIDANCE = [8, 16, 16, 32]


def write_sd15(root: Path) -> UNet2DConditionModel:
    """stable-diffusion-v1-5/unet/{config.json, diffusion_pytorch_model.safetensors}."""
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**TINY_UNET)
    unet.save_pretrained(root / "unet")
    return unet


def write_champ(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    """champ/*.pth as CHAMP's training scripts save them: plain state dicts, torch.save."""
    torch.manual_seed(2)
    root.mkdir(parents=True)
    reference = UNet2DConditionModel(**TINY_UNET).state_dict()
    # CHAMP's reference U-Net has no output layers
    reference = {k: v for k, v in reference.items() if not k.startswith(("conv_out",
                                                                           "conv_norm_out"))}
    from dancegen.models.unet3d import DenoisingUNet3D

    denoising = DenoisingUNet3D(UNet2DConditionModel(**TINY_UNET), TINY_MOTION)
    for param in denoising.motion_parameters():
        torch.nn.init.normal_(param, std=0.02)
    files = {"reference_unet": reference, "denoising_unet": denoising.spatial_state_dict(),
             "motion_module": denoising.motion_state_dict()}
    config = guidance_encoder_config(UNet2DConditionModel(**TINY_UNET), GUIDANCE, 4)
    for name in GUIDANCE_TYPES:
        encoder = GuidanceEncoder(config)
        torch.nn.init.normal_(encoder.conv_out.weight)  # not the fresh zero init
        files[f"guidance_encoder_{name}"] = encoder.state_dict()
    for name, state in files.items():
        torch.save(state, root / f"{name}.pth")
    return files


def test_sd15_alone_initialises_both_unets(tmp_path: Path) -> None:
    sd = write_sd15(tmp_path / "sd")
    champ = build_champ(str(tmp_path / "sd"), None, TINY_MOTION, GUIDANCE, 4)
    for model in (champ.reference_unet, champ.denoising_unet.unet):
        torch.testing.assert_close(model.state_dict()["conv_in.weight"],
                                   sd.state_dict()["conv_in.weight"])
    # fresh CHAMP parts: zero guidance, identity motion modules
    assert champ.guidance_encoders["depth"].conv_out.weight.abs().max() == 0


def test_champ_files_load_over_sd15(tmp_path: Path) -> None:
    sd = write_sd15(tmp_path / "sd")
    files = write_champ(tmp_path / "champ")
    champ = build_champ(str(tmp_path / "sd"), str(tmp_path / "champ"), TINY_MOTION, GUIDANCE, 4)
    reference = champ.reference_unet.state_dict()
    for key, value in files["reference_unet"].items():
        torch.testing.assert_close(reference[key], value)
    # absent from CHAMP's reference file: kept from SD 1.5
    torch.testing.assert_close(reference["conv_out.weight"], sd.state_dict()["conv_out.weight"])
    denoising = champ.denoising_unet.unet.state_dict()
    for key, value in {**files["denoising_unet"], **files["motion_module"]}.items():
        torch.testing.assert_close(denoising[key], value)
    for name in GUIDANCE_TYPES:
        torch.testing.assert_close(champ.guidance_encoders[name].conv_out.weight,
                                   files[f"guidance_encoder_{name}"]["conv_out.weight"])


def test_missing_or_foreign_champ_files_name_the_file(tmp_path: Path) -> None:
    write_sd15(tmp_path / "sd")
    write_champ(tmp_path / "champ")
    (tmp_path / "champ/guidance_encoder_dwpose.pth").unlink()
    with pytest.raises(InputError, match=r"guidance encoder \(dwpose\) not found: .*"
                                         r"guidance_encoder_dwpose\.pth"):
        build_champ(str(tmp_path / "sd"), str(tmp_path / "champ"), TINY_MOTION, GUIDANCE, 4)
    # a file for another architecture: the mismatch is named, not silently skipped
    torch.save({"conv_in.weight": torch.zeros(1)}, tmp_path / "champ/guidance_encoder_dwpose.pth")
    with pytest.raises(InputError, match=r"\(dwpose\): tensor shapes do not match the model"):
        build_champ(str(tmp_path / "sd"), str(tmp_path / "champ"), TINY_MOTION, GUIDANCE, 4)
    torch.save({"conv_in.weight": torch.zeros(8, 3, 3, 3)},
               tmp_path / "champ/guidance_encoder_dwpose.pth")
    with pytest.raises(InputError, match=r"\(dwpose\): keys do not match the model: missing"):
        build_champ(str(tmp_path / "sd"), str(tmp_path / "champ"), TINY_MOTION, GUIDANCE, 4)
    # a pickle that carries code is refused, never run
    with open(tmp_path / "champ/motion_module.pth", "wb") as f:
        pickle.dump({"x": Path("/")}, f, protocol=2)
    with pytest.raises(InputError, match=r"motion module: .* not a readable state dict"):
        build_champ(str(tmp_path / "sd"), str(tmp_path / "champ"), TINY_MOTION, GUIDANCE, 4)
    with pytest.raises(InputError, match=r"Stable Diffusion U-Net not found: .*nothing-here"):
        build_champ(str(tmp_path / "nothing-here"), None, TINY_MOTION, GUIDANCE, 4)
    (tmp_path / "empty/unet").mkdir(parents=True)
    with pytest.raises(InputError, match=r"Stable Diffusion U-Net: .*/unet/config\.json not"):
        build_champ(str(tmp_path / "empty"), None, TINY_MOTION, GUIDANCE, 4)


def test_vae_and_clip_load_from_their_folders(tmp_path: Path) -> None:
    torch.manual_seed(3)
    vae = AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    vae.save_pretrained(tmp_path / "sd-vae-ft-mse")
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=8))
    # as released (lambdalabs/sd-image-variations-diffusers): config.json + pytorch_model.bin
    clip.save_pretrained(tmp_path / "image_encoder")
    (tmp_path / "image_encoder/model.safetensors").unlink()
    torch.save(clip.state_dict(), tmp_path / "image_encoder/pytorch_model.bin")
    loaded_vae = load_vae(str(tmp_path / "sd-vae-ft-mse"))
    loaded_clip = load_image_encoder(str(tmp_path / "image_encoder"))
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded_vae.encode(image).latent_dist.mean,
                                   vae.encode(image).latent_dist.mean)
        torch.testing.assert_close(loaded_clip(pixel_values=image).image_embeds,
                                   clip(pixel_values=image).image_embeds)
    with pytest.raises(InputError, match=r"VAE not found: .*/sd-vae is not a folder"):
        load_vae(str(tmp_path / "sd-vae"))


def test_weights_load_from_s3_through_the_cache(tmp_path: Path, s3_bucket: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_cache, "CACHE_DIR", tmp_path / "cache")
    write_sd15(tmp_path / "sd")
    files = write_champ(tmp_path / "champ")
    s3 = boto3.client("s3")
    bucket = s3_bucket.removeprefix("s3://")
    for path in tmp_path.rglob("*"):
        if path.is_file() and "cache" not in path.parts:
            s3.upload_file(str(path), bucket, f"weights/{path.relative_to(tmp_path).as_posix()}")
    champ = build_champ(f"{s3_bucket}/weights/sd", f"{s3_bucket}/weights/champ", TINY_MOTION,
                        GUIDANCE, 4)
    torch.testing.assert_close(champ.guidance_encoders["normal"].conv_out.weight,
                               files["guidance_encoder_normal"]["conv_out.weight"])
    assert len(list((tmp_path / "cache/weights").glob("*/config.json"))) == 1  # unet/ only
    with pytest.raises(InputError, match="CHAMP reference U-Net not found"):
        build_champ(f"{s3_bucket}/weights/sd", f"{s3_bucket}/weights/none", TINY_MOTION,
                    GUIDANCE, 4)


def test_sd15_sized_motion_modules_have_animatediff_v2_layout() -> None:
    """mm_sd_v15_v2.ckpt holds 588 tensors for SD 1.5's widths, the position encodings
    ``pe`` of [1, 32, C] among them: the project's motion modules have the same keys (built on
    the meta device: no memory for SD 1.5's weights)."""
    from dancegen.models.motion_module import MotionModuleConfig
    from dancegen.models.unet3d import DenoisingUNet3D

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # diffusers' defaults are SD 1.5's
        denoising = DenoisingUNet3D(unet, MotionModuleConfig(num_attention_heads=8))
    keys = denoising.motion_state_dict()
    assert len(keys) == 588
    pe = {k: tuple(v.shape) for k, v in keys.items() if k.endswith("pos_encoder.pe")}
    assert {shape for shape in pe.values()} == {(1, 32, 320), (1, 32, 640), (1, 32, 1280)}
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0." \
           "attention_blocks.0.pos_encoder.pe" in pe
    assert "mid_block.motion_modules.0.temporal_transformer.proj_out.weight" in keys


def test_animatediff_motion_module_starts_the_temporal_layers(tmp_path: Path) -> None:
    write_sd15(tmp_path / "sd")
    from dancegen.models.unet3d import DenoisingUNet3D

    torch.manual_seed(3)
    source = DenoisingUNet3D(UNet2DConditionModel(**TINY_UNET), TINY_MOTION)
    state = {k: torch.randn_like(v) for k, v in source.motion_state_dict().items()}  # pe too
    # as AnimateDiff's training saves it: a state_dict wrapper and the global step
    torch.save({"state_dict": state, "global_step": 5000}, tmp_path / "mm_sd_v15_v2.ckpt")
    champ = build_champ(str(tmp_path / "sd"), None, TINY_MOTION, GUIDANCE, 4,
                        motion_module=str(tmp_path / "mm_sd_v15_v2.ckpt"))
    loaded = champ.denoising_unet.motion_state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value)
    # the guidance encoders still start fresh (zero): only the temporal layers come from it
    assert champ.guidance_encoders["depth"].conv_out.weight.abs().max() == 0
    # a plain state dict loads as well; one missing a key is named
    torch.save(state, tmp_path / "plain.ckpt")
    build_champ(str(tmp_path / "sd"), None, TINY_MOTION, GUIDANCE, 4,
                motion_module=str(tmp_path / "plain.ckpt"))
    torch.save({k: v for k, v in list(state.items())[1:]}, tmp_path / "partial.ckpt")
    with pytest.raises(InputError, match=r"AnimateDiff motion module: keys do not match"):
        build_champ(str(tmp_path / "sd"), None, TINY_MOTION, GUIDANCE, 4,
                    motion_module=str(tmp_path / "partial.ckpt"))


def test_champ_and_animatediff_motion_modules_are_not_both_configured() -> None:
    from dancegen.config import LdmWeights

    with pytest.raises(ValueError, match="not both"):
        LdmWeights(stable_diffusion="sd", vae="vae", image_encoder="clip", champ="champ",
                   motion_module="mm_sd_v15_v2.ckpt")
