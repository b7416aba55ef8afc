"""OpenAI Jukebox checkpoints (``vqvae.pth.tar``, ``prior_level_2.pth.tar``), local or S3.

Both files are ``torch.save({"hps": dict, "model": state_dict, "step": int, ...})``; only
``model`` is read, and only the tensors our modules hold (the level-2 encoder and its codebook;
the prior up to the feature layer, without ``x_out``). Files are read with
``weights_only=True``: ``hps`` may hold numpy scalars, which are allow-listed, and nothing else
can run on load. An S3 file is downloaded once to a local cache (keyed on its change token), as
torch needs a seekable file for a 10 GB checkpoint.

Model sizes are read from tensor shapes. What the shapes do not show, the head count and the
attention block count, comes from the config (``jukebox.heads``, ``jukebox.blocks``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dancegen.errors import InputError
from dancegen.models.jukebox_prior import JukeboxPriorConfig, JukeboxTopPrior
from dancegen.models.jukebox_vqvae import JukeboxVQVAEConfig, JukeboxVQVAEEncoder
from dancegen.storage.weights_cache import local_file

# what Jukebox's ``hps`` may pickle besides plain Python values
_SCALAR = importlib.import_module("numpy._core.multiarray").scalar
_NUMPY_GLOBALS: list[Any] = [
    (_SCALAR, "numpy.core.multiarray.scalar"),   # the name in files pickled under numpy 1
    (_SCALAR, "numpy._core.multiarray.scalar"),
    np.dtype, *(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")),
]


def _local_path(url: str) -> Path:
    return local_file(url, "Jukebox checkpoint")


def read_state(url: str) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a Jukebox checkpoint file."""
    path = _local_path(url)
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            try:  # zip files can be memory-mapped: the 10 GB prior is not read into RAM twice
                content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (pre-zip) format
                content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{url}: not a readable Jukebox checkpoint ({error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("model"), dict):
        got = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise InputError(f"{url}: a Jukebox checkpoint holds a 'model' state dict; got {got}")
    return content["model"]


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in state if (m := regex.match(key))})


def vqvae_config(state: dict[str, torch.Tensor], url: str) -> JukeboxVQVAEConfig:
    """The level-2 encoder's sizes from the file's tensor shapes."""
    prefix = "encoders.2.level_blocks"
    try:
        blocks = _count(state, rf"{prefix}\.(\d+)\.")
        downs = tuple(_count(state, rf"{prefix}\.{b}\.model\.(\d+)\.0\.weight") for b in
                      range(blocks))
        first = state[f"{prefix}.0.model.0.0.weight"]          # (width, 1, 2 * stride)
        depth = _count(state, rf"{prefix}\.0\.model\.0\.1\.model\.(\d+)\.")
        emb_width = state[f"{prefix}.0.model.{downs[0]}.weight"].shape[0]
        l_bins = state["bottleneck.level_blocks.2.k"].shape[0]
    except (KeyError, IndexError) as missing:
        raise InputError(f"{url}: not a Jukebox VQ-VAE with a level-2 encoder "
                         f"(no {missing})") from None
    if blocks != 3 or not all(downs):
        raise InputError(f"{url}: not a Jukebox VQ-VAE with a level-2 encoder")
    return JukeboxVQVAEConfig(width=first.shape[0], depth=depth, emb_width=emb_width,
                              l_bins=l_bins, downs_t=downs,
                              strides_t=(first.shape[-1] // 2,) * blocks,
                              multipliers=(1,) * blocks, level=2)


def prior_config(state: dict[str, torch.Tensor], url: str, heads: int, blocks: int,
                 layers: int) -> JukeboxPriorConfig:
    """The top prior's sizes from tensor shapes; heads and blocks as configured."""
    try:
        bins, width = state["prior.x_emb.weight"].shape
        n_ctx = state["prior.pos_emb.pos_emb"].shape[0]
        n_state = state["prior.transformer._attn_mods.0.attn.c_attn.w"].shape[1] // 3
        mlp = state["prior.transformer._attn_mods.0.mlp.c_fc.w"].shape[1]
        genres = state["y_emb.bow_genre_emb.emb.weight"].shape[0]
        artists = state["y_emb.artist_emb.emb.weight"].shape[0]
        t_bins = state["y_emb.total_length_emb.emb.weight"].shape[0]
    except KeyError as missing:
        raise InputError(f"{url}: not a Jukebox top prior (no {missing})") from None
    depth = _count(state, r"prior\.transformer\._attn_mods\.(\d+)\.")
    if layers > depth:
        raise InputError(f"{url}: the prior has {depth} layers, jukebox.layer is {layers}")
    if width % heads or n_state % heads or n_ctx % blocks:
        raise InputError(f"{url}: width {width} / {n_state} and context {n_ctx} do not split "
                         f"into jukebox.heads={heads} heads and jukebox.blocks={blocks} blocks")
    # m_attn, m_mlp as fractions whose int(width * m) gives back the stored widths exactly
    return JukeboxPriorConfig(width=width, depth=depth, heads=heads, n_ctx=n_ctx, blocks=blocks,
                              m_attn=(n_state + 0.5) / width, m_mlp=(mlp + 0.5) / width,
                              bins=bins, genres=genres, artists=artists, t_bins=t_bins,
                              layers=layers)


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], url: str) -> None:
    try:
        module.load_state_dict(module.key_filter(state), strict=True, assign=True)
    except RuntimeError as error:
        raise InputError(f"{url}: weights do not fit ({error})") from None


def load_vqvae(url: str) -> JukeboxVQVAEEncoder:
    """The VQ-VAE's level-2 encoder and codebook, weights loaded."""
    state = read_state(url)
    with torch.device("meta"):  # allocate nothing twice: the file's tensors are assigned
        model = JukeboxVQVAEEncoder(vqvae_config(state, url))
    _load(model, state, url)
    return model


def load_prior(url: str, heads: int, blocks: int, layers: int) -> JukeboxTopPrior:
    """The top prior's first ``layers`` blocks and embeddings, weights loaded."""
    state = read_state(url)
    with torch.device("meta"):
        model = JukeboxTopPrior(prior_config(state, url, heads, blocks, layers))
    _load(model, state, url)
    return model
