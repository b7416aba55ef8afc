"""The build's synthesis phase: bring the store's EDGE pseudo-motions up to date.

    edge.synthesis.music --one synthesize-track per new or changed track (Ray)-->
        <store>/pseudo-motions/ (AIST++ layout), planned next to the inputs by build-dataset

Tracks are content-addressed: a track's record key covers its bytes, the checkpoint and the
sampling settings, so a re-run samples only what is new or changed, and drops the
pseudo-motions of tracks removed from a folder that still has music. Anything that stops the
whole phase (a configured checkpoint that is missing, features that cannot be computed, no
music folder) is one failure, ``inputs/synthesis``, and keeps the pseudo-motions made so far.
Without a configured checkpoint and before `dancegen edge train` has written one into the
store, the phase is skipped with one warning (the rest of the build goes on).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from prefect import get_run_logger

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.flows.fanout import run_per_track
from dancegen.storage.aistpp import AistppInputs
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.edge_checkpoint import EdgeRun
from dancegen.storage.input_facts import InputFacts
from dancegen.storage.location import StoreLocation, file_version
from dancegen.storage.pseudo_motions import PseudoMotionRoot, music_files
from dancegen.tasks.edge_data import check_feature_backend, features_token
from dancegen.tasks.edge_synthesis import TrackUnit, synthesize_track, track_key
from dancegen.tasks.jukebox_features import store_cache


@dataclass
class SynthesisOutcome:
    """What the phase did, for the build summary; ``root`` is None without pseudo-motions."""

    root: str | None = None
    synthesized: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # unit id -> reason


def resolve_under(root: AistppInputs, location: str) -> str:
    """A configured location: as given when absolute or a URL, else under the inputs root."""
    if "://" in location or location.startswith("/"):
        return location
    return root.location.child(location).url


def _blocker(source: AistppInputs, config: DancegenConfig, checkpoint: str,
             music_root: str) -> str | None:
    """Why no track can be sampled at all, or None."""
    try:
        check_feature_backend(source, config)
    except InputError as error:
        return str(error)
    if file_version(checkpoint) is None:
        return f"EDGE checkpoint not found: {checkpoint} (edge.synthesis.checkpoint)"
    if not music_files(music_root):  # a mistyped folder must not delete what exists
        return f"no audio files in {music_root}"
    return None


def _track_units(dataset: DatasetStore, inputs: AistppInputs, pseudo: PseudoMotionRoot,
                 music_root: str,
                 checkpoint: str, scalings: tuple[float | None, float | None],
                 config: DancegenConfig, outcome: SynthesisOutcome) -> list[TrackUnit]:
    """Tracks whose pseudo-motion is missing or stale; drops tracks gone from the folder
    (their pseudo-motions and their failure records)."""
    token = file_version(checkpoint) or ""
    features = features_token(inputs, config)
    cache = store_cache(dataset.store.url, inputs, config).url if features else None
    records, units, wanted = pseudo.records(), [], set()
    music = StoreLocation.parse(music_root)
    # a track's digest is kept with its listed version: only new or changed music is read
    facts, versions = InputFacts.load(dataset.store, music.url), music.listed_versions()
    for name in music_files(music_root):
        known = facts.get(name, versions.get(name))
        sha = known["sha256"] if known else hashlib.sha256(music.read_bytes(name) or b""
                                                           ).hexdigest()
        facts.put(name, versions.get(name), sha256=sha)
        key = track_key(sha, token, scalings, features, config)
        unit = TrackUnit(inputs.location.url, music.url, name, sha, pseudo.url, checkpoint,
                         *scalings, key, cache)
        wanted.add(unit.music_id)
        if records.get(unit.music_id, {}).get("key") == key:
            outcome.skipped += 1
        else:
            units.append(unit)
    facts.save(set(versions))
    for music_id in set(records) - wanted:
        pseudo.remove(music_id)
    for unit_id in dataset.failures():
        if unit_id.startswith("synthesis/") and unit_id.removeprefix("synthesis/") not in wanted:
            dataset.clear_failure(unit_id)
    return units


def _keeping_existing(pseudo: PseudoMotionRoot, outcome: SynthesisOutcome) -> SynthesisOutcome:
    """The outcome of a phase that samples nothing: the pseudo-motions made so far stay."""
    outcome.root = pseudo.url if pseudo.records() else None
    return outcome


def synthesize_pseudo_motions(dataset: DatasetStore, source: AistppInputs,
                              median_scaling: float | None,
                              config: DancegenConfig) -> SynthesisOutcome:
    """Sample every new or changed track of ``edge.synthesis.music`` on Ray workers."""
    synthesis, outcome = config.edge.synthesis, SynthesisOutcome()
    if synthesis.music is None:
        return outcome
    logger = get_run_logger()
    pseudo = PseudoMotionRoot(dataset.store)
    music_root = resolve_under(source, synthesis.music)
    checkpoint = (resolve_under(source, synthesis.checkpoint) if synthesis.checkpoint
                  else EdgeRun(dataset.store, config.edge.run_name).checkpoint_url)
    if synthesis.checkpoint is None and file_version(checkpoint) is None:
        # nothing configured, nothing trained into this store yet (a first build): the rest of
        # the dataset is built; a configured checkpoint that is missing stays an error below
        logger.warning("no EDGE checkpoint in the store yet (%s): building without new "
                       "pseudo-motions; run `dancegen edge train` and build again to add them",
                       checkpoint)
        return _keeping_existing(pseudo, outcome)
    blocker = _blocker(source, config, checkpoint, music_root)
    if blocker is not None:  # synthesis fails alone; finished pseudo-motions stay in the build
        outcome.failures["inputs/synthesis"] = blocker
        return _keeping_existing(pseudo, outcome)
    units = _track_units(dataset, source, pseudo, music_root, checkpoint,
                         (synthesis.smpl_scaling, median_scaling), config, outcome)
    logger.info("pseudo-motions: %d tracks to synthesise, %d up to date", len(units),
                outcome.skipped)
    results = run_per_track(units, synthesize_track, "synthesis", config, dataset,
                            outcome.failures, "synthesis")
    for unit, result in results:
        outcome.synthesized += 1
        logger.info("%s: %.1f s of music -> %d frames (%d windows) in %.1f s",
                    unit.music_file, result.music_seconds, result.frames, result.windows,
                    result.seconds)
    outcome.root = pseudo.url if pseudo.finalize(source) else None
    return outcome
