"""Real-space cropping and padding about the box centre ``N // 2``.

docs/conventions.md: the centre of a box of size ``N`` is index ``N // 2`` for odd and even ``N``.
Cropping keeps, and padding places, the data so that the old centre pixel lands on the new
centre pixel ``M // 2``: the offset between the boxes is ``N // 2 - M // 2`` on every axis.
Padding then cropping back is an exact identity for every combination of parities.
"""

from __future__ import annotations

from typing import Sequence

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier._dims import check_ndim, resolve_shape


def crop_center(x, new_size: int | Sequence[int], *, ndim: int | None = None) -> torch.Tensor:
    """Cut the central ``new_size`` box out of the last ``ndim`` axes.

    Parameters
    ----------
    x
        ``(..., [d,] h, w)`` real or complex array centred at ``N // 2``.
    new_size
        Output box: one int for a square/cubic box (then ``ndim`` is required), or one length
        per spatial axis in array order ``([d,] h, w)``. Each must be ``<=`` the input length.
    ndim
        Number of spatial dimensions when ``new_size`` is an int.

    Returns
    -------
    ``(..., *new_shape)`` copy (not a view) whose index ``M // 2`` is the input's ``N // 2``.
    """
    x = as_tensor(x)
    new_shape = resolve_shape(new_size, ndim)
    old_shape = tuple(x.shape[-check_ndim(x, len(new_shape)):])
    if any(m > n for m, n in zip(new_shape, old_shape)):
        raise InputError(f"crop_center: new shape {new_shape} is larger than {old_shape}; use pad_center")
    index = tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m) for n, m in zip(old_shape, new_shape))
    return x[(Ellipsis, *index)].clone()


def pad_center(x, new_size: int | Sequence[int], *, ndim: int | None = None, value: float = 0.0) -> torch.Tensor:
    """Embed the last ``ndim`` axes in a larger box filled with ``value``, centre on centre.

    Parameters
    ----------
    x
        ``(..., [d,] h, w)`` real or complex array centred at ``N // 2``.
    new_size
        Output box: an int (then ``ndim`` is required) or one length per spatial axis, each
        ``>=`` the input length.
    ndim
        Number of spatial dimensions when ``new_size`` is an int.
    value
        Fill value outside the input (e.g. 0, or the background mean).

    Returns
    -------
    ``(..., *new_shape)`` array whose index ``M // 2`` holds the input's ``N // 2``.
    """
    x = as_tensor(x)
    new_shape = resolve_shape(new_size, ndim)
    old_shape = tuple(x.shape[-check_ndim(x, len(new_shape)):])
    if any(m < n for m, n in zip(new_shape, old_shape)):
        raise InputError(f"pad_center: new shape {new_shape} is smaller than {old_shape}; use crop_center")
    batch_shape = x.shape[: x.dim() - len(new_shape)]
    out = x.new_full((*batch_shape, *new_shape), value)
    index = tuple(slice(m // 2 - n // 2, m // 2 - n // 2 + n) for n, m in zip(old_shape, new_shape))
    out[(Ellipsis, *index)] = x
    return out
