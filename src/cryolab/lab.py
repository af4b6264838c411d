"""What the lab notebooks share: where their figures go and a timing that resists a busy machine."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable


def notebook_output_dir() -> Path:
    """The folder for a notebook's figures: ``$CRYOLAB_NOTEBOOK_OUT`` (made if missing), else ``.``."""
    out = Path(os.environ.get("CRYOLAB_NOTEBOOK_OUT", "."))
    out.mkdir(parents=True, exist_ok=True)
    return out


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Minimum wall time of ``repeat`` calls of ``fn``, in seconds.

    The minimum, not the mean: other work on the machine only ever adds time, so the fastest run
    is the least noisy estimate of the cost of ``fn`` itself.
    """
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
