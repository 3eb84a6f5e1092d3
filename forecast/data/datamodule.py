"""The Lightning DataModule: one series, the paper's splits, train-only scaling and window loaders."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from forecast.config import DataConfig
from forecast.data.series import Series, load_series
from forecast.data.windows import WindowDataset, batch_sampler


class ForecastDataModule(pl.LightningDataModule):
    """Train windows are shuffled; val and test windows are all kept, in order (no ``drop_last``).

    The test split is only touched by :meth:`test_dataloader`, so tuning never sees it.
    """

    def __init__(
        self,
        cfg: DataConfig,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        seed: int = 0,
        series: Series | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.series = series if series is not None else load_series(cfg, progress=progress)
        self._values = torch.from_numpy(self.series.scaled)
        self._marks = torch.from_numpy(self.series.marks) if self.series.marks is not None else None
        self._datasets: dict[str, WindowDataset] = {}

    @property
    def n_vars(self) -> int:
        return self.series.n_vars

    @property
    def n_marks(self) -> int:
        return self.series.n_marks

    def dataset(self, split: str) -> WindowDataset:
        if split not in self._datasets:
            start, end = self.series.borders[split]
            self._datasets[split] = WindowDataset(
                self._values, self._marks, start, end, self.cfg.seq_len, self.cfg.horizon
            )
        return self._datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        gen = torch.Generator().manual_seed(self.seed) if shuffle else None
        size = self.batch_size if shuffle else self.eval_batch_size
        return DataLoader(ds, batch_size=None, sampler=batch_sampler(ds, size, shuffle, gen),
                          num_workers=self.cfg.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
