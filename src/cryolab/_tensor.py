"""Conversion of array-likes to tensors at the public API boundary.

Rule (docs/conventions.md): public functions accept numpy arrays, torch tensors or nested
sequences and return torch tensors. A torch tensor keeps its floating dtype (float64 in, float64
out: the caller chose that precision); numpy arrays and sequences become float32 / complex64.
"""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(x, *, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Return ``x`` as a torch tensor following the rule above, or with ``dtype`` if given."""
    if isinstance(x, torch.Tensor):
        t = x
        if dtype is None and not (t.is_floating_point() or t.is_complex()):
            dtype = torch.float32
    else:
        if np.isscalar(x):
            t = torch.as_tensor(x)
        else:
            arr = np.asarray(x)
            # torch cannot share read-only memory (np.load, pandas copy-on-write): copy those.
            t = torch.as_tensor(arr if arr.flags.writeable else arr.copy())
        if dtype is None:
            dtype = torch.complex64 if t.is_complex() else torch.float32
    return t.to(dtype=dtype or t.dtype, device=device or t.device)


def broadcast_shapes(*shapes) -> torch.Size:
    """The broadcast of ``shapes``, as ``torch.broadcast_shapes`` gives it, without that function's
    first-call import of sympy (about 0.4 s per process, paid by every command). Raises
    RuntimeError, as torch does, when the shapes do not broadcast."""
    try:
        return torch.Size(np.broadcast_shapes(*(tuple(shape) for shape in shapes)))
    except ValueError as error:
        raise RuntimeError(str(error)) from None
