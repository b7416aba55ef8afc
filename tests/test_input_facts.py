"""Planning keeps what it learnt of each input file, keyed on the file's version: a rebuild
reads only new or changed files (storage/input_facts.py), and a bad file is never kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dancegen.config import DancegenConfig
from dancegen.fixtures import write_fixtures
from dancegen.fixtures.layout import scaled_sequences
from dancegen.storage.input_facts import InputFacts
from dancegen.storage.location import StoreLocation
from dancegen.tasks.plan import plan_segments_from


def plan(inputs: Path, store: StoreLocation, config: DancegenConfig):
    return plan_segments_from(str(inputs), config, InputFacts.load(store, str(inputs)))


def test_a_replan_reads_only_changed_files(inputs_copy: Path, tmp_path: Path,
                                           config: DancegenConfig) -> None:
    store = StoreLocation.parse(tmp_path / "store")
    first = plan(inputs_copy, store, config)
    assert first.files_read == 11  # six motions, five musics (two sequences share one)
    again = plan(inputs_copy, store, config)
    assert (again.files_read, again.files_known) == (0, first.files_read + first.files_known)
    assert again.segments == first.segments and again.smpl_scalings == first.smpl_scalings

    music = sorted((inputs_copy / "music").glob("*.wav"))[0]
    data = bytearray(music.read_bytes())
    data[-2000:] = bytes(2000)  # the end of the track goes silent: same size, new content
    music.write_bytes(bytes(data))
    changed = plan(inputs_copy, store, config)
    assert changed.files_read == 1
    moved = {s.id for s in changed.segments} & {s.id for s in first.segments
                                                if s.music_file == f"music/{music.name}"}
    assert moved and all(s.music_sha256 != f.music_sha256 for s in changed.segments
                         for f in first.segments if s.id == f.id and s.id in moved)


def test_a_bad_file_is_read_and_refused_every_time(inputs_copy: Path, tmp_path: Path,
                                                   config: DancegenConfig) -> None:
    store = StoreLocation.parse(tmp_path / "store")
    motion = sorted((inputs_copy / "motions").glob("*.pkl"))[0]
    motion.write_bytes(b"not a pickle")
    for _ in range(2):
        result = plan(inputs_copy, store, config)
        assert f"inputs/{motion.stem}" in result.failed
    assert result.files_read == 1  # only the bad one, again


def test_unreadable_facts_only_cost_a_full_read(inputs_copy: Path, tmp_path: Path,
                                                config: DancegenConfig) -> None:
    store = StoreLocation.parse(tmp_path / "store")
    first = plan(inputs_copy, store, config)
    for kept in (tmp_path / "store/_input_facts").glob("*.json"):
        kept.write_text("{not json")
    again = plan(inputs_copy, store, config)
    assert again.files_read == first.files_read and again.segments == first.segments


def test_scaled_fixtures_have_unique_aistpp_names_and_the_asked_size(tmp_path: Path,
                                                                     config: DancegenConfig
                                                                     ) -> None:
    sequences = scaled_sequences(130, 16.0)
    names = [s.name for s in sequences]
    assert len(set(names)) == 130 and len({s.music for s in sequences}) == 60
    assert {s.split for s in sequences} == {"train", "val", "test"}
    inputs = write_fixtures(tmp_path / "in", sequences[:12])
    planned = plan_segments_from(str(inputs), config)
    assert len(planned.segments) == 12 * 3 and not planned.failed  # 16 s: three 5-s windows
    with pytest.raises(ValueError):
        scaled_sequences(0, 10.0)
    assert np.isclose(planned.median_smpl_scaling, planned.smpl_scalings[0])
