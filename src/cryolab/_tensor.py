"""Conversion of array-likes to tensors at the public API boundary.

Rule (docs/conventions.md): public functions accept numpy arrays, torch tensors or nested
sequences and return torch tensors. Real data defaults to float32, complex data to complex64.
"""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(x, *, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Return ``x`` as a torch tensor; float64 inputs become float32 unless ``dtype`` says otherwise."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        if np.isscalar(x):
            t = torch.as_tensor(x)
        else:
            arr = np.asarray(x)
            # torch cannot share read-only memory (np.load, pandas copy-on-write): copy those.
            t = torch.as_tensor(arr if arr.flags.writeable else arr.copy())
    if dtype is None:
        if t.dtype == torch.float64:
            dtype = torch.float32
        elif t.dtype == torch.complex128:
            dtype = torch.complex64
        elif not (t.is_floating_point() or t.is_complex()):
            dtype = torch.float32
    return t.to(dtype=dtype or t.dtype, device=device or t.device)
