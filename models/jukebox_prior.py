"""OpenAI Jukebox's 5B top-level prior, as far as "Jukebox features" need it.

jukemirlib (used by EDGE) feeds a clip's level-2 VQ-VAE codes to the top prior with a constant
label conditioning (unknown artist and genre, the first 1048576-sample window of a 62-s song)
and takes the residual stream after transformer block 66 as a (L, 4800) feature. This module
reproduces exactly that path: label and time embeddings, the shifted token embedding, and the
factorised-attention transformer blocks; there is no sampling, no cache and no ``prior.x_out``
output head (the features never reach it, so the checkpoint's ``prior.x_out.weight`` is dropped
by :meth:`JukeboxTopPrior.key_filter`). ``JukeboxPriorConfig.layers`` builds only the first
blocks (66 of 72 suffice for layer-66 features and save 6 x 138 MB).

Parameter names are the checkpoint's (``y_emb.artist_emb.emb.weight``, ``prior.x_emb.weight``,
``prior.transformer._attn_mods.65.attn.c_attn.w``, ...). The arithmetic follows the fork
rodrigo-castellon/jukebox 6b44861 that jukemirlib installs (``prior/conditioners.py``,
``prior/autoregressive.py``, ``transformer/*.py``) and jukemirlib's ``get_activations_custom``:
Conv1D weights ``w`` are (n_in, n_out) and stored in float16 as in ``prior_level_2.pth.tar``,
cast to the activation dtype per matmul; LayerNorm and softmax run in float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# jukemirlib's constant labels: a 62-s song (the prior only takes > 60 s), unknown artist and
# genre (id 0 in Jukebox's v2 id files), clip at offset 0
JUKEMIRLIB_TOTAL_LENGTH = (62 * 44100 // 128) * 128  # 2734080 samples
JUKEMIRLIB_ARTIST = 0
JUKEMIRLIB_GENRE = 0
JUKEMIRLIB_OFFSET = 0


@dataclass(frozen=True)
class JukeboxPriorConfig:
    """Sizes of a Jukebox top prior (``hparams.py`` ``prior_5b`` + ``labels``); defaults = 5B."""

    width: int = 4800
    depth: int = 72                  # blocks in the trained model
    heads: int = 8
    n_ctx: int = 8192                # tokens per window
    blocks: int = 128                # block_ctx = n_ctx // blocks
    m_attn: float = 0.25             # attention width = width * m_attn (1200; 150 per head)
    m_mlp: float = 1.0               # MLP hidden width = width * m_mlp
    bins: int = 2048                 # VQ-VAE codebook size
    attn_order: int = 2              # block / transpose-block / previous-block, cycling
    genres: int = 120                # bag-of-words genre vocabulary
    artists: int = 4111
    t_bins: int = 128                # bins of each timing embedding
    max_bow_genre_size: int = 5
    min_duration: float = 60.0       # seconds; range of the total-length embedding
    max_duration: float = 600.0
    sample_rate: int = 44100
    hop_length: int = 128            # audio samples per token (VQ-VAE level 2)
    layers: int = 72                 # blocks to build; features after block k need only k

    def __post_init__(self) -> None:
        if self.attn_order != 2:
            raise ValueError("only Jukebox's attn_order 2 (block/transpose/prev) is implemented")
        if self.n_ctx % self.blocks:
            raise ValueError(f"n_ctx {self.n_ctx} is not a multiple of blocks {self.blocks}")
        if self.attn_width % self.heads:
            raise ValueError(f"attention width {self.attn_width} not divisible by {self.heads}")
        if not 1 <= self.layers <= self.depth:
            raise ValueError(f"layers must be in 1..{self.depth}, got {self.layers}")

    @property
    def block_ctx(self) -> int:
        """Tokens per attention block (64 for the 5B)."""
        return self.n_ctx // self.blocks

    @property
    def attn_width(self) -> int:
        """Width of q, k and v (1200 for the 5B)."""
        return int(self.width * self.m_attn)

    @property
    def mlp_width(self) -> int:
        """Hidden width of the MLP (4800 for the 5B)."""
        return int(self.width * self.m_mlp)

    @property
    def sample_length(self) -> int:
        """Audio samples of one full window (1048576 for the 5B)."""
        return self.n_ctx * self.hop_length


def range_embedding_bins(n_time: int, bins: int, pos_range: tuple[float, float],
                         pos_start: Tensor, pos_end: Tensor | None = None,
                         clamp: bool = False) -> Tensor:
    """Jukebox ``RangeEmbedding``'s bin indices, with its float32 op sequence, on the CPU.

    ``pos_start`` / ``pos_end`` are (N, 1) float32 tensors; [pos_start, pos_end] is spread over
    ``n_time`` positions and each position binned into ``bins`` equal bins of ``pos_range``.
    Returns (N, n_time) int64. The indices are computed on the CPU whatever the model's device,
    so that they do not depend on a GPU's division kernel.
    """
    pos_min, pos_max = pos_range
    if not ((pos_min <= pos_start).all() and (pos_start < pos_max).all()):
        raise ValueError(f"range is [{pos_min}, {pos_max}), got start {pos_start.tolist()}")
    pos_start = pos_start.float()
    if pos_end is not None:
        if clamp:
            pos_end = pos_end.clamp(pos_min, pos_max)
        if not ((pos_min <= pos_end).all() and (pos_end <= pos_max).all()):
            raise ValueError(f"range is [{pos_min}, {pos_max}], got end {pos_end.tolist()}")
        pos_end = pos_end.float()
    if n_time != 1:
        if pos_end is None:
            raise ValueError("a range embedding over several positions needs pos_end")
        interpolation = torch.arange(0, n_time, dtype=torch.float32).view(1, n_time) / n_time
        position = pos_start + (pos_end - pos_start) * interpolation
    else:
        position = pos_start
    normalised = (position - pos_min) / (pos_max - pos_min)
    return (bins * normalised).floor().long()


def label_time_bins(config: JukeboxPriorConfig, total_length: int = JUKEMIRLIB_TOTAL_LENGTH,
                    offset: int = JUKEMIRLIB_OFFSET) -> tuple[Tensor, Tensor, Tensor]:
    """Bins of the total-length (1,), absolute (n_ctx,) and relative (n_ctx,) embeddings.

    As ``LabelConditioner.forward`` computes them for a window of ``config.sample_length``
    samples at ``offset`` of a ``total_length``-sample song. For the 5B and jukemirlib's labels:
    total 0, absolute ⌊16384 i / 26460000⌋, relative ⌊16384 i / 2734080⌋.
    """
    sr = config.sample_rate
    total = torch.tensor([[float(total_length)]])
    start = torch.tensor([[float(offset)]])
    end = torch.tensor([[float(offset + config.sample_length)]])
    total_bins = range_embedding_bins(
        1, config.t_bins, (config.min_duration * sr, config.max_duration * sr), total)
    absolute_bins = range_embedding_bins(
        config.n_ctx, config.t_bins, (0.0, config.max_duration * sr), start, end)
    relative_bins = range_embedding_bins(
        config.n_ctx, config.t_bins, (0.0, 1.0), start / total, end / total, clamp=True)
    return total_bins.view(1), absolute_bins.view(-1), relative_bins.view(-1)


class SimpleEmbedding(nn.Module):
    """An embedding table under ``emb`` (Jukebox's key layout)."""

    def __init__(self, bins: int, width: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(bins, width)
        nn.init.normal_(self.emb.weight, std=0.01)


class LabelConditioner(nn.Module):
    """Artist, bag-of-words genre and the three timing embeddings (``y_emb``)."""

    def __init__(self, config: JukeboxPriorConfig) -> None:
        super().__init__()
        width = config.width
        self.bow_genre_emb = SimpleEmbedding(config.genres, width)
        self.artist_emb = SimpleEmbedding(config.artists, width)
        self.total_length_emb = SimpleEmbedding(config.t_bins, width)
        self.absolute_pos_emb = SimpleEmbedding(config.t_bins, width)
        self.relative_pos_emb = SimpleEmbedding(config.t_bins, width)


class PositionEmbedding(nn.Module):
    """Learned absolute position embedding (n_ctx, width) under ``pos_emb``."""

    def __init__(self, n_ctx: int, width: int) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.empty(n_ctx, width))
        nn.init.normal_(self.pos_emb, std=0.01)


class Conv1D(nn.Module):
    """Jukebox's ``Conv1D``: ``y = x @ w + b`` with ``w`` (n_in, n_out), cast to x's dtype."""

    def __init__(self, n_in: int, n_out: int, weight_dtype: torch.dtype) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_in, n_out, dtype=weight_dtype))
        self.b = nn.Parameter(torch.zeros(n_out))
        nn.init.normal_(self.w, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        # per-call cast (Jukebox's type_as): the fp16 weights are never held upcast
        out = torch.addmm(self.b.to(x.dtype), x.reshape(-1, x.shape[-1]), self.w.to(x.dtype))
        return out.view(*x.shape[:-1], self.w.shape[1])


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activation dtype (Jukebox's ``ops.LayerNorm``)."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                           self.bias.float(), self.eps)
        return out.to(x.dtype)


def _attend(q: Tensor, k: Tensor, v: Tensor, heads: int, causal: bool) -> Tensor:
    """Multi-head attention of (M, T, S) queries on (M, K, S) keys/values -> (M, T, S)."""
    m, t, s = q.shape
    dh = s // heads
    q = q.view(m, t, heads, dh).permute(0, 2, 1, 3)
    k = k.view(m, k.shape[1], heads, dh).permute(0, 2, 3, 1)
    v = v.view(m, v.shape[1], heads, dh).permute(0, 2, 1, 3)
    scale = 1.0 / math.sqrt(math.sqrt(dh))
    w = torch.matmul(q, k) * (scale * scale)  # Jukebox's eval-mode order: product, then scale
    dtype = w.dtype
    w = w.float()
    if causal:
        mask = torch.ones(t, k.shape[-1], device=w.device).tril().view(1, 1, t, -1)
        w = w * mask + -1e9 * (1 - mask)  # masked logits exactly -1e9, as Jukebox
    w = F.softmax(w, dim=-1).to(dtype)
    return torch.matmul(w, v).permute(0, 2, 1, 3).reshape(m, t, s)


class FactoredAttention(nn.Module):
    """Sparse causal self-attention over blocks of ``block_ctx`` tokens.

    ``attn_func`` 1: causal within the token's own block; 2: causal over the same offset in
    the own and earlier blocks (transposed blocks); 3: all tokens of the previous block only
    (block 0 gets zeros, so c_proj's bias). Sequences that are not a multiple of block_ctx are
    zero-padded after the c_attn projection and sliced back, as Jukebox's sampling path does;
    no real query attends to a padded position.
    """

    def __init__(self, config: JukeboxPriorConfig, attn_func: int,
                 weight_dtype: torch.dtype) -> None:
        super().__init__()
        self.c_attn = Conv1D(config.width, config.attn_width * 3, weight_dtype)
        self.c_proj = Conv1D(config.attn_width, config.width, weight_dtype)
        self.heads = config.heads
        self.block_ctx = config.block_ctx
        self.attn_func = attn_func

    def forward(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        s, bc = q.shape[-1], self.block_ctx
        padded = -(-length // bc) * bc
        nb = padded // bc
        if padded != length:
            q, k, v = (F.pad(u, (0, 0, 0, padded - length)) for u in (q, k, v))
        if self.attn_func == 1:
            a = _attend(*(u.reshape(batch * nb, bc, s) for u in (q, k, v)), self.heads, True)
            a = a.view(batch, padded, s)
        elif self.attn_func == 2:
            def columns(u: Tensor) -> Tensor:
                return u.view(batch, nb, bc, s).transpose(1, 2).reshape(batch * bc, nb, s)
            a = _attend(columns(q), columns(k), columns(v), self.heads, True)
            a = a.view(batch, bc, nb, s).transpose(1, 2).reshape(batch, padded, s)
        else:
            def previous(u: Tensor) -> Tensor:
                shifted = F.pad(u.view(batch, nb, bc, s)[:, :-1], (0, 0, 0, 0, 1, 0))
                return shifted.reshape(batch * nb, bc, s)
            a = _attend(q.reshape(batch * nb, bc, s), previous(k), previous(v), self.heads,
                        False)
            a = a.view(batch, padded, s)
        return self.c_proj(a[:, :length])


class MLP(nn.Module):
    """``c_proj(quick_gelu(c_fc(x)))``, quick_gelu = x * sigmoid(1.702 x)."""

    def __init__(self, config: JukeboxPriorConfig, weight_dtype: torch.dtype) -> None:
        super().__init__()
        self.c_fc = Conv1D(config.width, config.mlp_width, weight_dtype)
        self.c_proj = Conv1D(config.mlp_width, config.width, weight_dtype)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        return self.c_proj(h * torch.sigmoid(1.702 * h))


class ResAttnBlock(nn.Module):
    """Pre-LN block with a shared residual: ``x + a + mlp(ln_1(x + a))``, a = attn(ln_0(x))."""

    def __init__(self, config: JukeboxPriorConfig, attn_func: int,
                 weight_dtype: torch.dtype) -> None:
        super().__init__()
        self.attn = FactoredAttention(config, attn_func, weight_dtype)
        self.ln_0 = LayerNorm(config.width)
        self.mlp = MLP(config, weight_dtype)
        self.ln_1 = LayerNorm(config.width)

    def forward(self, x: Tensor) -> Tensor:
        a = self.attn(self.ln_0(x))
        m = self.mlp(self.ln_1(x + a))
        return x + a + m


class Transformer(nn.Module):
    """The blocks, under Jukebox's ``_attn_mods`` name; block d uses attn_func [1, 2, 3][d % 3]."""

    def __init__(self, config: JukeboxPriorConfig, weight_dtype: torch.dtype) -> None:
        super().__init__()
        self._attn_mods = nn.ModuleList([ResAttnBlock(config, (1, 2, 3)[d % 3], weight_dtype)
                                         for d in range(config.layers)])


class ConditionalAutoregressive(nn.Module):
    """The parts of ``ConditionalAutoregressive2D`` before its output head (``prior.*``)."""

    def __init__(self, config: JukeboxPriorConfig, weight_dtype: torch.dtype) -> None:
        super().__init__()
        self.x_emb = nn.Embedding(config.bins, config.width)
        nn.init.normal_(self.x_emb.weight, std=0.02)
        self.pos_emb = PositionEmbedding(config.n_ctx, config.width)
        self.transformer = Transformer(config, weight_dtype)


class JukeboxTopPrior(nn.Module):
    """Level-2 codes (B, L) -> Jukebox features (B, L, width) after a given transformer block.

    Load with ``model.load_state_dict(model.key_filter(ckpt["model"]))``; weights are always
    loaded, the random initialisation only serves tests.
    """

    def __init__(self, config: JukeboxPriorConfig | None = None,
                 weight_dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.config = config or JukeboxPriorConfig()
        self.y_emb = LabelConditioner(self.config)
        self.prior = ConditionalAutoregressive(self.config, weight_dtype)

    def key_filter(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The entries of a full top-prior state dict (872 keys for the 5B) this module has.

        Drops ``prior.x_out.weight`` and the blocks beyond ``config.layers``; anything missing is
        left for ``load_state_dict(strict=True)`` to report.
        """
        own = self.state_dict(keep_vars=True).keys()
        return {k: v for k, v in state_dict.items() if k in own}

    def conditioning(self, batch: int, length: int) -> tuple[Tensor, Tensor]:
        """jukemirlib's constant label conditioning for the first ``length`` tokens.

        Returns ``x_cond`` (batch, length, width), the per-position timing embedding
        total_length + absolute + relative (summed in that order), and ``y_cond``
        (batch, 1, width), the artist + genre embedding that fills the start slot. Both are
        broadcast views over the batch (clone before writing into them).
        """
        if not 1 <= length <= self.config.n_ctx:
            raise ValueError(f"length must be in 1..{self.config.n_ctx}, got {length}")
        y = self.y_emb
        device = y.artist_emb.emb.weight.device
        total_bins, absolute_bins, relative_bins = (
            b.to(device) for b in label_time_bins(self.config))
        x_cond = (y.total_length_emb.emb(total_bins).view(1, 1, -1)
                  + y.absolute_pos_emb.emb(absolute_bins[:length])[None]
                  + y.relative_pos_emb.emb(relative_bins[:length])[None])
        genre = torch.full((1, self.config.max_bow_genre_size), -1, dtype=torch.long,
                           device=device)
        genre[0, 0] = JUKEMIRLIB_GENRE
        artist = torch.tensor([[JUKEMIRLIB_ARTIST]], device=device)
        # empty genre slots (-1) are masked out of the bag of words, as Jukebox does
        mask = (genre >= 0).float().unsqueeze(2)
        genre_emb = (y.bow_genre_emb.emb(genre.clamp(0)) * mask).sum(dim=1, keepdim=True)
        y_cond = genre_emb + y.artist_emb.emb(artist)
        return x_cond.expand(batch, -1, -1), y_cond.expand(batch, -1, -1)

    def forward(self, codes: Tensor, layer: int, dtype: torch.dtype | None = None) -> Tensor:
        """Residual stream after ``layer`` blocks (1-based, as jukemirlib's ``layers=[66]``).

        Args:
            codes: (B, L) int64 level-2 codes, 1 <= L <= n_ctx. The output at position t
                depends on codes[:, :t] only (position 0 holds the label embedding).
            layer: how many transformer blocks to run, 1..config.layers.
            dtype: activation dtype of the blocks (default: that of the embeddings, float32);
                float16 halves activation memory on a GPU. Embeddings are summed in their own
                dtype first, as jukemirlib's ``fp16=True`` does.

        Returns:
            (B, L, width) features in ``dtype``.
        """
        if codes.ndim != 2:
            raise ValueError(f"codes must be (batch, length), got shape {tuple(codes.shape)}")
        batch, length = codes.shape
        if not 1 <= length <= self.config.n_ctx:
            raise ValueError(f"sequence length must be in 1..{self.config.n_ctx}, got {length}")
        if not 1 <= layer <= self.config.layers:
            raise ValueError(f"layer must be in 1..{self.config.layers} (blocks built), "
                             f"got {layer}")
        if codes.min() < 0 or codes.max() >= self.config.bins:
            raise ValueError(f"codes must be in [0, {self.config.bins})")
        x_cond, y_cond = self.conditioning(batch, length)
        h = self.prior.x_emb(codes.long())
        # shift right by one: position t sees codes < t, the start slot holds the labels
        h = torch.cat([y_cond.to(h.dtype), h[:, :-1]], dim=1)
        h = h + self.prior.pos_emb.pos_emb[:length] + x_cond
        h = h.to(dtype or h.dtype)
        for block in self.prior.transformer._attn_mods[:layer]:
            h = block(h)
        return h
