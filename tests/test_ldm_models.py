"""M2PEnc, the guidance encoder, the motion modules, reference attention and the 3D U-Net."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from ldm_helpers import TINY_GUIDANCE, TINY_MOTION, TINY_UNET

from dancegen.models.champ import GUIDANCE_TYPES, ChampModel
from dancegen.models.guidance_encoder import GuidanceEncoder, GuidanceEncoderConfig
from dancegen.models.m2penc import M2PEnc, M2PEncConfig
from dancegen.models.unet3d import DenoisingUNet3D


def tiny_champ(seed: int = 0) -> ChampModel:
    torch.manual_seed(seed)
    return ChampModel(UNet2DConditionModel(**TINY_UNET),
                      DenoisingUNet3D(UNet2DConditionModel(**TINY_UNET), TINY_MOTION),
                      {t: GuidanceEncoder(TINY_GUIDANCE) for t in GUIDANCE_TYPES})


def test_m2penc_maps_music_frames_to_guidance_and_heatmaps() -> None:
    torch.manual_seed(0)
    model = M2PEnc(M2PEncConfig(music_dim=35, channels=(8, 16), attention_blocks=1,
                                attention_heads=2))
    music = torch.randn(2, 6, 35)
    guidance, heatmaps = model(music)
    assert guidance.shape == (2, 6, 12, 64, 64) and heatmaps.shape == (2, 6, 18, 64, 64)
    # the 3D convolutions and attention mix time: changing one frame's music moves the others
    changed = music.clone()
    changed[:, 0] += 1
    assert not torch.allclose(model(changed)[0][:, 3], guidance[:, 3])
    # the paper's projection: 4800-d Jukebox -> 4096 = 64 x 64
    assert M2PEnc(M2PEncConfig()).music_proj.weight.shape == (4096, 4800)


def test_guidance_encoder_has_champs_keys_and_starts_silent() -> None:
    encoder = GuidanceEncoder(GuidanceEncoderConfig())  # CHAMP's sizes
    keys = encoder.state_dict()
    assert len(keys) == 149  # CHAMP's guidance_encoder_*.pth
    assert keys["conv_in.weight"].shape == (16, 3, 3, 3)
    assert keys["blocks.5.weight"].shape == (256, 96, 3, 3)
    assert keys["attentions.0.norm.weight"].shape == (16,)
    assert keys["attentions.5.transformer_blocks.0.ff.net.0.proj.weight"].shape == (2048, 256)
    assert keys["conv_out.weight"].shape == (320, 256, 3, 3)
    assert encoder.attentions[0].norm.num_groups == 1
    assert encoder.attentions[5].norm.num_groups == 32
    assert not any("attn2" in k for k in keys)
    out = encoder(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 320, 8, 8) and out.abs().max() == 0  # zero-initialised conv_out
    trainable = {n.split(".")[0] for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {"conv_in", "blocks", "attentions", "conv_out"}
    assert not encoder.guidance_attention.norm.weight.requires_grad


def test_inflated_unet_is_the_image_unet_per_frame_until_trained() -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET)
    model = DenoisingUNet3D(unet, TINY_MOTION)
    x, ctx, t = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 1, 16), torch.tensor([10, 700])
    with torch.no_grad():
        video = model(x, t, ctx)
        frames = torch.stack([unet(x[:, :, i], t, encoder_hidden_states=ctx).sample
                              for i in range(3)], dim=2)
    torch.testing.assert_close(video, frames, atol=1e-5, rtol=1e-5)  # zero-init motion modules
    # once the temporal layers have weights, frames influence each other, unless skipped
    for param in model.motion_parameters():
        torch.nn.init.normal_(param, std=0.05)
    with torch.no_grad():
        moved = model(x, t, ctx)
        x2 = x.clone()
        x2[:, :, 0] += 1
        assert not torch.allclose(model(x2, t, ctx)[:, :, 2], moved[:, :, 2])
        torch.testing.assert_close(model(x2, t, ctx, temporal=False)[:, :, 2],
                                   model(x, t, ctx, temporal=False)[:, :, 2])


def test_motion_module_keys_follow_champs_layout() -> None:
    model = DenoisingUNet3D(UNet2DConditionModel(**TINY_UNET), TINY_MOTION)
    motion = model.motion_state_dict()
    prefix = "down_blocks.0.motion_modules.0.temporal_transformer."
    block = prefix + "transformer_blocks.0."
    expected = {prefix + "norm.weight", prefix + "proj_in.weight", prefix + "proj_out.bias",
                block + "attention_blocks.0.to_q.weight",
                block + "attention_blocks.1.to_out.0.bias",
                block + "attention_blocks.1.pos_encoder.pe", block + "norms.1.weight",
                block + "ff.net.0.proj.weight", block + "ff.net.2.weight", block + "ff_norm.bias"}
    assert expected <= set(motion)
    assert motion[block + "attention_blocks.0.pos_encoder.pe"].shape == (1, 32, 32)
    assert block + "attention_blocks.0.to_q.bias" not in motion
    # one module per resnet of every down/up block, one per mid-block attention
    modules = {k.split(".temporal_transformer")[0] for k in motion}
    assert len(modules) == 2 * 1 + 2 * 2 + 1
    spatial = model.spatial_state_dict()
    assert set(spatial) == set(UNet2DConditionModel(**TINY_UNET).state_dict())


def test_reference_attention_carries_the_reference_into_every_frame() -> None:
    champ = tiny_champ()
    for param in champ.parameters():  # the zero-initialised parts would hide differences
        if param.dim() > 1 and param.abs().sum() == 0:
            torch.nn.init.normal_(param, std=0.05)
    latents, t = torch.randn(1, 4, 2, 8, 8), torch.tensor([500])
    clip = torch.randn(1, 1, 16)
    guidance = torch.rand(1, 4, 3, 2, 64, 64)
    with torch.no_grad():
        a = champ(latents, t, torch.randn(1, 4, 8, 8), clip, guidance)
        b = champ(latents, t, torch.randn(1, 4, 8, 8), clip, guidance)
        unconditional = champ(latents, t, None, clip, guidance)
        again = champ(latents, t, None, clip, guidance)
    assert not torch.allclose(a, b)  # another reference image, another prediction
    torch.testing.assert_close(unconditional, again)
    assert len(champ.bank) == 0  # cleared after each pass
    # the reference net's last up block and output layers are frozen, as CHAMP's
    frozen = {n for n, p in champ.reference_unet.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("up_blocks.1", "conv_norm_out", "conv_out"))
                          for n in frozen)


def test_guidance_types_must_match_the_encoders() -> None:
    champ = tiny_champ()
    with pytest.raises(ValueError, match="3 guidance types given, the model has 4"):
        champ.encode_guidance(torch.rand(1, 3, 3, 2, 64, 64))


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        champ = tiny_champ()
        for param in champ.parameters():
            if param.dim() > 1 and param.abs().sum() == 0:
                torch.nn.init.normal_(param, std=0.05, generator=torch.Generator().manual_seed(1))
        champ.denoising_unet.gradient_checkpointing = checkpointing
        torch.manual_seed(5)
        out = champ(torch.randn(1, 4, 2, 8, 8), torch.tensor([300]), torch.randn(1, 4, 8, 8),
                    torch.randn(1, 1, 16), torch.rand(1, 4, 3, 2, 64, 64))
        out.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in champ.named_parameters()
                      if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-4, msg=name)
