"""What every benchmark shares: timing that drains the GPU, the ratio against the baseline run in
the same process, the machine it ran on, and the one JSON line each benchmark ends with.

    from common import timed, best_of, machine, ratio, emit
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def sync() -> None:
    """Wait for the GPU's queued work, if torch is loaded and a GPU is there (else nothing)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn):
    """(seconds, result) of one call, the GPU drained before and after."""
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def best_of(fn, reps: int = 3, warm=None):
    """(best seconds, last result) of `reps` calls after one warm-up call (`warm`, else `fn`)."""
    out = (warm or fn)()
    best = float("inf")
    for _ in range(reps):
        s, out = timed(fn)
        best = min(best, s)
    return best, out


def machine() -> dict:
    """Where a figure was measured: the CPU's core count and the GPU's name, if torch sees one."""
    out = {"cpus": os.cpu_count(), "python": platform.python_version(), "gpu": None}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def ratio(ours: float, baseline: float) -> float:
    """How many times faster (for times) or larger (for rates) kb is than the baseline."""
    return round(ours / baseline, 3) if baseline else float("inf")


def emit(name: str, **fields) -> None:
    """The benchmark's last line: one JSON object naming the benchmark and the machine."""
    print(json.dumps({"bench": name, "machine": machine(), **fields}), flush=True)
