"""Jukebox VQ-VAE top encoder and 5B top prior: key layout, shapes, codes, features, labels.

Small random configs keep the real key structure; the 5B sizes are checked on the meta device
(no memory). The prior is compared with the clean reference of the spec's Appendix A (verified
there against the Jukebox fork that jukemirlib installs), copied below as the independent
implementation.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from dancegen.models.jukebox_prior import (
    JUKEMIRLIB_TOTAL_LENGTH,
    JukeboxPriorConfig,
    JukeboxTopPrior,
    label_time_bins,
)
from dancegen.models.jukebox_vqvae import JukeboxVQVAEConfig, JukeboxVQVAEEncoder

SMALL_VQVAE = JukeboxVQVAEConfig(width=8, emb_width=16, l_bins=32)
SMALL_PRIOR = JukeboxPriorConfig(width=48, depth=4, heads=2, n_ctx=256, blocks=4, genres=4,
                                 artists=3, t_bins=16, layers=4)


# --- expected key names, written out from the spec (§2.2, §3.2) ---------------------------

def _conv(prefix: str) -> list[str]:
    return [f"{prefix}.weight", f"{prefix}.bias"]


def vqvae_level2_keys(depth: int = 4) -> set[str]:
    keys = ["bottleneck.level_blocks.2.k"]
    for lb, down in enumerate((3, 2, 2)):
        base = f"encoders.2.level_blocks.{lb}.model"
        for i in range(down):
            keys += _conv(f"{base}.{i}.0")                       # strided k=4 conv
            for r in range(depth):
                keys += _conv(f"{base}.{i}.1.model.{r}.model.1")  # dilated k=3 conv
                keys += _conv(f"{base}.{i}.1.model.{r}.model.3")  # 1x1 conv
        keys += _conv(f"{base}.{down}")                          # k=3 conv to emb_width
    return set(keys)


def prior_keys(layers: int) -> set[str]:
    keys = [f"y_emb.{name}.emb.weight" for name in
            ("bow_genre_emb", "artist_emb", "total_length_emb", "absolute_pos_emb",
             "relative_pos_emb")]
    keys += ["prior.x_emb.weight", "prior.pos_emb.pos_emb"]
    for i in range(layers):
        p = f"prior.transformer._attn_mods.{i}"
        keys += [f"{p}.attn.c_attn.w", f"{p}.attn.c_attn.b", f"{p}.attn.c_proj.w",
                 f"{p}.attn.c_proj.b", f"{p}.ln_0.weight", f"{p}.ln_0.bias",
                 f"{p}.mlp.c_fc.w", f"{p}.mlp.c_fc.b", f"{p}.mlp.c_proj.w",
                 f"{p}.mlp.c_proj.b", f"{p}.ln_1.weight", f"{p}.ln_1.bias"]
    return set(keys)


# --- the spec's Appendix A reference (features() gained n_head/bc for the small config) ----

def lin(x, w, b):  # Conv1D semantics, w (n_in, n_out) possibly fp16
    return torch.addmm(b.float(), x.reshape(-1, x.shape[-1]), w.float()).view(
        *x.shape[:-1], w.shape[1])


def ln(x, w, b):
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, 1e-5)


def attn_core(q, k, v, n_head, causal):           # q,k,v (M, T, S)
    M, T, S = q.shape
    dh = S // n_head
    q = q.view(M, T, n_head, dh).permute(0, 2, 1, 3)
    k = k.view(M, k.shape[1], n_head, dh).permute(0, 2, 3, 1)
    v = v.view(M, v.shape[1], n_head, dh).permute(0, 2, 1, 3)
    s = 1. / math.sqrt(math.sqrt(dh))
    w = torch.matmul(q, k) * (s * s)
    w = w.float()
    if causal:
        m = torch.ones(T, k.shape[-1], device=w.device).tril().view(1, 1, T, -1)
        w = w * m + -1e9 * (1 - m)
    return torch.matmul(F.softmax(w, -1), v).permute(0, 2, 1, 3).reshape(M, T, S)


def factored_attn(x, p, kind, n_head=8, bc=64):   # kind: 1 block, 2 transpose, 3 prev
    B, L, _ = x.shape
    q, k, v = lin(x, p['c_attn.w'], p['c_attn.b']).chunk(3, dim=-1)
    S = q.shape[-1]
    Lp = -(-L // bc) * bc
    nb = Lp // bc
    q, k, v = [F.pad(u, (0, 0, 0, Lp - L)) for u in (q, k, v)]
    if kind == 1:
        a = attn_core(*[u.reshape(B * nb, bc, S) for u in (q, k, v)], n_head, True).view(B, Lp, S)
    elif kind == 2:
        def tr(u):
            return u.view(B, nb, bc, S).transpose(1, 2).reshape(B * bc, nb, S)
        a = attn_core(tr(q), tr(k), tr(v), n_head, True).view(B, bc, nb, S).transpose(
            1, 2).reshape(B, Lp, S)
    else:
        def sh(u):
            return F.pad(u.view(B, nb, bc, S)[:, :-1], (0, 0, 0, 0, 1, 0)).reshape(B * nb, bc, S)
        a = attn_core(q.reshape(B * nb, bc, S), sh(k), sh(v), n_head, False).view(B, Lp, S)
    return lin(a[:, :L], p['c_proj.w'], p['c_proj.b'])


def features(z, x_cond, y_cond, sd, upto=66, n_head=8, bc=64):
    B, L = z.shape
    h = F.embedding(z, sd['prior.x_emb.weight'])
    h = torch.cat([y_cond.view(B, 1, -1), h[:, :-1]], 1)
    h = h + sd['prior.pos_emb.pos_emb'][:L] + x_cond[:, :L]
    for i in range(upto):
        def g(n, i=i):
            return sd[f'prior.transformer._attn_mods.{i}.{n}']
        a = factored_attn(ln(h, g('ln_0.weight'), g('ln_0.bias')),
                          {n: g('attn.' + n) for n in ['c_attn.w', 'c_attn.b', 'c_proj.w',
                                                       'c_proj.b']},
                          [1, 2, 3][i % 3], n_head, bc)
        u = lin(ln(h + a, g('ln_1.weight'), g('ln_1.bias')), g('mlp.c_fc.w'), g('mlp.c_fc.b'))
        h = h + a + lin(u * torch.sigmoid(1.702 * u), g('mlp.c_proj.w'), g('mlp.c_proj.b'))
    return h


# --- fixtures -------------------------------------------------------------------------------

def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Non-trivial random weights (the default init is near-zero); LN gains around 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            noise = torch.randn(tensor.shape, generator=gen) * scale
            if name.endswith(("ln_0.weight", "ln_1.weight")):
                noise += 1.0
            tensor.copy_(noise)


@pytest.fixture(scope="module")
def vqvae() -> JukeboxVQVAEEncoder:
    torch.manual_seed(0)
    model = JukeboxVQVAEEncoder(SMALL_VQVAE).eval()  # PyTorch's conv init keeps latents O(1)
    with torch.no_grad():  # codebook rows near latents of other audio, so that codes vary
        latents = model.latents(torch.randn(1, 128 * SMALL_VQVAE.l_bins))[0].t()
        model.codebook.copy_(latents + 0.1 * latents.std() * torch.randn_like(latents))
    return model


@pytest.fixture(scope="module")
def prior() -> JukeboxTopPrior:
    model = JukeboxTopPrior(SMALL_PRIOR).eval()
    _randomise(model, 1)
    return model


# --- VQ-VAE ---------------------------------------------------------------------------------

def test_vqvae_keys_match_checkpoint_names() -> None:
    model = JukeboxVQVAEEncoder(SMALL_VQVAE)
    assert set(model.state_dict()) == vqvae_level2_keys()
    assert set(dict(model.named_buffers())) == {"bottleneck.level_blocks.2.k"}
    assert SMALL_VQVAE.hop_length == JukeboxVQVAEConfig().hop_length == 128


def test_vqvae_5b_shapes_on_meta() -> None:
    with torch.device("meta"):
        model = JukeboxVQVAEEncoder()
    state = model.state_dict()
    assert set(state) == vqvae_level2_keys()
    encoder = {k: v for k, v in state.items() if k.startswith("encoders.2.")}
    assert len(encoder) == 132
    assert sum(v.numel() for v in encoder.values()) == 168_224
    assert all(v.dtype == torch.float32 for v in state.values())
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    lb = "encoders.2.level_blocks"
    assert shapes[f"{lb}.0.model.0.0.weight"] == (32, 1, 4)
    assert shapes[f"{lb}.0.model.2.0.weight"] == (32, 32, 4)
    assert shapes[f"{lb}.0.model.1.1.model.3.model.1.weight"] == (32, 32, 3)
    assert shapes[f"{lb}.0.model.1.1.model.3.model.3.weight"] == (32, 32, 1)
    assert shapes[f"{lb}.0.model.3.weight"] == (64, 32, 3)
    assert shapes[f"{lb}.1.model.0.0.weight"] == (32, 64, 4)
    assert shapes[f"{lb}.2.model.1.0.weight"] == (32, 32, 4)
    assert shapes[f"{lb}.2.model.2.weight"] == (64, 32, 3)
    assert shapes[f"{lb}.2.model.2.bias"] == (64,)
    assert shapes["bottleneck.level_blocks.2.k"] == (2048, 64)
    # dilations 1, 3, 9, 27 in every Resnet1D
    dilations = [block.model[1].dilation[0]
                 for block in model.encoders["2"].level_blocks[1].model[0][1].model]
    assert dilations == [1, 3, 9, 27]


def test_vqvae_key_filter_drops_other_levels_and_decoders(vqvae: JukeboxVQVAEEncoder) -> None:
    full = {k: v.clone() for k, v in vqvae.state_dict().items()}
    extra = {"encoders.0.level_blocks.0.model.0.0.weight": torch.zeros(1),
             "encoders.1.level_blocks.1.model.2.bias": torch.zeros(1),
             "decoders.2.out.weight": torch.zeros(1),
             "bottleneck.level_blocks.0.k": torch.zeros(1),
             "bottleneck.level_blocks.1.k": torch.zeros(1)}
    picked = vqvae.key_filter({**extra, **full})
    assert set(picked) == set(full)
    fresh = JukeboxVQVAEEncoder(SMALL_VQVAE)
    fresh.load_state_dict(picked, strict=True)
    audio = torch.randn(1, 1000)
    assert torch.equal(fresh(audio), vqvae(audio))


@pytest.mark.parametrize("samples", [128, 255, 256, 1000, 4410])
def test_vqvae_code_count_is_samples_over_hop(vqvae: JukeboxVQVAEEncoder, samples: int) -> None:
    audio = torch.randn(2, samples)
    with torch.no_grad():
        codes = vqvae(audio)
        latents = vqvae.latents(audio)
    assert codes.shape == (2, samples // 128)
    assert codes.dtype == torch.int64
    assert latents.shape == (2, 16, samples // 128)
    assert int(codes.min()) >= 0 and int(codes.max()) < 32


def test_vqvae_too_short_audio_is_an_error(vqvae: JukeboxVQVAEEncoder) -> None:
    with pytest.raises(ValueError, match="shorter than one code"):
        vqvae(torch.randn(1, 127))
    with pytest.raises(ValueError, match="batch, samples"):
        vqvae(torch.randn(1, 1000, 1))


def reference_level2_latents(audio: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """The spec's Appendix A recipe for the level-2 encoder, written with F.conv1d."""
    def conv(x, name, **kw):
        return F.conv1d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], **kw)
    x = audio[:, None, :]
    for lb, down in enumerate((3, 2, 2)):
        m = f"encoders.2.level_blocks.{lb}.model"
        for i in range(down):
            x = conv(x, f"{m}.{i}.0", stride=2, padding=1)
            for r, d in enumerate((1, 3, 9, 27)):
                res = f"{m}.{i}.1.model.{r}.model"
                x = x + conv(F.relu(conv(F.relu(x), f"{res}.1", padding=d, dilation=d)),
                             f"{res}.3")
        x = conv(x, f"{m}.{down}", padding=1)
    return x


def test_vqvae_latents_match_spec_recipe(vqvae: JukeboxVQVAEEncoder) -> None:
    audio = torch.randn(2, 1000)
    with torch.no_grad():
        want = reference_level2_latents(audio, vqvae.state_dict())
        torch.testing.assert_close(vqvae.latents(audio), want, rtol=1e-6, atol=1e-6)


def test_vqvae_codes_are_nearest_codebook_rows(vqvae: JukeboxVQVAEEncoder) -> None:
    audio = torch.randn(2, 4410, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        codes = vqvae(audio)
        latents = vqvae.latents(audio).permute(0, 2, 1).double()   # (B, T', emb)
    book = vqvae.codebook.double()
    brute = ((latents[:, :, None, :] - book[None, None]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(codes, brute)
    assert len(codes.unique()) > 1  # a collapsed latent would make the check vacuous


# --- prior: layout ----------------------------------------------------------------------------

def test_prior_keys_and_dtypes() -> None:
    model = JukeboxTopPrior(SMALL_PRIOR)
    state = model.state_dict()
    assert set(state) == prior_keys(4)
    assert not list(model.buffers())
    for key, tensor in state.items():
        assert tensor.dtype == (torch.float16 if key.endswith(".w") else torch.float32), key
    full32 = JukeboxTopPrior(SMALL_PRIOR, weight_dtype=torch.float32)
    assert all(t.dtype == torch.float32 for t in full32.state_dict().values())


def test_prior_5b_shapes_on_meta() -> None:
    with torch.device("meta"):
        model = JukeboxTopPrior()
    state = model.state_dict()
    assert set(state) == prior_keys(72)
    assert len(state) == 872 - 1  # the checkpoint's keys less prior.x_out.weight
    assert sum(t.numel() for t in state.values()) == 5_060_452_800 - 2048 * 4800
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["y_emb.bow_genre_emb.emb.weight"] == (120, 4800)
    assert shapes["y_emb.artist_emb.emb.weight"] == (4111, 4800)
    for name in ("total_length_emb", "absolute_pos_emb", "relative_pos_emb"):
        assert shapes[f"y_emb.{name}.emb.weight"] == (128, 4800)
    assert shapes["prior.x_emb.weight"] == (2048, 4800)
    assert shapes["prior.pos_emb.pos_emb"] == (8192, 4800)
    p = "prior.transformer._attn_mods.71"
    assert shapes[f"{p}.attn.c_attn.w"] == (4800, 3600)
    assert shapes[f"{p}.attn.c_attn.b"] == (3600,)
    assert shapes[f"{p}.attn.c_proj.w"] == (1200, 4800)
    assert shapes[f"{p}.attn.c_proj.b"] == (4800,)
    assert shapes[f"{p}.mlp.c_fc.w"] == shapes[f"{p}.mlp.c_proj.w"] == (4800, 4800)
    assert shapes[f"{p}.ln_0.weight"] == shapes[f"{p}.ln_1.bias"] == (4800,)
    assert state[f"{p}.mlp.c_fc.w"].dtype == torch.float16
    assert state[f"{p}.mlp.c_fc.b"].dtype == torch.float32
    kinds = [m.attn.attn_func for m in model.prior.transformer._attn_mods]
    assert kinds[:6] == [1, 2, 3, 1, 2, 3] and kinds[65] == 3
    assert model.config.block_ctx == 64

    with torch.device("meta"):
        built66 = JukeboxTopPrior(JukeboxPriorConfig(layers=66))
    assert set(built66.state_dict()) == prior_keys(66)
    assert len(built66.state_dict()) == 7 + 66 * 12


def test_prior_key_filter_drops_x_out_and_unbuilt_layers(prior: JukeboxTopPrior) -> None:
    full = {k: v.clone() for k, v in prior.state_dict().items()}
    extra = {"prior.x_out.weight": torch.zeros(SMALL_PRIOR.bins, SMALL_PRIOR.width),
             "prior.transformer._attn_mods.4.attn.c_attn.w": torch.zeros(1)}
    picked = prior.key_filter({**full, **extra})
    assert set(picked) == set(full)
    three = JukeboxTopPrior(dataclasses.replace(SMALL_PRIOR, layers=3))
    three.load_state_dict(three.key_filter(full), strict=True)
    codes = torch.randint(0, SMALL_PRIOR.bins, (1, 70))
    with torch.no_grad():
        assert torch.equal(three(codes, 3), prior(codes, 3))


# --- prior: conditioning ------------------------------------------------------------------------

def test_5b_time_bins_closed_forms() -> None:
    config = JukeboxPriorConfig()  # no model is built
    total, absolute, relative = label_time_bins(config)
    i = torch.arange(8192)
    assert total.tolist() == [0]
    assert torch.equal(absolute, (16384 * i) // 26_460_000)
    assert torch.equal(relative, (16384 * i) // JUKEMIRLIB_TOTAL_LENGTH)
    assert JUKEMIRLIB_TOTAL_LENGTH == 2_734_080
    assert int(relative[-1]) == 49 and int(absolute[-1]) == 5
    assert int(relative[1334]) == 7 and int(relative[1335]) == 8  # an exact boundary


def test_conditioning_is_the_label_embedding_sum(prior: JukeboxTopPrior) -> None:
    x_cond, y_cond = prior.conditioning(2, 200)
    assert x_cond.shape == (2, 200, 48) and y_cond.shape == (2, 1, 48)
    y = prior.y_emb
    i = torch.arange(200)
    hop = SMALL_PRIOR.hop_length
    expected = (y.total_length_emb.emb.weight[0]
                + y.absolute_pos_emb.emb.weight[(16 * hop * i) // 26_460_000]
                + y.relative_pos_emb.emb.weight[(16 * hop * i) // JUKEMIRLIB_TOTAL_LENGTH])
    assert torch.equal(x_cond[1], expected)
    start = y.bow_genre_emb.emb.weight[0] + y.artist_emb.emb.weight[0]
    assert torch.equal(y_cond[0, 0], start)
    with pytest.raises(ValueError):
        prior.conditioning(1, SMALL_PRIOR.n_ctx + 1)


# --- prior: features --------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 2, 64, 65, 130])
def test_prior_matches_appendix_reference(prior: JukeboxTopPrior, length: int) -> None:
    codes = torch.randint(0, SMALL_PRIOR.bins, (2, length),
                          generator=torch.Generator().manual_seed(length))
    sd = prior.state_dict()
    with torch.no_grad():
        x_cond, y_cond = prior.conditioning(2, length)
        for layer in (1, 4):
            want = features(codes, x_cond, y_cond, sd, upto=layer, n_head=2, bc=64)
            got = prior(codes, layer)
            assert got.shape == (2, length, 48) and got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [0, 5, 63, 64, 100, 129])
def test_prior_is_causal(prior: JukeboxTopPrior, t: int) -> None:
    codes = torch.randint(0, SMALL_PRIOR.bins, (1, 130),
                          generator=torch.Generator().manual_seed(t))
    changed = codes.clone()
    changed[0, t] = (codes[0, t] + 1) % SMALL_PRIOR.bins
    with torch.no_grad():
        before, after = prior(codes, 4), prior(changed, 4)
    # position t holds code t-1: code t reaches positions > t only
    torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=1e-6)
    if t + 1 < 130:
        assert (after[:, t + 1:] - before[:, t + 1:]).abs().max() > 1e-3


def test_prior_layer_argument(prior: JukeboxTopPrior) -> None:
    codes = torch.randint(0, SMALL_PRIOR.bins, (1, 100))
    with torch.no_grad():
        two, three = prior(codes, 2), prior(codes, 3)
        block = prior.prior.transformer._attn_mods[2]
        torch.testing.assert_close(block(two), three, rtol=0, atol=0)
    assert (two - three).abs().max() > 1e-3
    for bad in (0, 5):
        with pytest.raises(ValueError, match="layer"):
            prior(codes, bad)
    with pytest.raises(ValueError, match="length"):
        prior(torch.zeros(1, SMALL_PRIOR.n_ctx + 1, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="codes"):
        prior(torch.full((1, 4), SMALL_PRIOR.bins), 1)


def test_prior_full_context_and_half_precision(prior: JukeboxTopPrior) -> None:
    codes = torch.randint(0, SMALL_PRIOR.bins, (1, SMALL_PRIOR.n_ctx))
    with torch.no_grad():
        full = prior(codes, 4)
        half = prior(codes, 4, dtype=torch.float16)
    assert full.shape == (1, 256, 48)
    assert half.dtype == torch.float16
    scale = full.abs().max()
    assert (half.float() - full).abs().max() < 0.05 * scale
