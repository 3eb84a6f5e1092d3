"""DLinear's moving average: ``avg_pool1d`` over the replicate-padded series against
``forecast.layers.decomposition.moving_average`` (the same adds as shifted views), side by side, bit for bit.

Shapes are a train batch of ETTh1 (32 x 336 x 7), its eval batch (256), Weather (16 x 336 x 21) and an Electricity-
sized batch (16 x 336 x 321, synthetic). Medians over interleaved rounds, one thread. Results:
``benchmarks/results/moving_average.{md,json}``.

    python benchmarks/moving_average.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

SHAPES = {"ETTh1 train batch": (32, 336, 7), "ETTh1 eval batch": (256, 336, 7), "Weather": (16, 336, 21),
          "Electricity-sized": (16, 336, 321)}


def main() -> None:
    import torch
    import torch.nn.functional as F

    from forecast.layers.decomposition import moving_average

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    rounds = ap.parse_args().rounds
    torch.set_num_threads(1)

    def pooled(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(F.pad(x.transpose(1, 2), (12, 12), mode="replicate"), 25, stride=1).transpose(1, 2)

    rows, found = [], {}
    for name, shape in SHAPES.items():
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        ours, ref = moving_average(x, 25), pooled(x)
        equal = torch.equal(ours, ref) and ours.stride() == ref.stride()
        ms: dict[str, list[float]] = {"avg_pool1d": [], "shifted views": []}
        for _ in range(rounds):
            for label, fn in (("avg_pool1d", pooled), ("shifted views", lambda t: moving_average(t, 25))):
                t0 = time.perf_counter()
                for _ in range(20):
                    fn(x)
                ms[label].append((time.perf_counter() - t0) / 20 * 1000)
        pool, views = (statistics.median(v) for v in ms.values())
        rows.append([name, "x".join(map(str, shape)), f"{pool:.3f}", f"{views:.3f}", f"{pool / views:.2f}",
                     "yes" if equal else "NO"])
        found[name] = {"shape": shape, "ms": ms, "bit_equal": equal}
        print(rows[-1], flush=True)
    path = write_results("moving_average", "DLinear's moving average (kernel 25): avg_pool1d against shifted views",
                         md_table(["batch", "shape", "avg_pool1d ms", "shifted views ms", "speed-up",
                                   "bit-equal (values and layout)"], rows), found,
                         f"Medians over {rounds} interleaved rounds of 20 calls each, one thread, forward only (the "
                         "input of DLinear's decomposition carries no gradient unless RevIN is affine, which keeps "
                         "avg_pool1d).")
    print(path.read_text())


if __name__ == "__main__":
    main()
