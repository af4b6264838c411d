"""Progress bars with ETA for long work (tqdm on stderr).

Set ``CRYOLAB_PROGRESS=0`` to silence them (tests do).
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it", enabled: bool = True):
    """Wrap ``iterable`` in a progress bar showing rate and ETA, unless disabled."""
    disable = (not enabled) or os.environ.get("CRYOLAB_PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False)
