"""Reference attention: the reference U-Net's self-attention inputs feed the denoiser's.

CHAMP (after Animate Anyone, ``mutual_self_attention.py``) runs a copy of the SD U-Net on the
reference image's latent at t = 0 and banks, in every transformer block, the normed hidden
states that enter self-attention (``attn1``). The denoising U-Net's matching ``attn1`` then
attends over ``[own tokens, reference tokens]``: keys and values see the reference, queries
stay the frame's own. That is how the person's appearance reaches every frame.

Done here with diffusers attention processors, matched by module name (both U-Nets have the
same architecture), so no forward method of diffusers is patched.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import Tensor, nn


class ReferenceBank:
    """The banked reference states of one forward pass, keyed by ``attn1`` module name."""

    def __init__(self) -> None:
        self.states: dict[str, Tensor] = {}

    def clear(self) -> None:
        self.states.clear()

    def __len__(self) -> int:
        return len(self.states)


class ReferenceWriteProcessor:
    """Plain self-attention that also banks its (already normed) input."""

    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank, self.name, self.inner = bank, name, AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: Tensor,
                 encoder_hidden_states: Tensor | None = None, attention_mask: Tensor | None = None,
                 temb: Tensor | None = None, **_: object) -> Tensor:
        self.bank.states[self.name] = hidden_states
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReadProcessor:
    """Self-attention whose keys and values also cover the banked reference tokens."""

    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank, self.name, self.inner = bank, name, AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: Tensor,
                 encoder_hidden_states: Tensor | None = None, attention_mask: Tensor | None = None,
                 temb: Tensor | None = None, **_: object) -> Tensor:
        reference = self.bank.states.get(self.name)
        if reference is not None:
            # one reference per video, the denoiser sees (video * frames): repeat per frame
            frames, rest = divmod(hidden_states.shape[0], reference.shape[0])
            if rest:
                raise ValueError(f"{hidden_states.shape[0]} denoiser rows do not tile "
                                 f"{reference.shape[0]} reference images")
            reference = reference.repeat_interleave(frames, dim=0).to(hidden_states.dtype)
            encoder_hidden_states = torch.cat([hidden_states, reference], dim=1)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def self_attention_names(unet: nn.Module) -> list[str]:
    """Names of the self-attention (``attn1``) modules of a U-Net's transformer blocks."""
    return [name for name, module in unet.named_modules()
            if name.endswith(".attn1") and isinstance(module, Attention)]


def install(unet: nn.Module, bank: ReferenceBank, write: bool) -> list[str]:
    """Route ``unet``'s ``attn1`` modules through ``bank``: as writer (reference) or reader."""
    names = self_attention_names(unet)
    modules = dict(unet.named_modules())
    processor = ReferenceWriteProcessor if write else ReferenceReadProcessor
    for name in names:
        modules[name].set_processor(processor(bank, name))
    return names
