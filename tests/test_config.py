"""Config: both shipped files load with the paper's values; bad input names the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.config import load_config
from dancegen.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_paper_config_has_the_papers_values() -> None:
    cfg = load_config(REPO / "configs/paper.yaml")
    assert (cfg.render.width, cfg.render.height) == (640, 640)
    assert cfg.dataset.segment_seconds == 5.0 and cfg.dataset.segment_frames == 150
    t = cfg.training
    assert t.optimizer == "adamw" and t.learning_rate == pytest.approx(1e-5)
    assert (t.stage1.steps, t.stage1.batch_size, t.stage1.frames) == (20000, 24, 75)
    assert (t.stage2.steps, t.stage2.batch_size, t.stage2.frames) == (60000, 32, 1)
    assert (t.stage3.steps, t.stage3.batch_size, t.stage3.frames) == (20000, 8, 24)


def test_paper_config_has_edges_values() -> None:
    edge = load_config(REPO / "configs/paper.yaml").edge
    assert edge.features == "jukebox"  # EDGE's release is Jukebox-conditioned
    assert (edge.model.latent_dim, edge.model.ff_size, edge.model.num_layers,
            edge.model.num_heads, edge.model.dropout) == (512, 1024, 8, 8, 0.1)
    d = edge.diffusion
    assert (d.timesteps, d.cond_drop_prob, d.guidance_weight, d.sampling_steps, d.eta) == (
        1000, 0.25, 2.0, 50, 1.0)
    assert edge.train.window_stride_seconds == 0.5 and edge.train.ema_decay == 0.9999


@pytest.mark.parametrize("override, field", [
    ("edge.model.num_heads=5", "edge.model"),            # 512 is not divisible by 5
    ("edge.features=mfcc", "edge.features"),
    ("edge.diffusion.cond_drop_prob=1.5", "edge.diffusion.cond_drop_prob"),
])
def test_bad_edge_settings_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(REPO / "configs/paper.yaml", [override])


def test_local_config_is_small_and_local() -> None:
    cfg = load_config(REPO / "configs/local-cpu.yaml")
    assert cfg.ray.address is None and cfg.ray.num_cpus == 2
    assert cfg.render.width <= 256 and cfg.storage.shard_segments == 4


def test_overrides_are_dotted_and_typed() -> None:
    cfg = load_config(REPO / "configs/local-cpu.yaml",
                      ["storage.shard_segments=2", "ray.address=auto", "dataset.version=v9"])
    assert cfg.storage.shard_segments == 2
    assert cfg.ray.address == "auto" and cfg.dataset.version == "v9"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("storage.shard_segments=0", "storage.shard_segments"),
        ("render.width=100", "render.width"),          # not a multiple of 64
        ("storage.shard_size=3", "storage.shard_size"),  # unknown key: typo must not pass
        ("training.stage2.batch_size=-1", "training.stage2.batch_size"),
        ("stages=[motion, video]", "stages"),
    ],
)
def test_invalid_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "configs/local-cpu.yaml", [override])
    message = str(info.value)
    assert message.startswith("invalid config") and f": {field}" in message
    assert "\n" not in message


def test_whole_frame_windows_are_required() -> None:
    with pytest.raises(ConfigError, match="whole frame count"):
        load_config(REPO / "configs/local-cpu.yaml", ["dataset.segment_seconds=0.51"])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(REPO / "configs/local-cpu.yaml", ["storage.shard_segments"])


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dataset", "build", "--inputs", str(tmp_path),
                                      "--out", str(tmp_path / "s"), "--set", "ray.max_in_flight=0"])
    assert result.exit_code == 2
    assert "invalid config" in result.output and "ray.max_in_flight" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("version", ["..", "a..b", "../v1", ".hidden", "v/1", "x" * 129])
def test_a_dataset_version_is_a_plain_folder_name(version: str) -> None:
    with pytest.raises(ConfigError, match="dataset"):
        load_config("configs/local-cpu.yaml", [f"dataset.version={version}"])


def test_a_store_refuses_a_version_that_leaves_it(tmp_path: Path) -> None:
    from dancegen.errors import InputError
    from dancegen.storage.dataset import DatasetStore

    with pytest.raises(InputError, match=r"dataset version '\.\./v1' is not a safe name"):
        DatasetStore(str(tmp_path / "store.zarr"), "../v1")
    assert DatasetStore(str(tmp_path / "store.zarr"), "v2.1").version == "v2.1"
