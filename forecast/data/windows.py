"""Stride-1 windows as tensor views: a batch is gathered with one indexing op, never per sample."""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler, SequentialSampler


class WindowDataset(Dataset):
    """All stride-1 windows of ``values[start:end]``; item ``idx`` (a list of window indices) is a whole batch.

    Window ``i``: ``x = S[i : i+L]``, ``y = S[i+L : i+L+H]`` with ``S = values[start:end]``; the marks follow.
    The windows are ``unfold`` views of the split: no copy is made until a batch is gathered.
    """

    def __init__(
        self, values: torch.Tensor, marks: torch.Tensor | None, start: int, end: int, seq_len: int, horizon: int
    ) -> None:
        self.seq_len, self.horizon = seq_len, horizon
        span = seq_len + horizon
        seg = values[start:end]  # [T_s, N]
        self.n = seg.shape[0] - span + 1
        if self.n < 1:
            raise ValueError(f"split of {seg.shape[0]} rows is shorter than seq_len + horizon = {span}")
        self._win = seg.unfold(0, span, 1)  # [W, N, L+H] view
        self._mwin = marks[start:end].unfold(0, span, 1) if marks is not None else None  # [W, C, L+H] view

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: list[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        win = self._win[idx].transpose(1, 2)  # [B, L+H, N]
        batch = {"x": win[:, : self.seq_len], "y": win[:, self.seq_len :]}
        if self._mwin is not None:
            mwin = self._mwin[idx].transpose(1, 2)  # [B, L+H, C]
            batch["x_mark"], batch["y_mark"] = mwin[:, : self.seq_len], mwin[:, self.seq_len :]
        return batch


def batch_sampler(
    dataset: WindowDataset, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> Sampler:
    """Batches of window indices. Never drops the last partial batch."""
    base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return BatchSampler(base, batch_size=batch_size, drop_last=False)
