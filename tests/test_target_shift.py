"""Stage 2's displaced targets (ldm.target_shift): frame and guidance move together."""

from __future__ import annotations

import pytest
import torch

from dancegen.config import load_config
from dancegen.tasks.ldm_objectives import displace_targets, shift_images


def _dot(size: int, y: int, x: int) -> torch.Tensor:
    image = torch.zeros(size, size)
    image[y, x] = 1.0
    return image


@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (-2, 5), (0, -4), (7, -7)])
def test_shift_images_moves_content_right_and_down(dx: int, dy: int) -> None:
    moved = shift_images(_dot(16, 8, 8)[None, None], dx, dy, "constant")[0, 0]
    assert moved.shape == (16, 16)
    assert torch.equal(torch.nonzero(moved)[0], torch.tensor([8 + dy, 8 + dx]))


def test_shift_images_fills_the_border_as_asked() -> None:
    ramp = torch.arange(8.0).repeat(8, 1)[None]  # value = column
    replicated = shift_images(ramp, 3, 0, "replicate")[0]
    assert torch.equal(replicated[:, :3], torch.zeros(8, 3))  # column 0 repeated
    assert torch.equal(replicated[:, 3:], ramp[0, :, :5])
    zeros = shift_images(ramp + 1, -2, 0, "constant")[0]
    assert torch.equal(zeros[:, -2:], torch.zeros(8, 2))


def test_displace_targets_moves_each_frame_with_its_own_guidance() -> None:
    batch, size = 6, 32
    frames = torch.full((batch, 3, 1, size, size), -1.0)
    guidance = torch.zeros(batch, 4, 3, 1, size, size)
    frames[..., 12:20, 14:18] = 1.0       # the same body in the frame ...
    guidance[..., 12:20, 14:18] = 0.5     # ... and in every guidance map
    moved_frames, moved_guidance = displace_targets(frames, guidance, 4,
                                                    torch.Generator().manual_seed(3))
    offsets = set()
    for i in range(batch):
        body = torch.nonzero(moved_frames[i, 0, 0] > 0)
        drawn = torch.nonzero(moved_guidance[i, 2, 0, 0] > 0)
        assert torch.equal(body, drawn)  # still aligned
        dy, dx = (body.min(0).values - torch.tensor([12, 14])).tolist()
        assert max(abs(dx), abs(dy)) <= 4
        assert len(body) == 8 * 4  # moved whole, nothing cut off at this size
        offsets.add((dx, dy))
    assert len(offsets) > 1  # each sample its own offset
    again = displace_targets(frames, guidance, 4, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], moved_frames)  # drawn from the step's generator only


def test_target_shift_is_off_in_the_paper_config_and_on_in_the_cpu_one() -> None:
    assert load_config("configs/paper.yaml").ldm.target_shift == 0
    assert load_config("configs/local-cpu.yaml").ldm.target_shift > 0
