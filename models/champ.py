"""The CHAMP-style video LDM's trainable part: reference U-Net, guidance encoders, 3D U-Net.

One forward pass (training, or one denoising step):

1. the reference U-Net runs at t = 0 on the reference image's latent, with the CLIP image
   embedding as its cross-attention context, and banks its self-attention inputs
   (:mod:`dancegen.models.reference_attention`);
2. each guidance type (depth, normal, semantic, skeleton) goes through its own guidance
   encoder; the features are summed (CHAMP's ``torch.stack(...).sum(0)``);
3. the denoising 3D U-Net predicts the noise of the noisy latents, with the guidance added
   after ``conv_in``, self-attention over [frame, reference] tokens, cross-attention to the
   CLIP embedding and temporal attention across frames.

The frozen VAE and CLIP image encoder are not part of this module: they only turn pixels into
latents and embeddings (:mod:`dancegen.tasks.ldm_objectives`), and are loaded once per worker
(:func:`dancegen.tasks.ldm_models.frozen_encoders`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from dancegen.models import reference_attention
from dancegen.models.guidance_encoder import GuidanceEncoder
from dancegen.models.unet3d import DenoisingUNet3D, frames_to_batch

GUIDANCE_TYPES = ("depth", "normal", "semantic_map", "dwpose")  # CHAMP's names and order


class ChampModel(nn.Module):
    """Reference U-Net + guidance encoders + denoising 3D U-Net, wired for reference attention."""

    def __init__(self, reference_unet: UNet2DConditionModel, denoising_unet: DenoisingUNet3D,
                 guidance_encoders: dict[str, GuidanceEncoder]) -> None:
        super().__init__()
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        self.guidance_encoders = nn.ModuleDict(guidance_encoders)
        self.bank = reference_attention.ReferenceBank()
        written = reference_attention.install(reference_unet, self.bank, write=True)
        read = reference_attention.install(denoising_unet.unet, self.bank, write=False)
        if written != read:
            raise ValueError("the reference and denoising U-Nets differ in their transformer "
                             "blocks: reference attention needs the same architecture")
        # the reference net's output is never used, only its banked attention inputs; as
        # CHAMP, its last up block and output layers are frozen (they barely feed a bank)
        for name in frozen_reference_prefixes(reference_unet):
            for param in reference_unet.get_submodule(name).parameters():
                param.requires_grad_(False)

    def encode_guidance(self, guidance: Tensor) -> Tensor:
        """(B, G, 3, F, H, W) guidance images in [0, 1] -> summed features (B, C, F, h, w)."""
        b, g, _, f, _, _ = guidance.shape
        if g != len(self.guidance_encoders):
            raise ValueError(f"{g} guidance types given, the model has "
                             f"{len(self.guidance_encoders)} ({', '.join(self.guidance_encoders)})")
        features = [encoder(frames_to_batch(guidance[:, i]))
                    for i, encoder in enumerate(self.guidance_encoders.values())]
        summed = torch.stack(features).sum(0)
        return summed.reshape(b, f, *summed.shape[1:]).transpose(1, 2)

    @contextmanager
    def reference(self, reference_latents: Tensor | None, clip_embeds: Tensor):
        """Bank the reference image's attention inputs for the passes inside the block.

        ``reference_latents``: (B, C, h, w), scaled VAE latents, or None for the
        unconditional branch (no reference: the denoiser attends to its own tokens only).
        """
        self.bank.clear()
        if reference_latents is not None:
            zero_t = torch.zeros(reference_latents.shape[0], device=reference_latents.device)
            self.reference_unet(reference_latents, zero_t, encoder_hidden_states=clip_embeds)
        try:
            yield
        finally:
            # with gradient checkpointing, backward re-runs the denoiser's attention, which
            # reads the bank again: it is kept until the next pass clears it
            if not self.denoising_unet.gradient_checkpointing:
                self.bank.clear()

    def reference_states(self, reference_latents: Tensor, clip_embeds: Tensor
                         ) -> dict[str, Tensor]:
        """Run the reference U-Net once and return its banked states, for sampling: the
        reference does not change over the denoising steps, so it is computed once."""
        with torch.no_grad(), self.reference(reference_latents, clip_embeds):
            return dict(self.bank.states)

    @contextmanager
    def banked(self, states: dict[str, Tensor]):
        """Denoise inside the block with states from :meth:`reference_states` ({} = none)."""
        self.bank.clear()
        self.bank.states.update(states)
        try:
            yield
        finally:
            self.bank.clear()

    def denoise(self, noisy_latents: Tensor, timesteps: Tensor, clip_embeds: Tensor,
                guidance_features: Tensor | None, temporal: bool = True) -> Tensor:
        """One denoiser pass inside :meth:`reference`; latents (B, C, F, h, w)."""
        return self.denoising_unet(noisy_latents, timesteps, clip_embeds, guidance_features,
                                   temporal=temporal)

    def forward(self, noisy_latents: Tensor, timesteps: Tensor, reference_latents: Tensor | None,
                clip_embeds: Tensor, guidance: Tensor, temporal: bool = True) -> Tensor:
        """Predicted noise for (B, C, F, h, w) latents; guidance images (B, G, 3, F, H, W)."""
        with self.reference(reference_latents, clip_embeds):
            return self.denoise(noisy_latents, timesteps, clip_embeds,
                                self.encode_guidance(guidance), temporal)


def frozen_reference_prefixes(reference_unet: UNet2DConditionModel) -> list[str]:
    """Reference U-Net modules CHAMP keeps frozen: the last up block and the output layers."""
    return [f"up_blocks.{len(reference_unet.up_blocks) - 1}", "conv_norm_out", "conv_out"]
