"""Time a few training steps of one model on random data, in its own process (for clean peak memory).

Usage: python benchmarks/_step_worker.py '{"model": "itransformer", "params": {...}, "n": 321, "batch": 8,
       "steps": 4, "L": 96, "H": 96}'
Prints one JSON line: the best and median step time in ms and the peak RSS growth in MB.
"""

import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from forecast.models import ModelContext, build_config, create_model  # noqa: E402


def main(spec: dict) -> dict:
    torch.set_num_threads(spec.get("threads", 1))
    torch.manual_seed(0)
    n, batch, L, H = spec["n"], spec["batch"], spec.get("L", 96), spec.get("H", 96)
    model = create_model(spec["model"], build_config(spec["model"], spec.get("params", {})), ModelContext(L, H, n, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, xm, y = torch.randn(batch, L, n), torch.rand(batch, L, 4) - 0.5, torch.randn(batch, H, n)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(spec.get("steps", 3) + 1):  # the first step is a warm-up
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x, xm), y).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    return {"ms": 1000 * min(times), "median_ms": 1000 * statistics.median(times), "peak_mb": peak / 1024}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
