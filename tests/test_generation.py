"""Long-video generation: how a video is cut into segments and windows, the sampler's
conditioning on the previous segment, the generated video and its MP4 with the music."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ldm_helpers import FAST, short_config

from dancegen.errors import InputError
from dancegen.storage.media import probe_mp4, read_image, write_mp4
from dancegen.tasks.generation import (
    generate_for_music,
    heatmap_keypoints,
    load_pipeline,
    prepare_reference,
)
from dancegen.tasks.ldm_sampling import (
    SamplerSettings,
    crossfade,
    sample_segment,
    segment_spans,
    window_starts,
)


def test_windows_cover_every_frame_and_end_on_the_last() -> None:
    assert window_starts(10, 16, 4) == [0]
    assert window_starts(40, 16, 4) == [0, 12, 24]
    assert window_starts(41, 16, 4) == [0, 12, 24, 25]
    for frames in range(16, 90):
        starts = window_starts(frames, 16, 4)
        covered = np.zeros(frames, bool)
        for s in starts:
            covered[s:s + 16] = True
        assert covered.all() and starts[-1] + 16 == frames


def test_segments_overlap_and_the_last_ends_on_the_video_end() -> None:
    assert segment_spans(100, 150, 8) == [(0, 100)]
    assert segment_spans(240, 150, 8) == [(0, 150), (142, 240)]
    assert segment_spans(300, 150, 8) == [(0, 150), (142, 292), (284, 300)]
    for total in range(151, 700, 37):
        spans = segment_spans(total, 150, 8)
        assert spans[0][0] == 0 and spans[-1][1] == total
        assert all(end - start == 150 for start, end in spans[:-1])
        assert all(b[0] == a[1] - 8 for a, b in itertools.pairwise(spans))
    with pytest.raises(ValueError, match="overlap"):
        segment_spans(300, 8, 8)


def test_crossfade_moves_from_the_old_frames_to_the_new() -> None:
    old, new = np.zeros((3, 2, 2, 3), np.uint8), np.full((3, 2, 2, 3), 200, np.uint8)
    blended = crossfade(old, new)
    assert [int(f.mean()) for f in blended] == [50, 100, 150]


def test_heatmap_peaks_become_pixel_keypoints() -> None:
    heatmaps = torch.zeros(2, 18, 64, 64)
    heatmaps[0, 3, 10, 20] = 0.9          # row 10, column 20 of the 64 grid
    keypoints = heatmap_keypoints(heatmaps, 128)
    assert keypoints.shape == (2, 18, 3)
    np.testing.assert_allclose(keypoints[0, 3], [40.5, 20.5, 0.9], atol=1e-6)


def test_reference_photos_are_cropped_square_and_bad_ones_refused() -> None:
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 100:200] = 255                  # the centre square is white
    out = prepare_reference(wide, 64, "photo")
    assert out.shape == (64, 64, 3) and out.min() == 255
    assert prepare_reference(np.zeros((80, 80), np.uint8), 64, "grey").shape == (64, 64, 3)
    assert prepare_reference(np.zeros((80, 80, 4), np.uint8), 64, "rgba").shape == (64, 64, 3)
    with pytest.raises(InputError, match="too small"):
        prepare_reference(np.zeros((16, 16, 3), np.uint8), 64, "tiny")
    with pytest.raises(InputError, match="8-bit"):
        prepare_reference(np.zeros((80, 80, 3), np.float32), 64, "float")


def test_unreadable_image_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(str(bad))
    with pytest.raises(InputError, match="not found"):
        read_image(str(tmp_path / "absent.png"))


def test_mp4_holds_every_frame_and_the_music(tmp_path: Path) -> None:
    frames = np.zeros((30, 64, 64, 3), np.uint8)
    frames[:, 16:48, 16:48] = np.arange(30, dtype=np.uint8)[:, None, None, None] * 8
    rate = 22050
    music = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)).astype(np.float32)
    out = tmp_path / "clip.mp4"
    write_mp4(str(out), frames, 30, music, rate)
    info = probe_mp4(out)
    assert info == {"frames": 30, "size": (64, 64), "fps": 30.0, "audio": True}
    silent = tmp_path / "silent.mp4"
    write_mp4(str(silent), frames, 30)
    assert probe_mp4(silent)["audio"] is False


def test_sampler_continues_from_the_previous_segment(trained: Path) -> None:
    config = short_config(*FAST, "generation.overlap_release=0")
    pipeline = load_pipeline(str(trained), config)
    champ = pipeline.champ
    frames, size = 12, pipeline.resolution // 8
    guidance = champ.encode_guidance(torch.rand(1, 4, 3, frames, pipeline.resolution,
                                                pipeline.resolution))
    clip = torch.randn(1, 1, pipeline.image_encoder.config.projection_dim)
    reference = champ.reference_states(torch.randn(1, 4, size, size), clip)
    settings = SamplerSettings.of(config.generation)
    prefix = torch.randn(1, 4, 5, size, size)

    def sample(seed: int, prefix: torch.Tensor | None) -> torch.Tensor:
        return sample_segment(champ, guidance, reference, clip, config.ldm.schedule, settings,
                              torch.Generator().manual_seed(seed), prefix)

    first = sample(0, prefix)
    assert first.shape == (1, 4, frames, size, size) and torch.isfinite(first).all()
    assert torch.equal(first[:, :, :5], prefix)
    assert torch.equal(first, sample(0, prefix))               # a seed fixes the result
    assert not torch.allclose(first, sample(1, prefix))
    assert not torch.allclose(first[:, :, 5:], sample(0, None)[:, :, 5:])  # the prefix matters
    # released for the last step: the overlap settles near the prefix, no longer pinned to it
    released = sample_segment(champ, guidance, reference, clip, config.ldm.schedule,
                              replace(settings, overlap_release=0.34),
                              torch.Generator().manual_seed(0), prefix)
    assert not torch.equal(released[:, :, :5], prefix)
    free = sample(0, None)[:, :, :5]
    assert (released[:, :, :5] - prefix).abs().mean() < (free - prefix).abs().mean()


def test_generated_video_spans_the_music_in_merged_segments(trained: Path) -> None:
    config = short_config(*FAST)
    pipeline = load_pipeline(str(trained), config)
    rate, seconds = 22050, 1.4                  # 42 frames: segments (0, 24) and (18, 42)
    t = np.arange(round(seconds * rate)) / rate
    music = (np.sin(2 * np.pi * 220 * t) * (np.mod(t, 0.5) < 0.1)).astype(np.float32)
    reference = np.full((pipeline.resolution, pipeline.resolution, 3), 40, np.uint8)
    progress: list[tuple[int, int]] = []
    video = generate_for_music(pipeline, music, rate, reference,
                               on_step=lambda done, total: progress.append((done, total)))
    assert video.frames.shape == (42, pipeline.resolution, pipeline.resolution, 3)
    assert video.frames.dtype == np.uint8 and video.keypoints.shape == (42, 18, 3)
    assert progress[-1] == (6, 6)               # 2 segments x 3 steps
    again = generate_for_music(pipeline, music, rate, reference)
    np.testing.assert_array_equal(video.frames, again.frames)
    with pytest.raises(InputError, match="too short"):
        generate_for_music(pipeline, music[:100], rate, reference)
