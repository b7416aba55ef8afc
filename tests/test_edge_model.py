"""EDGE's DanceDecoder and diffusion: key layout, checkpoint loading, guidance, sampling."""

from __future__ import annotations

import io
import sys
import types

import pytest
import torch

from dancegen.errors import InputError
from dancegen.models.edge import DanceDecoder, EdgeModelConfig
from dancegen.models.edge_diffusion import (
    EdgeDiffusion,
    cosine_betas,
    ddim_timesteps,
    ema_update,
)
from dancegen.models.edge_normalizer import MinMaxNormalizer
from dancegen.storage.edge_checkpoint import (
    EdgeCheckpoint,
    load_checkpoint,
    save_checkpoint,
)

TINY = EdgeModelConfig(cond_feature_dim=35, seq_len=150, latent_dim=32, ff_size=48, num_layers=2,
                       num_heads=4, dropout=0.0)


def _attention(prefix: str) -> list[str]:
    return [f"{prefix}.in_proj_weight", f"{prefix}.in_proj_bias", f"{prefix}.out_proj.weight",
            f"{prefix}.out_proj.bias"]


def _wb(*prefixes: str) -> list[str]:
    return [f"{p}.{w}" for p in prefixes for w in ("weight", "bias")]


def edge_keys(num_layers: int) -> set[str]:
    """DanceDecoder's state-dict keys, written out by hand from EDGE's model/model.py."""
    keys = ["rotary.freqs", "null_cond_embed", "null_cond_hidden"]
    keys += _wb("time_mlp.1", "to_time_cond.0", "to_time_tokens.0", "norm_cond",
                "input_projection", "cond_projection", "non_attn_cond_projection.0",
                "non_attn_cond_projection.1", "non_attn_cond_projection.3", "final_layer")
    for i in range(2):  # the music encoder: two TransformerEncoderLayers sharing the rotary
        p = f"cond_encoder.{i}"
        keys += [*_attention(f"{p}.self_attn"), f"{p}.rotary.freqs"]
        keys += _wb(f"{p}.linear1", f"{p}.linear2", f"{p}.norm1", f"{p}.norm2")
    for i in range(num_layers):
        p = f"seqTransDecoder.stack.{i}"
        keys += _attention(f"{p}.self_attn") + _attention(f"{p}.multihead_attn")
        keys += [f"{p}.rotary.freqs"]
        keys += _wb(f"{p}.linear1", f"{p}.linear2", f"{p}.norm1", f"{p}.norm2", f"{p}.norm3",
                    f"{p}.film1.block.1", f"{p}.film2.block.1", f"{p}.film3.block.1")
    return set(keys)


def test_state_dict_has_edges_keys_and_shapes() -> None:
    model = DanceDecoder(EdgeModelConfig.paper(4800))
    state = model.state_dict()
    assert set(state) == edge_keys(8)
    assert state["input_projection.weight"].shape == (512, 151)
    assert state["cond_projection.weight"].shape == (512, 4800)
    assert state["null_cond_embed"].shape == (1, 150, 512)
    assert state["time_mlp.1.weight"].shape == (2048, 512)
    assert state["to_time_tokens.0.weight"].shape == (1024, 2048)
    assert state["seqTransDecoder.stack.7.film3.block.1.weight"].shape == (1024, 512)
    assert state["cond_encoder.0.linear1.weight"].shape == (1024, 512)
    assert state["rotary.freqs"].shape == (256,)
    # EDGE's published model: 8 layers x 512 wide, ~50M parameters with Jukebox features
    assert 45e6 < sum(p.numel() for p in model.parameters()) < 56e6


class _EdgeMinMaxScaler:  # what EDGE's dataset/scaler.py pickles (attributes only)
    pass


class _EdgeNormalizerClass:
    pass


@pytest.fixture()
def edge_modules():
    """EDGE's ``dataset.preprocess``/``dataset.scaler`` modules, present only while saving."""
    package, preprocess, scaler = (types.ModuleType(n) for n in
                                   ("dataset", "dataset.preprocess", "dataset.scaler"))
    _EdgeMinMaxScaler.__module__, _EdgeMinMaxScaler.__qualname__ = "dataset.scaler", "MinMaxScaler"
    _EdgeNormalizerClass.__module__ = "dataset.preprocess"
    _EdgeNormalizerClass.__qualname__ = "Normalizer"
    scaler.MinMaxScaler, preprocess.Normalizer = _EdgeMinMaxScaler, _EdgeNormalizerClass
    sys.modules.update({"dataset": package, "dataset.preprocess": preprocess,
                        "dataset.scaler": scaler})
    yield
    for name in ("dataset", "dataset.preprocess", "dataset.scaler"):
        sys.modules.pop(name, None)


def _edge_style_checkpoint(path, model: DanceDecoder, data: torch.Tensor) -> None:
    """A checkpoint.pt as EDGE's EDGE.py writes it (Normalizer object, Adan-less optimizer)."""
    scaler = _EdgeMinMaxScaler()
    low, high = data.reshape(-1, 151).min(0).values, data.reshape(-1, 151).max(0).values
    scaler.feature_range, scaler.copy, scaler.clip = (-1, 1), True, True
    scaler.scale_ = 2 / (high - low)
    scaler.min_ = -1 - low * scaler.scale_
    scaler.data_min_, scaler.data_max_, scaler.data_range_ = low, high, high - low
    scaler.n_samples_seen_ = data.shape[0] * data.shape[1]
    normalizer = _EdgeNormalizerClass()
    normalizer.scaler = scaler
    torch.save({"ema_state_dict": model.state_dict(), "model_state_dict": model.state_dict(),
                "optimizer_state_dict": {"state": {}, "param_groups": []},
                "normalizer": normalizer}, path)


def test_edge_checkpoint_loads_without_edge_code(tmp_path, edge_modules) -> None:
    torch.manual_seed(0)
    model = DanceDecoder(TINY)
    data = torch.randn(4, 150, 151) * 3
    _edge_style_checkpoint(tmp_path / "checkpoint.pt", model, data)
    for name in ("dataset", "dataset.preprocess", "dataset.scaler"):
        sys.modules.pop(name)  # loading must not need EDGE's classes

    loaded = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    # EDGE's file has no head count: 8 heads (EDGE's) is assumed, the rest comes from shapes
    assert loaded.model_config == EdgeModelConfig(
        cond_feature_dim=35, seq_len=150, latent_dim=32, ff_size=48, num_layers=2, num_heads=8)
    fresh = DanceDecoder(TINY)
    fresh.load_state_dict(loaded.ema_state, strict=True)
    x, cond, t = torch.randn(2, 150, 151), torch.randn(2, 150, 35), torch.tensor([3, 500])
    assert torch.equal(fresh.eval()(x, cond, t), model.eval()(x, cond, t))
    normalized = loaded.normalizer.normalize(data)
    assert normalized.min() >= -1 and normalized.max() <= 1
    assert torch.allclose(normalized.reshape(-1, 151).min(0).values, torch.tensor(-1.0),
                          atol=1e-5)
    assert torch.allclose(loaded.normalizer.unnormalize(normalized), data, atol=1e-4)
    assert loaded.step == 0


def test_dancegen_checkpoint_round_trip(tmp_path) -> None:
    model = DanceDecoder(TINY)
    normalizer = MinMaxNormalizer.fit(torch.randn(3, 150, 151))
    checkpoint = EdgeCheckpoint(TINY, model.state_dict(), model.state_dict(), normalizer,
                                {"state": {}, "param_groups": []}, {"step": 42, "fps": 30})
    save_checkpoint(checkpoint, str(tmp_path / "sub" / "checkpoint.pt"))
    loaded = load_checkpoint(str(tmp_path / "sub" / "checkpoint.pt"))
    assert loaded.model_config == TINY and loaded.step == 42
    assert all(torch.equal(loaded.ema_state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(loaded.normalizer.scale, normalizer.scale)


def test_checkpoint_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(InputError, match=r"EDGE checkpoint not found: .*nothing\.pt"):
        load_checkpoint(str(tmp_path / "nothing.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"garbage\.pt: not a readable EDGE checkpoint"):
        load_checkpoint(str(tmp_path / "garbage.pt"))
    torch.save({"model_state_dict": {}}, tmp_path / "partial.pt")
    with pytest.raises(InputError, match=r"partial\.pt: an EDGE checkpoint needs keys"):
        load_checkpoint(str(tmp_path / "partial.pt"))


def test_checkpoint_with_code_in_it_is_refused(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    buffer = io.BytesIO()
    torch.save({"ema_state_dict": {}, "model_state_dict": {}, "normalizer": Payload()}, buffer)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="not a readable EDGE checkpoint"):
        load_checkpoint(str(tmp_path / "evil.pt"))


def test_guidance_mixes_conditional_and_unconditional() -> None:
    torch.manual_seed(1)
    model = DanceDecoder(TINY).eval()
    x, cond, t = torch.randn(2, 150, 151), torch.randn(2, 150, 35), torch.tensor([10, 900])
    conditional = model(x, cond, t, cond_drop_prob=0.0)
    unconditional = model(x, cond, t, cond_drop_prob=1.0)
    assert not torch.allclose(conditional, unconditional)
    # without music the output cannot depend on the music
    assert torch.allclose(model(x, torch.randn_like(cond), t, cond_drop_prob=1.0), unconditional)
    assert torch.allclose(model.guided_forward(x, cond, t, 1.0), conditional, atol=1e-6)
    assert torch.allclose(model.guided_forward(x, cond, t, 2.0),
                          2 * conditional - unconditional, atol=1e-5)


def test_schedule_and_ddim_steps_match_edge() -> None:
    betas = cosine_betas(1000)
    assert betas.dtype == torch.float64 and len(betas) == 1000
    assert betas.max() <= 0.999 and betas[0] < 1e-4 and torch.all(betas[1:] >= betas[:-1] - 1e-12)
    pairs = ddim_timesteps(1000, 50)
    # linspace(-1, 999, 51) truncated: 999, 979, ..., 19, then -1 (the x0 step)
    assert len(pairs) == 50 and pairs[0] == (999, 979) and pairs[-1] == (19, -1)
    assert all(a > b for a, b in pairs)


def test_loss_is_edges_weighted_sum_and_trains() -> None:
    torch.manual_seed(2)
    diffusion = EdgeDiffusion(DanceDecoder(TINY))
    x0 = torch.rand(4, 150, 151) * 2 - 1
    cond = torch.randn(4, 150, 35)
    total, parts = diffusion.loss(x0, cond, t=torch.full((4,), 10))
    assert set(parts) == {"recon", "velocity", "fk", "foot"}
    assert torch.isclose(total, sum(parts.values()))
    total.backward()
    grads = [p.grad for p in diffusion.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_long_sampling_is_deterministic_and_bounded() -> None:
    torch.manual_seed(3)
    diffusion = EdgeDiffusion(DanceDecoder(TINY)).eval()
    cond = torch.randn(3, 150, 35)
    first = diffusion.sample_long(cond, steps=4, generator=torch.Generator().manual_seed(7))
    again = diffusion.sample_long(cond, steps=4, generator=torch.Generator().manual_seed(7))
    other = diffusion.sample_long(cond, steps=4, generator=torch.Generator().manual_seed(8))
    assert first.shape == (3, 150, 151) and torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.abs().max() <= 1.0
    with pytest.raises(ValueError, match="even length"):
        diffusion.sample_long(torch.randn(2, 149, 35), steps=2)


def test_ema_update_moves_towards_the_model() -> None:
    average, model = DanceDecoder(TINY), DanceDecoder(TINY)
    before = average.final_layer.weight.clone()
    ema_update(average, model, 0.9)
    expected = 0.9 * before + 0.1 * model.final_layer.weight
    assert torch.allclose(average.final_layer.weight, expected)
