"""`dancegen dataset plan --gpus N`: regeneration wall times from per-segment costs."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.config import load_config
from dancegen.tasks.stage_cost import StageCost, regeneration_report

REPO = Path(__file__).resolve().parents[1]


def test_wall_times_follow_the_resources_and_the_new_music() -> None:
    config = load_config(REPO / "configs/paper.yaml")  # 10,940 segments; render 0.33 GPU
    costs = [StageCost("render", 2.0, 5.0), StageCost("motion", 0.01, 0.0)]
    lines = regeneration_report(config, costs, gpus=8, cpus=80,
                                jukebox_seconds_per_music_second=1.0)
    table = {line.split()[0]: line.split()[1:] for line in lines[2:-2]}
    # render: 8 / 0.33 = 24 workers; 10,940 x 2 s / 24 = 15.2 min; 10 % new music is 720
    # pseudo-motion segments: 720 x 2 / 24 = 1.0 min
    assert table["render"] == ["2.000", "24", "15.2", "min", "1.0", "min"]
    # extraction: 5 s of music per segment at 1 s/s, one GPU each: 10,940 x 5 / 8 = 1.9 h
    assert table["jukebox_extract"] == ["5.000", "8", "1.9", "h", "7.5", "min"]
    # both share the GPUs: (10,940 x 2 x 0.33 + 10,940 x 5 x 1) / 8 s = 2.2 h
    assert table["total"] == ["2.2", "h", "8.5", "min"]


def test_the_cli_measures_each_stage_and_prints_the_table() -> None:
    result = CliRunner().invoke(app, [
        "dataset", "plan", "--no-measure", "--gpus", "2", "--cpus", "4",
        "--set", "render.width=64", "--set", "render.height=64"])
    assert result.exit_code == 0, result.output
    assert "regeneration on 2 GPUs and 4 CPUs" in result.output
    for stage in ("motion", "music", "edge_repr", "render"):
        row = re.search(rf"^\s+{stage}\s+([\d.]+)\s+(\d+)\s", result.output, re.M)
        assert row and float(row.group(1)) > 0 and int(row.group(2)) == 4, stage
    assert re.search(r"^\s+total\s+[\d.]+ (min|h)", result.output, re.M)
