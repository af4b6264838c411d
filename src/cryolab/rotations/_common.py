"""Private helpers shared by the rotation modules: input conversion and angle wrapping."""

from __future__ import annotations

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError


def as_float_tensor(x, *, name: str = "input", last_dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Convert ``x`` to a real floating tensor, keeping a torch float64 (or float16) tensor's dtype.

    numpy arrays and sequences follow :func:`cryolab._tensor.as_tensor` (float32); a torch
    tensor that is already floating point keeps its dtype, so float64 geometry stays float64.
    ``last_dims`` checks the trailing shape, e.g. ``(3, 3)`` for matrices.
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        t = x
    else:
        t = as_tensor(x)
    if t.is_complex():
        raise InputError(f"{name} must be real, got dtype {t.dtype}")
    if last_dims is not None:
        k = len(last_dims)
        if t.ndim < k or tuple(t.shape[t.ndim - k:]) != tuple(last_dims):
            want = "(..., " + ", ".join(str(d) for d in last_dims) + ")"
            raise InputError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    return t


def wrap_degrees(angle_deg: torch.Tensor) -> torch.Tensor:
    """Wrap angles in degrees into the half-open interval (-180, 180]."""
    wrapped = 180.0 - torch.remainder(180.0 - angle_deg, 360.0)
    # remainder can round up to exactly 360 for tiny negative arguments, giving -180
    return torch.where(wrapped <= -180.0, wrapped + 360.0, wrapped)


def wrap_radians(angle: torch.Tensor) -> torch.Tensor:
    """Wrap angles in radians into the half-open interval (-pi, pi]."""
    wrapped = torch.pi - torch.remainder(torch.pi - angle, 2 * torch.pi)
    return torch.where(wrapped <= -torch.pi, wrapped + 2 * torch.pi, wrapped)
