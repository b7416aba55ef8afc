"""Storage owns the data layout: the Zarr v3 data contract, stores, segment tables, inputs."""

from dancegen.storage.contract import ARRAYS, ArraySpec, arrays_of, dims_for
from dancegen.storage.dataset import DatasetStore, Layout
from dancegen.storage.location import StoreLocation
from dancegen.storage.segments import Segment

__all__ = [
    "ARRAYS",
    "ArraySpec",
    "DatasetStore",
    "Layout",
    "Segment",
    "StoreLocation",
    "arrays_of",
    "dims_for",
]
