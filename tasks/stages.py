"""Dataset stages: what each computes for one shard, and what its result depends on.

A stage turns the segments of one shard into the contract arrays it owns
(``storage.contract.arrays_of(stage)``). Its *key* hashes everything the result depends on:
the segments' ids, windows and input-file digests it reads, the config sections it uses and
the code version. A shard whose completion record carries the current key is skipped, so a
changed music file recomputes exactly the shards whose segments use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np

import dancegen
from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.models.motion_repr import encode_edge151
from dancegen.storage.aistpp import CAMERA_MAPPING, InputRoots
from dancegen.storage.contract import JUKEBOX_DIM
from dancegen.storage.segments import Segment
from dancegen.tasks.music_features import baseline_features, edge_start_bpm, feature_sample_rate
from dancegen.tasks.segment_inputs import audio_window, motion_window, resample_audio

ComputeFn = Callable[[list[Segment], InputRoots, DancegenConfig], dict[str, np.ndarray]]
SharedFn = Callable[[InputRoots, DancegenConfig], str]
SequenceFn = Callable[[InputRoots, DancegenConfig], dict[str, str]]


@dataclass(frozen=True)
class SharedInputs:
    """What a stage reads besides each segment's own files: one digest of what every segment
    reads (the body model, the camera setting files) and one per sequence (its camera setting
    and video), so that adding a sequence to cameras/mapping.txt changes no other shard."""

    digest: str = ""
    per_sequence: Mapping[str, str] = field(default_factory=dict)
SetupFn = Callable[[InputRoots, DancegenConfig], ComputeFn]
IdentityFn = Callable[[InputRoots, DancegenConfig], Hashable]


def compute_motion(
    segments: list[Segment], roots: InputRoots, config: DancegenConfig
) -> dict[str, np.ndarray]:
    """SMPL poses/trans/scaling of each segment at the dataset fps."""
    frames, fps = config.dataset.segment_frames, config.dataset.fps
    loaded = {}
    for s in segments:  # each motion file once per shard
        if (s.source, s.motion_file) not in loaded:
            loaded[s.source, s.motion_file] = roots.of(s).load_motion(s.motion_file)
    windows = [motion_window(loaded[s.source, s.motion_file], s.start_s, frames, fps)
               for s in segments]
    return {
        "motion/smpl_poses": np.stack([w.poses for w in windows]),
        "motion/smpl_trans": np.stack([w.trans for w in windows]),
        "motion/smpl_scaling": np.array([[w.scaling] for w in windows], dtype=np.float32),
    }


def compute_music(
    segments: list[Segment], roots: InputRoots, config: DancegenConfig
) -> dict[str, np.ndarray]:
    """Waveform, EDGE baseline features and beat flags of each segment."""
    data, music = config.dataset, config.music
    feature_rate = feature_sample_rate(data.fps, music.hop_length)
    tracks = {}
    for s in segments:  # decode each track once per shard
        if (s.source, s.music_file) not in tracks:
            audio, rate = roots.of(s).load_audio(s.music_file)
            tracks[s.source, s.music_file] = {
                "features": resample_audio(audio, rate, feature_rate),
                # decoded audio is in [-1, 1] (storage/audio.py refuses other tracks), but
                # resampling rings past full scale near clipped peaks: the contract's range
                "store": np.clip(resample_audio(audio, rate, music.audio_sample_rate), -1, 1),
            }
    waves, features = [], []
    for segment in segments:
        track = tracks[segment.source, segment.music_file]
        music_id = segment.music_file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        clip = audio_window(track["features"], feature_rate, segment.start_s, data.segment_seconds)
        features.append(
            baseline_features(
                clip, data.fps, data.segment_frames, music.hop_length,
                start_bpm=edge_start_bpm(music_id), tightness=music.tightness,
            )
        )
        waves.append(audio_window(track["store"], music.audio_sample_rate, segment.start_s,
                                  data.segment_seconds))
    stacked = np.stack(features)
    return {
        "music/audio": np.stack(waves),
        "music/baseline": stacked,
        "music/beats": stacked[..., -1].astype(np.uint8),
    }


def compute_jukebox(
    segments: list[Segment], roots: InputRoots, config: DancegenConfig
) -> dict[str, np.ndarray]:
    """Jukebox features of each segment, cut from its track's cached features."""
    from dancegen.storage.feature_cache import FeatureCache
    from dancegen.tasks.jukebox_features import window_features

    if roots.jukebox_cache is None:
        raise InputError("the jukebox stage needs the build's Jukebox feature cache")
    cache, tracks = FeatureCache.at(roots.jukebox_cache), {}
    data = config.dataset
    out = []
    for s in segments:
        if s.music_sha256 not in tracks:
            tracks[s.music_sha256] = cache.get(s.music_sha256)
        track = tracks[s.music_sha256]
        if track is None:
            raise InputError(f"no Jukebox features for {s.music_file} ({s.music_sha256[:12]}): "
                             "its extraction failed (see failures jukebox/...)")
        if track.shape[1] != JUKEBOX_DIM:
            raise InputError(f"Jukebox features are {track.shape[1]}-d; the data contract's "
                             f"music/jukebox is {JUKEBOX_DIM}-d (a 5B-width prior)")
        out.append(window_features(track, s.start_s, data.segment_frames, data.fps, s.id))
    return {"music/jukebox": np.stack(out).astype(np.float16)}


def jukebox_shared_digest(roots: InputRoots, config: DancegenConfig) -> str:
    """The weights and extraction settings (the feature cache's key)."""
    from dancegen.tasks.jukebox_features import cache_key

    return cache_key(roots.primary, config)


def compute_edge_repr(
    segments: list[Segment], roots: InputRoots, config: DancegenConfig
) -> dict[str, np.ndarray]:
    """EDGE's 151-d representation of each segment's motion (unnormalised; contacts by EDGE's
    rule), what EDGE trains on and M2PEnc-era readers can take without an SMPL body."""
    motion = compute_motion(segments, roots, config)
    encoded = encode_edge151(motion["motion/smpl_poses"], motion["motion/smpl_trans"],
                             motion["motion/smpl_scaling"][:, 0])
    return {"motion/edge151": encoded.numpy()}


@dataclass(frozen=True)
class Stage:
    """A dataset stage. Bump ``version`` whenever its output changes.

    A stage computes one shard with ``compute``, or, when it needs heavy state (a body model,
    a GL context), with what ``setup`` returns: a worker process runs ``setup`` once and then
    calls the result for shard after shard, until ``setup_identity`` (what that state is
    built from) changes.
    """

    name: str
    version: int
    segment_inputs: tuple[str, ...]   # Segment fields naming the inputs it reads
    config_sections: tuple[str, ...]  # DancegenConfig sections its output depends on
    compute: ComputeFn | None = None
    # digest of inputs shared by every segment (body model, cameras), computed once per build
    shared_inputs: SharedFn | None = None
    # digest per sequence of inputs outside the segment's own files (camera, video)
    sequence_inputs: SequenceFn | None = None
    setup: SetupFn | None = None
    setup_identity: IdentityFn | None = None

    def set_up(self, roots: InputRoots, config: DancegenConfig) -> ComputeFn:
        """What a worker calls per shard: ``setup``'s result, or ``compute`` itself."""
        if self.setup is not None:
            return self.setup(roots, config)
        assert self.compute is not None, f"stage {self.name} has neither compute nor setup"
        return self.compute

    def identity(self, roots: InputRoots, config: DancegenConfig) -> Hashable:
        """What the worker's set-up is built from (None: nothing, it never changes)."""
        return self.setup_identity(roots, config) if self.setup_identity else None

    def shared(self, roots: InputRoots, config: DancegenConfig) -> SharedInputs:
        """The stage's shared and per-sequence inputs (empty when it has none)."""
        return SharedInputs(
            self.shared_inputs(roots, config) if self.shared_inputs else "",
            self.sequence_inputs(roots, config) if self.sequence_inputs else {})

    @property
    def code_version(self) -> str:
        """Package version plus the stage's own version."""
        return f"dancegen-{dancegen.__version__}/{self.name}-v{self.version}"

    def inputs_hash(self, segments: list[Segment], shared: SharedInputs = SharedInputs()) -> str:
        """Digest of the segments and input files this stage reads."""
        rows = [[s.id, s.start_s, s.end_s, *(getattr(s, f) for f in self.segment_inputs)]
                for s in segments]
        if self.sequence_inputs:
            rows = [[*row, shared.per_sequence.get(s.sequence, "")]
                    for row, s in zip(rows, segments, strict=True)]
        return hashlib.sha256(json.dumps([shared.digest, rows]).encode()).hexdigest()

    def key(self, segments: list[Segment], config: DancegenConfig,
            shared: SharedInputs = SharedInputs()) -> dict[str, str]:
        """Inputs hash, config hash, code version and the combined key of one shard."""
        parts = {
            "inputs_hash": self.inputs_hash(segments, shared),
            "config_hash": config.section_hash(*self.config_sections),
            "code_version": self.code_version,
        }
        combined = "|".join(parts[k] for k in ("inputs_hash", "config_hash", "code_version"))
        return {**parts, "key": hashlib.sha256(combined.encode()).hexdigest()}


def render_shared_digest(roots: InputRoots, config: DancegenConfig) -> str:
    """The body model file and the camera setting files every rendered segment may use (not
    cameras/mapping.txt: which setting a sequence uses is in :func:`render_sequence_inputs`)."""
    from dancegen.storage.body_model import body_model_digest
    from dancegen.tasks.render_stage import resolve_body_model

    parts = [body_model_digest(resolve_body_model(roots.primary, config.render))]
    # the pseudo-motion root's cameras are a copy of the primary's most used setting, which
    # is hashed here already: leaving them out keeps AIST++ shards valid as tracks come and go
    inputs = roots.primary
    parts += [inputs.sha256(key) for key in inputs.camera_files() if key != CAMERA_MAPPING]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def render_sequence_inputs(roots: InputRoots, config: DancegenConfig) -> dict[str, str]:
    """Per sequence: its camera setting (cameras/mapping.txt's line) and its videos (name and
    size: too big to hash), so that adding a sequence or a video re-renders only its own."""
    inputs = roots.primary
    videos: dict[str, list[str]] = {}
    for name, size in inputs.video_listing():
        parts = name.removeprefix("videos/").removesuffix(".mp4").split("_")
        if len(parts) > 2:  # AIST++: gBR_sBM_c01_d04_mBR0_ch01 is sequence ..._cAll_...
            parts[2] = "cAll"
        videos.setdefault("_".join(parts), []).append(f"{name}:{size}")
    mapping = inputs.camera_mapping()
    return {sequence: "|".join([setting, *videos.get(sequence, [])])
            for sequence, setting in mapping.items()} | {
        sequence: "|".join(["", *entries]) for sequence, entries in videos.items()
        if sequence not in mapping}


def _setup_render(roots: InputRoots, config: DancegenConfig) -> ComputeFn:
    # imported on use: GL and the body model are only needed on render workers
    from dancegen.tasks.render_stage import setup_render

    return setup_render(roots, config)


def _render_identity(roots: InputRoots, config: DancegenConfig) -> Hashable:
    from dancegen.tasks.render_stage import render_setup_identity

    return render_setup_identity(roots, config)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("motion", 1, ("motion_sha256",), ("dataset",), compute_motion),
        Stage("music", 2, ("music_sha256",), ("dataset", "music"), compute_music),  # v2: clipped
        Stage("jukebox", 1, ("music_sha256",), ("dataset", "jukebox"), compute_jukebox,
              jukebox_shared_digest),
        Stage("edge_repr", 1, ("motion_sha256",), ("dataset",), compute_edge_repr),
        Stage("render", 2, ("motion_sha256",), ("dataset", "render"),  # v2: cameras per sequence
              shared_inputs=render_shared_digest, sequence_inputs=render_sequence_inputs,
              setup=_setup_render,
              setup_identity=_render_identity),
    )
}
