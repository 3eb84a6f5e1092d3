"""The Lightning DataModule: one series, the paper's splits, train-only scaling and window loaders."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from forecast.config import DataConfig
from forecast.data.series import Series, load_series
from forecast.data.windows import (
    ReferenceBatchSampler,
    WindowDataset,
    batch_sampler,
    distributed_batch_sampler,
    eval_batch_sampler,
)
from forecast.errors import ForecastError


class ForecastDataModule(pl.LightningDataModule):
    """Train windows are shuffled (the last partial batch is dropped only with ``drop_last``, the reference repos'
    train loader); val and test windows are all kept, in order, whatever ``drop_last`` says.

    ``shuffle`` picks the train order (``train.shuffle``): ``seed``, a generator seeded with ``seed``; or
    ``reference``, the reference loop's DataLoader order (:class:`ReferenceBatchSampler`) from the RNG state in
    ``shuffle_origin`` (the pipeline sets it to the state the model's init leaves; unset: the state right after
    ``torch.manual_seed(seed)``). Under DDP both use the sharded shuffle described below.

    The test split is only touched by :meth:`test_dataloader`, so tuning never sees it.

    Under DDP (a trainer with ``world_size > 1``; the Trainer runs with ``use_distributed_sampler=False``) each
    rank reads a DistributedSampler shard of the train windows, reshuffled every epoch, and a contiguous shard
    of the val/test windows with no padding, so the ranks' summed metrics add up to the single-process ones.
    """

    def __init__(
        self,
        cfg: DataConfig,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        seed: int = 0,
        series: Series | None = None,
        progress: bool = True,
        drop_last: bool = False,
        shuffle: str = "seed",
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.drop_last = drop_last  # train batches only (train.drop_last)
        self.shuffle = shuffle
        self.shuffle_origin: torch.Tensor | None = None  # reference shuffle: the RNG state it starts from
        self.series = series if series is not None else load_series(cfg, progress=progress)
        self._values = torch.from_numpy(self.series.scaled)
        self._marks = torch.from_numpy(self.series.marks) if self.series.marks is not None else None
        future = self.series.future_values()
        self._future = torch.from_numpy(future) if future is not None else None
        self._datasets: dict[str, WindowDataset] = {}
        self._train_gen: torch.Generator | None = None  # the shuffling RNG of the latest train loader
        self._train_gen_state: torch.Tensor | None = None  # from a checkpoint, for the next train loader

    @property
    def n_vars(self) -> int:
        """Columns the network reads over the lookback (targets, then past covariates)."""
        return self.series.n_inputs

    @property
    def n_marks(self) -> int:
        return self.series.n_marks

    def dataset(self, split: str) -> WindowDataset:
        if split not in self._datasets:
            start, end = self.series.borders[split]
            self._datasets[split] = WindowDataset(
                self._values[:, :self.series.n_inputs], self._marks, start, end, self.cfg.seq_len, self.cfg.horizon,
                self.series.n_targets, self._future)
        return self._datasets[split]

    def _rank(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer; (0, 1) without one."""
        trainer = self.trainer
        return (0, 1) if trainer is None else (int(trainer.global_rank), int(trainer.world_size))

    def check_train_batches(self, world: int) -> None:
        """With ``train.drop_last``, every one of ``world`` processes must draw at least one full train batch."""
        n = len(self.dataset("train"))
        per_rank = -(-n // world)  # what each process draws (DistributedSampler pads to equal shares)
        if self.drop_last and per_rank < self.batch_size:
            share = f", {per_rank} per process of {world}" if world > 1 else ""
            raise ForecastError(f"train.drop_last leaves no train batch: the train split has {n} windows"
                                f"{share}, fewer than a batch of {self.batch_size}; lower --batch-size or set "
                                "train.drop_last=false.")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        rank, world = self._rank()
        if shuffle:
            self.check_train_batches(world)
        if world == 1:
            gen = None
            if shuffle:  # the shuffling RNG starts from exactly one of: a resumed run's, the model init's, the seed
                gen = self._train_gen = torch.Generator()
                if self._train_gen_state is not None:  # resuming: go on with the interrupted run's shuffling
                    gen.set_state(self._train_gen_state)
                    self._train_gen_state = None
                elif self.shuffle == "reference" and self.shuffle_origin is not None:
                    gen.set_state(self.shuffle_origin)
                else:
                    gen.manual_seed(self.seed)
            if shuffle and self.shuffle == "reference":
                sampler = ReferenceBatchSampler(len(ds), self.batch_size, self.drop_last, gen)
            else:
                size = self.batch_size if shuffle else self.eval_batch_size
                sampler = batch_sampler(ds, size, shuffle, gen, drop_last=self.drop_last)
        elif shuffle:
            sampler = distributed_batch_sampler(ds, self.batch_size, rank, world, self.seed, self.drop_last)
        else:
            if len(ds) < world:
                raise ForecastError(f"the {split} split has {len(ds)} windows, fewer than the {world} processes; "
                                    "train on fewer devices.")
            sampler = eval_batch_sampler(ds, self.eval_batch_size, rank, world)
        return DataLoader(ds, batch_size=None, sampler=sampler, num_workers=self.cfg.num_workers)

    # Saved in checkpoints (training.EpochCheckpoint): a resumed fit shuffles as the uninterrupted one would.
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"train_generator": self._train_gen.get_state()} if self._train_gen is not None else {}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self._train_gen_state = state_dict.get("train_generator")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
