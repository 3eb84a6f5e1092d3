"""Time a few training steps of one model on random data, in its own process (for clean peak memory).

Usage: python benchmarks/_step_worker.py '{"model": "itransformer", "params": {...}, "n": 321, "batch": 8,
       "steps": 4, "L": 96, "H": 96}'
Prints one JSON line: the best and median step time in ms and the peak memory growth in MB: RSS on the CPU,
torch's allocator peak above the state before the first step on a GPU ("device": "cuda" in the spec).
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
    dev = torch.device(spec.get("device", "cpu"))
    cuda = dev.type == "cuda"
    model = create_model(spec["model"], build_config(spec["model"], spec.get("params", {})), ModelContext(L, H, n, 4))
    model = model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, xm, y = (t.to(dev) for t in (torch.randn(batch, L, n), torch.rand(batch, L, 4) - 0.5, torch.randn(batch, H, n)))
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for i in range(spec.get("steps", 3) + 1):  # the first step is a warm-up
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x, xm), y).backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(dev)  # kernels run asynchronously: time them, not their launch
        if i:
            times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated(dev) if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - base
    return {"ms": 1000 * min(times), "median_ms": 1000 * statistics.median(times), "peak_mb": peak / 2**20}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
