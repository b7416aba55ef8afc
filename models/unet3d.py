"""The denoising 3D U-Net: SD 1.5's ``UNet2DConditionModel`` inflated with temporal layers.

Frames are folded into the batch for every spatial layer (that is what CHAMP's
``InflatedConv3d`` and ``Transformer3DModel`` do), and a motion module
(:mod:`dancegen.models.motion_module`) follows each resnet/attention pair of every down, mid and
up block, as CHAMP's ``motion_module_resolutions [1, 2, 4, 8]`` + ``motion_module_mid_block``.
CHAMP's guidance features are added once, right after ``conv_in``.

The motion modules are attached to diffusers' own blocks as ``<block>.motion_modules``, so
``DenoisingUNet3D.unet.state_dict()`` has CHAMP's key layout exactly: SD 1.5's keys for the
spatial layers plus ``down_blocks.0.motion_modules.0.temporal_transformer...``. The forward pass
walks diffusers' blocks itself; it supports SD-1.5-family configs (CrossAttn/plain down and up
blocks, a cross-attention mid block, no class or added embeddings).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dancegen.models.motion_module import MotionModuleConfig, TemporalModule

SUPPORTED_BLOCKS = {"CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}


def frames_to_batch(x: Tensor) -> Tensor:
    """(B, C, F, H, W) -> (B * F, C, H, W), the frames of one video consecutive."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def batch_to_frames(x: Tensor, num_frames: int) -> Tensor:
    """(B * F, C, H, W) -> (B, C, F, H, W)."""
    bf, c, h, w = x.shape
    return x.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


class DenoisingUNet3D(nn.Module):
    """``unet`` (an SD-1.5-style 2D U-Net) with motion modules attached to its blocks."""

    def __init__(self, unet: UNet2DConditionModel, motion: MotionModuleConfig) -> None:
        super().__init__()
        config = unet.config
        blocks = set(config.down_block_types) | set(config.up_block_types)
        if not blocks <= SUPPORTED_BLOCKS or config.mid_block_type != "UNetMidBlock2DCrossAttn":
            raise ValueError(f"unsupported U-Net blocks {sorted(blocks)} / "
                             f"{config.mid_block_type}: SD-1.5-family U-Nets only")
        if config.class_embed_type or config.addition_embed_type:
            raise ValueError("U-Nets with class or added embeddings are not supported")
        self.unet = unet
        self.motion_config = motion
        # recompute each layer's activations in backward (paper-size stage 3 needs it)
        self.gradient_checkpointing = False
        for block in [*unet.down_blocks, *unet.up_blocks]:
            block.motion_modules = nn.ModuleList(
                TemporalModule(resnet.out_channels, motion) for resnet in block.resnets)
        unet.mid_block.motion_modules = nn.ModuleList(
            TemporalModule(attention.in_channels, motion)
            for attention in unet.mid_block.attentions)

    def motion_parameters(self) -> list[nn.Parameter]:
        """The temporal layers' parameters (what stage 3 trains in the U-Net)."""
        return [p for name, p in self.unet.named_parameters() if ".motion_modules." in name]

    def spatial_state_dict(self) -> dict[str, Tensor]:
        """The U-Net's weights without the temporal layers (CHAMP's ``denoising_unet.pth``)."""
        return {k: v for k, v in self.unet.state_dict().items() if ".motion_modules." not in k}

    def motion_state_dict(self) -> dict[str, Tensor]:
        """Only the temporal layers (CHAMP's ``motion_module.pth``)."""
        return {k: v for k, v in self.unet.state_dict().items() if ".motion_modules." in k}

    def forward(self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor,
                guidance: Tensor | None = None, temporal: bool = True) -> Tensor:
        """Predict the noise of ``sample`` (B, C, F, h, w).

        ``timestep``: (B,) or a scalar; ``encoder_hidden_states``: (B, L, D) per video;
        ``guidance``: (B, C_conv_in_out, F, h, w) added after ``conv_in``; ``temporal=False``
        skips the motion modules (the image stage, single frames).
        """
        unet = self.unet
        b, _, f, _, _ = sample.shape
        x = frames_to_batch(sample)
        timestep = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(b)
        emb = unet.time_embedding(unet.time_proj(timestep.repeat_interleave(f)).to(x.dtype))
        context = encoder_hidden_states.repeat_interleave(f, dim=0)

        def run(layer: nn.Module, *args: object) -> Tensor:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                return checkpoint(layer, *args, use_reentrant=False)
            return layer(*args)

        def resnet_call(resnet: nn.Module, h: Tensor) -> Tensor:
            return run(resnet, h, emb)

        def motion(block: nn.Module, i: int, h: Tensor) -> Tensor:
            return run(block.motion_modules[i], h, f) if temporal else h

        def attend(block: nn.Module, i: int, h: Tensor) -> Tensor:
            if getattr(block, "attentions", None) is None:
                return h
            return run(lambda x: block.attentions[i](x, encoder_hidden_states=context,
                                                     return_dict=False)[0], h)

        x = unet.conv_in(x)
        if guidance is not None:
            x = x + frames_to_batch(guidance).to(x.dtype)
        skips = [x]
        for block in unet.down_blocks:
            for i, resnet in enumerate(block.resnets):
                x = motion(block, i, attend(block, i, resnet_call(resnet, x)))
                skips.append(x)
            for downsampler in block.downsamplers or []:
                x = downsampler(x)
                skips.append(x)

        mid = unet.mid_block
        x = resnet_call(mid.resnets[0], x)
        for i, resnet in enumerate(mid.resnets[1:]):
            x = resnet_call(resnet, motion(mid, i, attend(mid, i, x)))

        for block in unet.up_blocks:
            for i, resnet in enumerate(block.resnets):
                x = resnet_call(resnet, torch.cat([x, skips.pop()], dim=1))
                x = motion(block, i, attend(block, i, x))
            for upsampler in block.upsamplers or []:
                x = upsampler(x, skips[-1].shape[2:] if skips else None)

        x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
        return batch_to_frames(x, f)
