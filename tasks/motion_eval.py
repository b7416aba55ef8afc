"""``dancegen motion eval``: motion quality of EDGE's pseudo-motions next to the training motions.

Each sequence is one clip: its SMPL motion at the dataset fps through EDGE's skeleton (joints in
metres, Y-up), and the beats of its music. The training motions of the AIST++-layout inputs
are the reference row, the store's pseudo-motions the generated one.
"""

from __future__ import annotations

import numpy as np
import torch

from dancegen.models.motion_repr import SMPLSkeleton, resample_motion
from dancegen.storage.aistpp import AistppInputs, SequenceInputs
from dancegen.tasks.motion_quality import (
    BeatAlignVariant,
    MotionQuality,
    evaluate_motions,
    format_quality_table,
    music_beat_frames,
)
from dancegen.tasks.music_features import edge_start_bpm


def sequence_clip(inputs: AistppInputs, sequence: SequenceInputs,
                  fps: int) -> tuple[np.ndarray, np.ndarray]:
    """(joints (T, 24, 3) in metres, Y-up; music beat frames) of one sequence at ``fps``."""
    motion = inputs.load_motion(sequence.motion_file)
    poses, trans = resample_motion(motion.poses, motion.trans, motion.fps, fps)
    with torch.no_grad():
        joints = SMPLSkeleton()(torch.as_tensor(poses).reshape(-1, 24, 3).double(),
                                torch.as_tensor(trans).double() / motion.scaling)
    audio, rate = inputs.load_audio(sequence.music_file)
    beats = music_beat_frames(audio, rate, fps, start_bpm=edge_start_bpm(sequence.music_id))
    return joints.numpy(), beats[beats < len(joints)]


def root_quality(inputs: AistppInputs, fps: int, split: str | None = None,
                 variant: BeatAlignVariant = "bailando") -> MotionQuality:
    """Motion quality over the sequences of one root (optionally one split)."""
    sequences = [s for s in inputs.sequences()
                 if s.music_file is not None and (split is None or s.split == split)]
    return evaluate_motions([sequence_clip(inputs, s, fps) for s in sequences], fps, variant)


def motion_quality_table(inputs_url: str, pseudo_url: str, fps: int,
                         variant: BeatAlignVariant = "bailando") -> str:
    """The Markdown table `dancegen motion eval` prints."""
    rows = {
        "generated (EDGE pseudo-motions)": root_quality(AistppInputs(pseudo_url), fps,
                                                        variant=variant),
        "training motions (reference)": root_quality(AistppInputs(inputs_url), fps, "train",
                                                     variant),
    }
    return format_quality_table(rows)
