"""A DataLoader whose batch of step N is drawn from step N's own generator (LDM and EDGE).

Training resumes exactly without saving any loader state: the sampler draws each step's
indices with a generator seeded from the step, so a run restarted at step N reads the batches
an uninterrupted run would have, however far the workers had prefetched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from dancegen.config import LoaderConfig


class StepBatches(torch.utils.data.Sampler):
    """The indices of each training step from ``start_step`` to ``steps``: ``draw(step)``."""

    def __init__(self, draw: Callable[[int], list[Any]], start_step: int, steps: int) -> None:
        self.draw, self.start_step, self.steps = draw, start_step, steps

    def __iter__(self) -> Iterator[list[Any]]:
        return (self.draw(step) for step in range(self.start_step, self.steps))

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)


def step_loader(dataset: torch.utils.data.Dataset, draw: Callable[[int], list[Any]],
                start_step: int, steps: int, settings: LoaderConfig,
                collate: Callable[[list[Any]], Any] | None = None,
                ) -> torch.utils.data.DataLoader:
    """Batches of steps ``start_step`` to ``steps``, read by ``settings.workers`` processes
    ``settings.prefetch`` batches ahead (0 workers: read in this process, when asked for)."""
    workers = settings.workers
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(draw, start_step, steps), collate_fn=collate,
        num_workers=workers, prefetch_factor=settings.prefetch if workers else None,
        pin_memory=torch.cuda.is_available(),
        # the loader's base seed from a generator of its own, not the global RNG, which a
        # resumed run restores from its checkpoint before the loader starts
        generator=torch.Generator().manual_seed(start_step),
        # forkserver: a Ray Train worker's threads (gRPC) must not be forked
        multiprocessing_context=settings.start_method if workers else None)
