"""Stride-1 windows as tensor views: a batch is gathered with one indexing op, never per sample."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler


def window_count(start: int, end: int, seq_len: int, horizon: int) -> int:
    """Stride-1 windows of L inputs and H targets in rows ``[start, end)``: ``T - L - H + 1`` (the one copy)."""
    return end - start - seq_len - horizon + 1


class WindowDataset(Dataset):
    """All stride-1 windows of ``values[start:end]``; item ``idx`` (a list of window indices) is a whole batch.

    Window ``i``: ``x = S[i : i+L]``, ``y = S[i+L : i+L+H, :n_targets]`` with ``S = values[start:end]`` (the
    targets first, then the past covariates, which are never read past the origin); the marks follow, and the future
    covariates ``future [T, F]`` give ``F[i : i+L+H]``, lookback and horizon. The windows are ``unfold`` views of the
    split: no copy is made until a batch is gathered.
    """

    def __init__(
        self, values: torch.Tensor, marks: torch.Tensor | None, start: int, end: int, seq_len: int, horizon: int,
        n_targets: int | None = None, future: torch.Tensor | None = None,
    ) -> None:
        self.seq_len, self.horizon = seq_len, horizon
        self.n_targets = values.shape[1] if n_targets is None else n_targets
        span = seq_len + horizon
        seg = values[start:end]  # [T_s, N]
        self.n = window_count(0, seg.shape[0], seq_len, horizon)
        if self.n < 1:
            raise ValueError(f"split of {seg.shape[0]} rows is shorter than seq_len + horizon = {span}")
        self._win = seg.unfold(0, span, 1)  # [W, N, L+H] view
        self._mwin = marks[start:end].unfold(0, span, 1) if marks is not None else None  # [W, C, L+H] view
        self._fwin = future[start:end].unfold(0, span, 1) if future is not None else None  # [W, F, L+H] view

    def __len__(self) -> int:
        return self.n

    def in_order(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Every window, in order, as batches of ``batch_size`` (the last one shorter): evaluation outside a Trainer
        (conformal calibration, scoring a parent model)."""
        for start in range(0, self.n, batch_size):
            yield self[torch.arange(start, min(start + batch_size, self.n))]

    def targets(self) -> torch.Tensor:
        """``[W, H, N_t]``: every window's targets, a view of the series (no copy)."""
        return self._win[:, : self.n_targets, self.seq_len:].transpose(1, 2)

    def __getitem__(self, idx: list[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        win = self._win[idx].transpose(1, 2)  # [B, L+H, N]
        batch = {"x": win[:, : self.seq_len], "y": win[:, self.seq_len :, : self.n_targets]}
        if self._mwin is not None:
            mwin = self._mwin[idx].transpose(1, 2)  # [B, L+H, C]
            batch["x_mark"], batch["y_mark"] = mwin[:, : self.seq_len], mwin[:, self.seq_len :]
        if self._fwin is not None:
            batch["future"] = self._fwin[idx].transpose(1, 2)  # [B, L+H, F]
        return batch


def batch_sampler(
    dataset: WindowDataset, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Sampler:
    """Batches of window indices. Only shuffled (train) batches may drop the last partial batch (``drop_last``,
    what the reference repos do); in-order (val, test, predict) batches never drop a window."""
    base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return BatchSampler(base, batch_size=batch_size, drop_last=drop_last and shuffle)


# The reference repos' epoch loop (LTSF-Linear's and Time-Series-Library's exp_main) makes three DataLoader
# iterators per epoch, and each draws int64 seeds from torch's global generator: the shuffled train loader a base
# seed and then its RandomSampler's seed, the shuffled val loader the same two, the in-order test loader a base
# seed. The train permutation comes from a generator seeded with the second draw.
REFERENCE_DRAWS_PER_EPOCH = 5
REFERENCE_PERMUTATION_DRAW = 1


class ReferenceBatchSampler(Sampler[torch.Tensor]):
    """Shuffled train batches in the order the reference loop's ``DataLoader(shuffle=True)`` yields them.

    ``generator`` stands in for the reference's global torch generator: start it from the RNG state the model's
    init leaves (``torch.get_rng_state()`` right after building it from the seed) and, for a model built as the
    reference builds it, every epoch's batches are the reference run's. One iteration is one epoch; it draws the
    epoch's five seeds up front (nothing else reads this generator, so the stream is the same).
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.drop_last, self.generator = n, batch_size, drop_last, generator

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        draws = [int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))
                 for _ in range(REFERENCE_DRAWS_PER_EPOCH)]
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(draws[REFERENCE_PERMUTATION_DRAW]))
        yield from perm[: len(self) * self.batch_size].split(self.batch_size)


class EpochBatchSampler(BatchSampler):
    """A BatchSampler that forwards ``set_epoch`` to its sampler, which Lightning calls before every epoch
    (it looks for ``set_epoch`` on the loader's sampler, which is this object: batches are the dataset's items)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def distributed_batch_sampler(dataset: WindowDataset, batch_size: int, rank: int, world_size: int,
                              seed: int, drop_last: bool = False) -> EpochBatchSampler:
    """Train batches of rank ``rank``: a DistributedSampler shard of a permutation that changes every epoch
    (``set_epoch``) and is the same on every rank (``seed``), so the shards never overlap within an epoch.

    Every rank gets the same number of windows (the sampler pads with a few repeated windows), hence the same
    number of batches: DDP's gradient all-reduce needs every rank to take each step.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                 drop_last=False)
    return EpochBatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``n`` evaluation windows: the shards of all ranks cover every window
    exactly once (no padding, no repeats), so summed metrics all-reduced over ranks equal one process's sums."""
    return range(n * rank // world_size, n * (rank + 1) // world_size)


def eval_batch_sampler(dataset: WindowDataset, batch_size: int, rank: int = 0, world_size: int = 1) -> Sampler:
    """Val/test batches, in order; under DDP only this rank's contiguous shard. Never drops a window."""
    if world_size == 1:
        return batch_sampler(dataset, batch_size, shuffle=False)
    return BatchSampler(shard_range(len(dataset), rank, world_size), batch_size=batch_size, drop_last=False)
