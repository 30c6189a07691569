"""Shuffled mini-batches whose whole state can be checkpointed: one sampler for every trainer."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["BatchStream"]


class BatchStream:
    """Endless stream of shuffled mini-batch indices, one permutation per pass over the data.

    The permutation, the cursor and the random generator's state are the stream's whole
    state, so a resumed run draws exactly the batches an uninterrupted run would have drawn.

    Parameters
    ----------
    n
        Number of samples.
    batch_size
        Indices per batch (at most ``n``).
    rng
        ``torch.Generator``, the source of the permutations (seeded by the caller).
    drop_last
        ``True`` (the GANs): a pass ends before a batch that would be smaller than
        ``batch_size``. ``False`` (the U-net): the last batch of a pass holds what is left.
    """

    def __init__(self, n: int, batch_size: int, rng: torch.Generator, drop_last: bool = True) -> None:
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch size {batch_size} must be between 1 and the number of samples {n}")
        self.n, self.batch_size, self.rng, self.drop_last = int(n), int(batch_size), rng, drop_last
        self.perm = torch.randperm(self.n, generator=self.rng)
        self.cursor = 0
        self.passes = 0

    def next(self) -> torch.Tensor:
        """Indices (batch_size,) of the next batch (fewer at the end of a pass without ``drop_last``)."""
        end_of_pass = self.cursor + self.batch_size > self.n if self.drop_last else self.cursor >= self.n
        if end_of_pass:
            self.perm = torch.randperm(self.n, generator=self.rng)
            self.cursor = 0
            self.passes += 1
        idx = self.perm[self.cursor : self.cursor + self.batch_size]
        self.cursor += len(idx)
        return idx

    @property
    def epoch(self) -> float:
        """Passes over the data so far (fractional)."""
        return self.passes + self.cursor / self.n

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state(), "perm": self.perm.clone(), "cursor": self.cursor, "passes": self.passes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])
        self.perm = state["perm"].clone()
        self.cursor, self.passes = int(state["cursor"]), int(state["passes"])
