"""How many CPU threads a command should use on a machine it may share.

torch's intra-op threads (and scikit-learn's OpenMP pools) synchronise at every operation; on a
machine whose cores are taken by other work, a thread that is descheduled stalls the others
(measured on the 2-core development machine: two threads on two busy cores ran a
3600 × 128 × 128 matrix product 9× slower than one thread, and 2D classification of the demo
data took 76 s wall on two threads against 13 s on one). So commands default to the cores that
are not already busy.
"""

from __future__ import annotations

import os


def choose_num_threads() -> int:
    """CPU threads to use: the cores available to this process minus the 1-minute load average
    (rounded), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))
