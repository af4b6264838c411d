"""Reused and page-aligned CPU buffers for the simulation's batches.

A simulation of 10,000 images at 128² passes a few hundred MB of images, slices and canvases per
worker through memory. Fresh tensors of that size cost a page fault (and the kernel's zeroing) per
4 KiB page — on the 2-core test machine, a virtual machine where a first touch also goes to the
host, that was a third of the CPU time — so the batches reuse buffers (:func:`scratch`), which are
memory maps with transparent huge pages where the kernel offers them (512 times fewer faults) and
can start at a chosen offset into a page (:func:`mapped_empty`), so that MRCS frames can be written
to disk directly (:class:`cryolab.simulate.dataset._StackWriter`).
"""

from __future__ import annotations

import mmap

import numpy as np
import torch

#: Bytes per memory page for the alignment of :func:`mapped_empty` (and of direct disk writes).
PAGE = 4096


def mapped_empty(shape, dtype=torch.float32, *, offset: int = 0) -> torch.Tensor:
    """An uninitialised CPU tensor on an anonymous memory map, starting ``offset`` bytes past a page
    boundary (:data:`PAGE`), with transparent huge pages requested (``MADV_HUGEPAGE``, where the
    platform has it). The memory is returned to the system when the tensor is freed."""
    dtype = torch.empty(0, dtype=dtype).numpy().dtype
    count = int(np.prod(shape))
    offset %= PAGE
    private = getattr(mmap, "MAP_PRIVATE", None)  # (a shared map is shmem: no huge pages, twice the faults)
    if private is None:  # pragma: no cover - Windows
        memory = mmap.mmap(-1, offset + max(1, count * dtype.itemsize))
    else:
        memory = mmap.mmap(-1, offset + max(1, count * dtype.itemsize), flags=private | getattr(mmap, "MAP_ANONYMOUS", 0))
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            memory.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # pragma: no cover - kernels without transparent huge pages
            pass
    return torch.from_numpy(np.frombuffer(memory, dtype=dtype, count=count, offset=offset).reshape(shape))


def scratch(workspace, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of ``shape`` kept on ``workspace`` (any object, e.g. a ``threading.local``) under
    ``name`` and reused when it is large enough along the first dimension; a fresh one without a
    workspace. Its contents are undefined."""
    if workspace is None:
        return torch.empty(shape, dtype=dtype)
    held = getattr(workspace, name, None)
    if held is None or held.dtype != dtype or held.shape[0] < shape[0] or tuple(held.shape[1:]) != tuple(shape[1:]):
        held = mapped_empty(shape, dtype)
        setattr(workspace, name, held)
    return held[:shape[0]]
