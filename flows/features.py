"""The build's feature phase: Jukebox features of every track the segments use, once per track.

    segments' music (inputs + pseudo-motions) --one extract-jukebox per uncached track (Ray)-->
        <store>/cache/jukebox/<key>/<sha256>.npy  --the jukebox stage cuts segments out of it

Runs when the ``jukebox`` stage is configured. Tracks are found by content hash: music shared
by many sequences, or seen in an earlier build, is extracted once. Missing weights stop the
phase (the stage then records ``inputs/jukebox-shared`` and is skipped); a track that fails is
``jukebox/<sha>``, and the jukebox shards holding its segments fail with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import get_run_logger

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.flows.fanout import run_per_track
from dancegen.storage.aistpp import InputRoots
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.feature_cache import FeatureCache
from dancegen.storage.segments import Segment
from dancegen.tasks.jukebox_features import (
    FeatureUnit,
    cache_key,
    extract_track,
    weights_of,
)


@dataclass
class FeatureOutcome:
    """What the phase did; ``cache_url`` is None when the stage is off or blocked."""

    cache_url: str | None = None
    extracted: int = 0
    cached: int = 0
    failures: dict[str, str] = field(default_factory=dict)


def extract_jukebox_features(dataset: DatasetStore, roots: InputRoots, segments: list[Segment],
                             config: DancegenConfig) -> FeatureOutcome:
    """Extract the features of every track the segments use that the cache lacks."""
    outcome = FeatureOutcome()
    if "jukebox" not in config.stages:
        return outcome
    try:
        vqvae_url, prior_url = weights_of(roots.primary, config.jukebox)
        cache = FeatureCache(dataset.store, "jukebox", cache_key(roots.primary, config))
    except InputError:
        return outcome  # the stage's shared digest records why, and the stage is skipped
    outcome.cache_url = cache.url
    tracks: dict[str, Segment] = {}
    for segment in segments:
        tracks.setdefault(segment.music_sha256, segment)
    for unit_id in dataset.failures():  # tracks no longer used by any segment
        if unit_id.startswith("jukebox/") and not any(
                sha.startswith(unit_id.removeprefix("jukebox/")) for sha in tracks):
            dataset.clear_failure(unit_id)
    units = []
    for sha, segment in sorted(tracks.items()):
        if cache.has(sha):
            outcome.cached += 1
            continue
        root = roots.of(segment).location.url
        units.append(FeatureUnit(root, segment.music_file, sha, vqvae_url, prior_url, cache.url))
    logger = get_run_logger()
    logger.info("Jukebox features: %d tracks to extract, %d cached", len(units), outcome.cached)
    results = run_per_track(units, extract_track, "jukebox_extract", config, dataset,
                            outcome.failures, "features")
    for unit, result in results:
        outcome.extracted += 1
        logger.info("%s: %.1f s of music -> %d frames in %.1f s (%.2f s per s of music)",
                    unit.music_file, result.music_seconds, result.frames, result.seconds,
                    result.seconds / max(result.music_seconds, 1e-9))
    return outcome
