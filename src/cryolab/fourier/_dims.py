"""Private helpers shared by the fourier modules: which trailing dimensions are spatial."""

from __future__ import annotations

from numbers import Integral
from typing import Sequence

import torch

from cryolab.errors import InputError


def spatial_dims(ndim: int) -> tuple[int, ...]:
    """The last ``ndim`` dimensions as negative indices, e.g. ``(-2, -1)`` for images."""
    return tuple(range(-ndim, 0))


def check_ndim(x: torch.Tensor, ndim: int) -> int:
    """Validate that ``x`` has at least ``ndim`` (2 or 3) trailing spatial dimensions."""
    if ndim not in (1, 2, 3):
        raise InputError(f"ndim must be 1, 2 or 3, got {ndim}")
    if x.dim() < ndim:
        raise InputError(f"expected at least {ndim} dimensions, got shape {tuple(x.shape)}")
    return ndim


def resolve_shape(size: int | Sequence[int], ndim: int | None) -> tuple[int, ...]:
    """Turn ``size`` (an int for a cubic box, or one length per spatial axis) into a shape.

    ``ndim`` is needed when ``size`` is an int; when ``size`` is a sequence its length is the
    number of spatial dimensions and ``ndim``, if given, must agree.
    """
    if isinstance(size, Integral) or (isinstance(size, torch.Tensor) and size.dim() == 0):
        if ndim is None:
            raise InputError(
                "a single box size needs ndim (2 for images, 3 for volumes); "
                "or pass one size per axis, e.g. (64, 64)"
            )
        shape = (int(size),) * ndim
    else:
        shape = tuple(int(s) for s in size)
        if ndim is not None and len(shape) != ndim:
            raise InputError(f"size {shape} has {len(shape)} axes but ndim={ndim}")
    if len(shape) not in (1, 2, 3) or any(s < 1 for s in shape):
        raise InputError(f"box shape must have 1 to 3 positive lengths, got {shape}")
    return shape


def as_real(x: torch.Tensor, what: str = "input") -> torch.Tensor:
    """Reject complex tensors where a real-to-complex transform is about to be taken."""
    if x.is_complex():
        raise InputError(f"{what} must be real for a real-to-complex (rfft) transform, got {x.dtype}")
    return x
