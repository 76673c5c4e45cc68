"""Step-addressed episode batches: what step t trains on depends on (seed, rank, t) only.

Exact resumption needs the episode stream to restart at the right place. A
stream that carries one random generator forward (per worker) can only get
there by replaying every earlier episode, and its order changes with the
number of workers. Here instead the batch of optimisation step ``t`` on
process ``rank`` is drawn from a generator seeded with ``(seed, rank, t)``:
resuming at step ``t`` is starting the stream at ``t``; the same steps give
the same episodes whatever the number of workers; DDP ranks draw different
episodes.

Workers split the steps round-robin (worker ``w`` of ``k`` makes steps
``start + w, start + w + k, ...``) and the DataLoader collects their outputs
round-robin, so batches arrive in step order. Each item is ``(t, episode)``;
the trainer checks ``t`` against its own step counter. (The samplers'
``EpisodeStream`` keeps one generator per worker instead, which cannot
restart mid-stream.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from medfss.data.episodes import Episode

if TYPE_CHECKING:
    from medfss.data.samplers import EpisodeSampler  # anything with sample(rng) -> Episode (B = 1)

EPISODES = 0  # purpose tags: independent seed streams for the episodes and for torch
TORCH = 1


def step_seed(seed: int, rank: int, step: int, purpose: int) -> np.random.SeedSequence:
    """The seed of ``purpose`` (EPISODES or TORCH) at step ``step`` on process ``rank``."""
    return np.random.SeedSequence([seed, rank, step, purpose])


def torch_step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for torch's generator (dropout and other random layers) at ``step``."""
    return int(step_seed(seed, rank, step, TORCH).generate_state(1, np.uint64)[0] >> np.uint64(1))


class StepEpisodes(IterableDataset):
    """Endless ``(step, Episode)`` pairs from ``start_step`` on; the Episode holds ``batch_size`` episodes."""

    def __init__(self, sampler: EpisodeSampler, *, batch_size: int, seed: int, rank: int = 0,
                 start_step: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start_step = start_step

    def batch_at(self, step: int) -> Episode:
        """The episodes of ``step``, stacked along B: a pure function of (seed, rank, step)."""
        rng = np.random.default_rng(step_seed(self.seed, self.rank, step, EPISODES))
        return Episode.collate([self.sampler.sample(rng) for _ in range(self.batch_size)])

    def __iter__(self) -> Iterator[tuple[int, Episode]]:
        worker = get_worker_info()
        offset, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        step = self.start_step + offset
        while True:
            yield step, self.batch_at(step)
            step += stride
