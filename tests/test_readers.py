"""Every array of the contract opens in the readers a user points at a store: tensorstore's
zarr3 driver, xarray and plain zarr; per-frame arrays are chunked by a few frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import xarray as xr
import zarr
from storage_helpers import layout, make_segments

from dancegen.config import DancegenConfig, load_config
from dancegen.storage import ARRAYS, DatasetStore, dims_for
from dancegen.storage.contract import SEGMENT_AXIS

REPO = Path(__file__).resolve().parents[1]
ALL_STAGES = sorted({spec.stage for spec in ARRAYS.values()})
SEGMENTS, WRITTEN = 6, 4  # shard 0 (4 rows) written, shard 1 left empty


@pytest.fixture(scope="module")
def small() -> DancegenConfig:
    """Every stage at a small size: 2-s segments (60 frames), 64 px, 16-px heatmaps."""
    return load_config(REPO / "configs/local-cpu.yaml", [
        "edge.synthesis.music=null", "dataset.segment_seconds=2.0", "dataset.stride_seconds=2.0",
        "render.width=64", "render.height=64", "render.heatmap_size=16",
        "music.audio_sample_rate=8000"])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small: DancegenConfig
          ) -> tuple[Path, dict[str, np.ndarray]]:
    """A version with every array, shard 0 written with random data."""
    path = tmp_path_factory.mktemp("readers") / "s.zarr"
    dataset = DatasetStore(path, "v1")
    dataset.prepare(make_segments(SEGMENTS), ALL_STAGES, layout(small))
    rng, dims, written = np.random.default_rng(0), dims_for(small), {}
    for stage in ALL_STAGES:
        data = {name: (rng.random((WRITTEN, *spec.resolve(dims))) * 100).astype(spec.dtype)
                for name, spec in ARRAYS.items() if spec.stage == stage}
        dataset.write_shard(stage, 0, data, {"key": "k"})
        written.update(data)
    return path, written


def test_dimension_names_are_unique_and_consistent_across_arrays(small: DancegenConfig) -> None:
    sizes: dict[str, int] = {}
    dims = dims_for(small)
    for spec in ARRAYS.values():
        names = spec.dimension_names
        assert len(set(names)) == len(names), spec.name
        assert names[0] == SEGMENT_AXIS and len(names) == len(spec.shape) + 1
        for name, size in zip(names[1:], spec.resolve(dims), strict=True):
            assert sizes.setdefault(name, size) == size, f"{name} has two sizes ({spec.name})"


def test_tensorstore_reads_every_array(store: tuple[Path, dict[str, np.ndarray]],
                                       small: DancegenConfig) -> None:
    path, written = store
    for name, spec in ARRAYS.items():
        array = ts.open({"driver": "zarr3", "kvstore": f"file://{path}/v1/{name}"}).result()
        assert tuple(array.domain.labels) == spec.dimension_names
        assert tuple(array.shape) == (SEGMENTS, *spec.resolve(dims_for(small)))
        np.testing.assert_array_equal(array[0:WRITTEN].read().result(), written[name])
        np.testing.assert_array_equal(array[2, 7].read().result() if spec.per_frame
                                      else array[2].read().result(),
                                      written[name][2, 7] if spec.per_frame else written[name][2])


def test_xarray_opens_every_group(store: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, written = store
    for group in sorted({name.split("/")[0] for name in ARRAYS}):
        opened = xr.open_zarr(path, group=f"v1/{group}", zarr_format=3, consolidated=False,
                              mask_and_scale=False)
        for name, spec in ARRAYS.items():
            if name.startswith(f"{group}/"):
                variable = opened[name.split("/", 1)[1]]
                assert variable.dims == spec.dimension_names
                np.testing.assert_array_equal(
                    variable.isel({SEGMENT_AXIS: slice(0, WRITTEN)}).values, written[name])


def test_plain_zarr_chunks_by_frames(store: tuple[Path, dict[str, np.ndarray]],
                                     small: DancegenConfig) -> None:
    path, written = store
    group = zarr.open_group(str(path / "v1"), mode="r")
    chunk, dims = small.storage.chunk_frames, dims_for(small)
    for name, spec in ARRAYS.items():
        array = group[name]
        per_segment = spec.resolve(dims)
        assert array.shards == (small.storage.shard_segments, *per_segment)
        assert array.chunks == ((1, chunk, *per_segment[1:]) if spec.per_frame
                                else (1, *per_segment))
        assert tuple(array.metadata.dimension_names) == spec.dimension_names
        np.testing.assert_array_equal(array[1, 3:9] if spec.per_frame else array[1],
                                      written[name][1, 3:9] if spec.per_frame
                                      else written[name][1])
    # an unwritten shard reads as fill values, never as data
    assert np.isnan(group["maps/depth"][WRITTEN]).all()
