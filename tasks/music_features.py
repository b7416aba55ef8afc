"""EDGE's baseline music features: 35 numbers per frame at the motion frame rate, from librosa.

Faithful to EDGE's ``data/audio_extraction/baseline_features.py``: audio resampled to
``fps * hop`` Hz (15360 for 30 fps) so that one hop of 512 samples is one motion frame, then
``onset envelope (1) | MFCC (20) | chroma_cens (12) | onset peak one-hot (1) | beat one-hot (1)``,
computed on each 5-s window on its own (as EDGE computes on its slices) and cut to the window's
frame count. Beat tracking starts from the tempo that EDGE reads off the AIST++ music name.
"""

from __future__ import annotations

import re

import librosa
import numpy as np

# EDGE derives the tempo of an AIST++ track from its music id (e.g. "mBR3" -> 110 bpm).
_TEMPO_10_GENRES = frozenset({"BR", "PO", "LO", "MH", "LH", "WA", "KR", "JS", "JB"})
_MUSIC_ID = re.compile(r"m([A-Z]{2})(\d)")


def edge_start_bpm(music_id: str) -> float | None:
    """Tempo of an AIST++ music id by EDGE's rule, or None for other music.

    ``mBR mPO mLO mMH mLH mWA mKR mJS mJB`` + digit d -> 80 + 10*d; ``mHO`` + d -> 110 + 5*d.
    Only the leading ``m<GENRE><digit>`` is read, so a file stem such as "mBR0" works too.
    """
    match = _MUSIC_ID.match(music_id)
    if match is None:
        return None
    genre, digit = match.group(1), int(match.group(2))
    if genre in _TEMPO_10_GENRES:
        return float(digit * 10 + 80)
    if genre == "HO":
        return float(digit * 5 + 110)
    return None


def feature_sample_rate(fps: int, hop_length: int) -> int:
    """Audio rate at which one feature hop is one motion frame (EDGE: 30 * 512 = 15360)."""
    return fps * hop_length


def baseline_features(
    audio: np.ndarray,
    fps: int,
    frames: int,
    hop_length: int = 512,
    start_bpm: float | None = None,
    tightness: float = 100.0,
) -> np.ndarray:
    """EDGE's 35-d features of one window; ``audio`` is mono at ``fps * hop_length`` Hz.

    Returns ``(frames, 35)`` float32. The last column is the beat one-hot.
    """
    sr = feature_sample_rate(fps, hop_length)
    envelope = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=hop_length)
    mfcc = librosa.feature.mfcc(y=audio, sr=sr, n_mfcc=20, hop_length=hop_length).T
    chroma = librosa.feature.chroma_cens(y=audio, sr=sr, hop_length=hop_length, n_chroma=12).T
    peaks = librosa.onset.onset_detect(onset_envelope=envelope, sr=sr, hop_length=hop_length)
    if start_bpm is None:  # EDGE falls back to librosa's global tempo estimate
        start_bpm = float(np.atleast_1d(librosa.feature.tempo(y=audio, sr=sr))[0])
    _, beats = librosa.beat.beat_track(
        onset_envelope=envelope, sr=sr, hop_length=hop_length,
        start_bpm=start_bpm, tightness=tightness,
    )
    peak_onehot = np.zeros_like(envelope, dtype=np.float32)
    peak_onehot[peaks] = 1.0
    beat_onehot = np.zeros_like(envelope, dtype=np.float32)
    beat_onehot[beats] = 1.0
    features = np.concatenate(
        [envelope[:, None], mfcc, chroma, peak_onehot[:, None], beat_onehot[:, None]], axis=-1
    )
    if len(features) < frames:
        raise ValueError(f"audio gives {len(features)} feature frames, need {frames}")
    return features[:frames].astype(np.float32)


def warm_up(fps: int = 30, hop_length: int = 512) -> None:
    """Compile and cache librosa's numba kernels in this one process.

    librosa's numba functions are compiled on first use and cached in site-packages. When
    several fresh worker processes compile them at the same time they can leave a corrupt
    cache behind that crashes later processes (seen here: a segfault in ``piptrack``), so
    set-up runs this once, before any workers start.
    """
    rate = feature_sample_rate(fps, hop_length)
    t = np.arange(int(1.2 * rate), dtype=np.float32) / rate
    clicks = (np.sin(2 * np.pi * 220.0 * t) * (np.mod(t, 0.5) < 0.05)).astype(np.float32)
    baseline_features(clicks, fps, int(1.2 * fps) - 1, hop_length, start_bpm=None)
    baseline_features(clicks, fps, int(1.2 * fps) - 1, hop_length, start_bpm=120.0)
