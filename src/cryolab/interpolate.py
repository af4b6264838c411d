"""Interpolation on regular grids, its exact adjoint (insertion), and scattered-data gridding.

Coordinates
-----------
Grid functions take **array-index coordinates written as geometric vectors**: a 2D point is
``(x, y)`` with ``x`` the column index and ``y`` the row index of an image ``(..., h, w)``; a 3D
point is ``(x, y, z)`` with ``z`` the slice index of a volume ``(..., d, h, w)``. The sample
``image[..., i, j]`` sits at ``(x, y) = (j, i)``; fractional coordinates lie between samples.
This is the only place in cryolab where ``(x, y, z)`` vectors meet ``(z, y, x)`` array axes
(docs/conventions.md). Centred coordinates (origin at the box centre ``N // 2``) become array
coordinates by adding ``N // 2`` on each axis.

Boundaries
----------
The grid is taken to be surrounded by the constant ``fill_value`` (default 0): every
interpolation tap that falls outside the array reads ``fill_value``. A point more than one
sample (linear) or two samples (cubic) outside gives exactly ``fill_value``; points just
outside blend the border sample with it, so the interpolant stays continuous. This is
``scipy.ndimage.map_coordinates(..., mode="grid-constant", cval=fill_value)``, and it is what
makes :func:`insert_into_grid_3d` (which drops outside taps) the exact adjoint.

Implementation: gathers on the flattened array with per-axis tap indices and weights, so every
function is batched, works for real and complex data, and is differentiable with respect to the
data and (except ``"nearest"``) the coordinates.

References
----------
Keys, "Cubic convolution interpolation for digital image processing", IEEE Trans. ASSP 29
(1981) 1153-1160 (the cubic kernel, a = -1/2, i.e. Catmull-Rom).
Penczek, "Fundamentals of three-dimensional reconstruction from projections", Methods Enzymol.
482 (2010) 1-33 (interpolation and gridding in cryo-EM).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from cryolab._tensor import as_tensor, broadcast_shapes
from cryolab.errors import InputError

_SAMPLE_METHODS = ("nearest", "linear", "cubic")


def _as_data_tensor(x) -> torch.Tensor:
    """Tensor of grid values: float32/complex64 from numpy, torch floating or complex dtypes kept."""
    if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex()):
        return x
    return as_tensor(x)


def _as_coords_tensor(x, ndim: int, name: str) -> torch.Tensor:
    """Real coordinate tensor of shape (..., P, ndim); torch floating dtypes kept."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        c = x
    else:
        c = as_tensor(x)
    if c.is_complex():
        raise InputError(f"{name} must be real, got dtype {c.dtype}")
    if c.ndim < 2 or c.shape[-1] != ndim:
        raise InputError(f"{name} must have shape (..., P, {ndim}), got {tuple(c.shape)}")
    return c


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype


def _check_method(method: str, allowed: Sequence[str]) -> None:
    if method not in allowed:
        raise InputError(f"method must be one of {tuple(allowed)}, got {method!r}")


def _axis_taps(coord: torch.Tensor, method: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Integer sample positions and weights along one axis for coordinate ``coord`` (any shape).

    Returns a list of ``(index, weight)``; ``weight`` is None for nearest (weight 1).
    """
    if method == "nearest":
        return [(torch.floor(coord + 0.5).long(), None)]
    base = torch.floor(coord)
    t = coord - base  # in [0, 1), carries the gradient with respect to coord
    i0 = base.long()
    if method == "linear":
        return [(i0, 1 - t), (i0 + 1, t)]
    # Keys cubic convolution, a = -1/2 (Catmull-Rom), taps at i0-1 .. i0+2
    t2, t3 = t * t, t * t * t
    return [
        (i0 - 1, -0.5 * t3 + t2 - 0.5 * t),
        (i0, 1.5 * t3 - 2.5 * t2 + 1),
        (i0 + 1, -1.5 * t3 + 2 * t2 + 0.5 * t),
        (i0 + 2, 0.5 * t3 - 0.5 * t2),
    ]


def _axis_tap_lists(coords: torch.Tensor, spatial: Sequence[int], method: str):
    """Per array axis, the taps ``(flat_offset, masked_weight)`` and whether any tap is outside.

    ``flat_offset`` is the clamped index times the axis stride; ``masked_weight`` is the tap's
    weight times 1 inside / 0 outside the array, so outside taps contribute nothing.
    """
    ndim = len(spatial)
    strides = [math.prod(spatial[k + 1:]) for k in range(ndim)]
    per_axis, any_outside = [], None
    for k, n in enumerate(spatial):  # array axis k holds geometric component ndim - 1 - k
        axis_taps = []
        for index, weight in _axis_taps(coords[..., ndim - 1 - k], method):
            inside = (index >= 0) & (index < n)
            masked = inside.to(coords.dtype) if weight is None else weight * inside
            axis_taps.append((index.clamp(0, n - 1) * strides[k], masked))
            outside = ~inside
            any_outside = outside if any_outside is None else any_outside | outside
        per_axis.append(axis_taps)
    return per_axis, any_outside


def _tap_products(per_axis, k: int = 0, index=None, weight=None):
    """Yield ``(flat_index, weight)`` for every combination of per-axis taps (tensor product).

    Partial sums and products are shared between combinations with the same leading taps.
    """
    if k == len(per_axis):
        yield index, weight
        return
    for index_k, weight_k in per_axis[k]:
        yield from _tap_products(
            per_axis,
            k + 1,
            index_k if index is None else index + index_k,
            weight_k if weight is None else weight * weight_k,
        )


def _sample_grid(grid, coords, ndim: int, method: str, fill_value, grid_name: str) -> torch.Tensor:
    _check_method(method, _SAMPLE_METHODS)
    grid = _as_data_tensor(grid)
    coords = _as_coords_tensor(coords, ndim, "coords")
    if grid.ndim < ndim:
        raise InputError(f"{grid_name} must have at least {ndim} dimensions, got shape {tuple(grid.shape)}")
    coords = coords.to(grid.device)
    spatial = tuple(grid.shape[-ndim:])
    grid_batch = tuple(grid.shape[:-ndim])
    n_points = coords.shape[-2]
    try:
        batch = broadcast_shapes(grid_batch, tuple(coords.shape[:-2]))
    except RuntimeError as err:
        raise InputError(
            f"batch dimensions of {grid_name} {grid_batch} and coords {tuple(coords.shape[:-2])} do not broadcast"
        ) from err
    coords = coords.broadcast_to(*batch, n_points, ndim)
    n_voxels = math.prod(spatial)
    offsets = (torch.arange(math.prod(grid_batch), device=grid.device) * n_voxels).reshape(grid_batch)
    offsets = offsets.broadcast_to(batch)[..., None]  # (*batch, 1)
    flat = grid.reshape(-1)

    per_axis, any_outside = _axis_tap_lists(coords, spatial, method)
    out = None
    for flat_index, weight in _tap_products(per_axis):
        term = weight * flat[offsets + flat_index]
        out = term if out is None else out + term
    if fill_value != 0:
        # grid-constant boundary: the outside taps' weight, 1 - sum of inside weights, reads fill_value
        inside_weight = math.prod(sum(w for _, w in axis_taps) for axis_taps in per_axis)
        out = out + torch.where(any_outside, fill_value * (1 - inside_weight), torch.zeros_like(inside_weight))
    return out


def sample_grid_2d(image, coords_xy, *, method: str = "linear", fill_value: float | complex = 0.0) -> torch.Tensor:
    """Interpolate images at arbitrary points given in array-index coordinates ``(x, y)``.

    Parameters
    ----------
    image
        ``(..., h, w)`` real or complex images.
    coords_xy
        ``(..., P, 2)`` points ``(x, y)``: x the column index (0 … w-1), y the row index
        (0 … h-1), fractional values in between. Leading dimensions broadcast against those of
        ``image``. For centred coordinates add ``(w // 2, h // 2)``.
    method
        ``"nearest"`` (round half up), ``"linear"`` (bilinear) or ``"cubic"`` (Keys cubic
        convolution, a = -1/2, 4x4 taps: exact for polynomials of degree <= 2).
    fill_value
        Finite value of the grid outside the array (see the module notes on boundaries).

    Returns
    -------
    ``(..., P)`` interpolated values; dtype is the promotion of ``image`` and ``coords_xy``
    (float32/complex64 for numpy input).

    Notes
    -----
    Linear interpolation equals ``scipy.ndimage.map_coordinates(image, [y, x], order=1,
    mode="grid-constant", cval=fill_value)`` (note scipy's array-order ``[row, column]``).
    SciPy's ``order=3`` is a B-spline with a prefilter, not the local cubic used here.
    """
    return _sample_grid(image, coords_xy, 2, method, fill_value, "image")


def sample_grid_3d(volume, coords_xyz, *, method: str = "linear", fill_value: float | complex = 0.0) -> torch.Tensor:
    """Interpolate volumes at arbitrary points given in array-index coordinates ``(x, y, z)``.

    Parameters
    ----------
    volume
        ``(..., d, h, w)`` real or complex volumes.
    coords_xyz
        ``(..., P, 3)`` points ``(x, y, z)``: x the column index (last axis), y the row index,
        z the slice index (first spatial axis). Leading dimensions broadcast against those of
        ``volume``. For centred coordinates add ``(w // 2, h // 2, d // 2)``.
    method
        ``"nearest"``, ``"linear"`` (trilinear, 8 taps) or ``"cubic"`` (Keys a = -1/2, 64 taps).
    fill_value
        Finite value of the grid outside the array (see the module notes on boundaries).

    Returns
    -------
    ``(..., P)`` interpolated values (dtype: promotion of ``volume`` and ``coords_xyz``).

    Notes
    -----
    Trilinear interpolation equals ``scipy.ndimage.map_coordinates(volume, [z, y, x],
    order=1, mode="grid-constant", cval=fill_value)``. Its adjoint is
    :func:`insert_into_grid_3d`.
    """
    return _sample_grid(volume, coords_xyz, 3, method, fill_value, "volume")


def _insert_into_grid(values, coords, shape, ndim: int, method: str):
    _check_method(method, _SAMPLE_METHODS)
    values = _as_data_tensor(values)
    coords = _as_coords_tensor(coords, ndim, "coords").to(values.device)
    shape = tuple(int(s) for s in shape)
    if len(shape) < ndim or min(shape) < 1:
        raise InputError(f"shape must end in {ndim} positive grid dimensions, got {shape}")
    if values.ndim < 1 or values.shape[-1] != coords.shape[-2]:
        raise InputError(
            f"values (..., P) and coords (..., P, {ndim}) disagree on P: "
            f"{tuple(values.shape)} vs {tuple(coords.shape)}"
        )
    spatial, grid_batch = shape[-ndim:], shape[:-ndim]
    n_points = coords.shape[-2]
    try:
        batch = broadcast_shapes(tuple(values.shape[:-1]), tuple(coords.shape[:-2]), grid_batch)
    except RuntimeError as err:
        raise InputError(
            f"batch dimensions of values {tuple(values.shape[:-1])}, coords {tuple(coords.shape[:-2])} "
            f"and grid {grid_batch} do not broadcast"
        ) from err
    values = values.broadcast_to(*batch, n_points)
    coords = coords.broadcast_to(*batch, n_points, ndim)
    n_voxels = math.prod(spatial)
    offsets = (torch.arange(math.prod(grid_batch), device=values.device) * n_voxels).reshape(grid_batch)
    offsets = offsets.broadcast_to(batch)[..., None]

    data_dtype = torch.promote_types(values.dtype, coords.dtype)
    weight_dtype = _real_dtype(data_dtype)
    data = torch.zeros(math.prod(shape), dtype=data_dtype, device=values.device)
    weights = torch.zeros(math.prod(shape), dtype=weight_dtype, device=values.device)
    per_axis, _ = _axis_tap_lists(coords, spatial, method)
    for flat_index, weight in _tap_products(per_axis):
        index = (offsets + flat_index).reshape(-1)
        weight = weight.to(weight_dtype)
        data.index_add_(0, index, (values * weight).to(data_dtype).reshape(-1))
        weights.index_add_(0, index, weight.reshape(-1))
    return data.reshape(shape), weights.reshape(shape)


def insert_into_grid_2d(values, coords_xy, shape, *, method: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """Spread values at points onto an image grid: the exact adjoint of :func:`sample_grid_2d`.

    Parameters
    ----------
    values
        ``(..., P)`` real or complex values.
    coords_xy
        ``(..., P, 2)`` points ``(x, y)`` in array-index coordinates (as :func:`sample_grid_2d`).
    shape
        Shape of the output grid, ``(h, w)`` or ``(*grid_batch, h, w)``. Leading dimensions of
        ``values`` / ``coords_xy`` that the grid does not have (or has as 1) are summed over,
        e.g. all images of a stack into one grid.
    method
        ``"nearest"``, ``"linear"`` or ``"cubic"``: the same taps and weights as the sampler.

    Returns
    -------
    data_grid
        ``shape`` grid ``Σ_p w_p(i) values_p`` (dtype: promotion of values and coords).
    weight_grid
        ``shape`` real grid ``Σ_p w_p(i)``: the insertion of ones, i.e. how much weight each
        sample received (a count for nearest). ``data_grid / weight_grid`` where the weight is
        large enough is a simple gridding estimate. Cubic weights can be negative.

    Notes
    -----
    Taps outside the grid are dropped, so for every ``V`` of the grid's shape and ``y`` of
    shape ``(..., P)``: ``<sample_grid_2d(V, c), y> = <V, insert_into_grid_2d(y, c, V.shape)[0]>``
    (with ``fill_value = 0``; the inner product conjugates the first argument for complex data).
    """
    return _insert_into_grid(values, coords_xy, shape, 2, method)


def insert_into_grid_3d(values, coords_xyz, shape, *, method: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """Spread values at points onto a volume grid: the exact adjoint of :func:`sample_grid_3d`.

    Parameters
    ----------
    values
        ``(..., P)`` real or complex values (e.g. central-slice Fourier coefficients).
    coords_xyz
        ``(..., P, 3)`` points ``(x, y, z)`` in array-index coordinates (as :func:`sample_grid_3d`).
    shape
        Shape of the output grid, ``(d, h, w)`` or ``(*grid_batch, d, h, w)``; leading
        dimensions of the inputs that the grid lacks (or has as 1) are summed over.
    method
        ``"nearest"``, ``"linear"`` (trilinear, the usual Fourier-insertion kernel) or
        ``"cubic"``.

    Returns
    -------
    data_grid
        ``shape`` grid of weighted sums of the values.
    weight_grid
        ``shape`` real grid of summed weights (insertion of ones).

    Notes
    -----
    Adjointness: ``<sample_grid_3d(V, c), y> = <V, insert_into_grid_3d(y, c, V.shape)[0]>``
    with ``fill_value = 0``. Taps outside the grid are dropped.
    """
    return _insert_into_grid(values, coords_xyz, shape, 3, method)


def griddata(points, values, xi, *, method: str = "linear", fill_value: float | complex = 0.0) -> torch.Tensor:
    """Interpolate scattered data at arbitrary points (wraps ``scipy.interpolate.griddata``).

    Parameters
    ----------
    points
        ``(N, D)`` positions of the known samples, D = 1, 2 or 3, components in any fixed
        order and unit (cryolab uses geometric ``(x, y[, z])``); they need not lie on a grid.
    values
        ``(N,)`` real or complex values at ``points``.
    xi
        ``(..., D)`` query points, same components and unit as ``points``.
    method
        ``"linear"``: Delaunay-triangulate ``points`` and interpolate barycentrically inside
        each simplex (piecewise linear); ``"nearest"``: value of the nearest sample.
    fill_value
        Value for queries outside the convex hull of ``points`` (``"linear"`` only; nearest
        always extrapolates). Pass ``float("nan")`` to see the hull.

    Returns
    -------
    ``(...)`` values at ``xi``: float32/complex64, or float64/complex128 when ``values`` is a
    float64/complex128 tensor, on the device of ``values``.

    Notes
    -----
    How this differs from :func:`sample_grid_2d` / :func:`sample_grid_3d` (and
    ``scipy.ndimage.map_coordinates``): those take values *on a regular grid* and address them by
    array index, so each query costs a fixed number of taps and the result is differentiable and
    batched on any device. ``griddata`` takes values at *scattered* points, builds a Delaunay
    triangulation (O(N log N), CPU, not differentiable) and uses the enclosing simplex; its
    coordinates are plain positions, not array indices. It is the naive answer to "resample
    irregular samples onto a grid"; in Fourier-space reconstruction, where the irregular samples
    are central-slice values, one instead inserts them with :func:`insert_into_grid_3d` and
    divides by the weights (gridding), which respects how many samples reach each voxel.
    """
    _check_method(method, ("nearest", "linear"))
    from scipy.interpolate import griddata as scipy_griddata
    from threadpoolctl import threadpool_limits

    values_t = _as_data_tensor(values)
    points_np = as_tensor(points, dtype=torch.float64).detach().cpu().numpy()
    xi_np = as_tensor(xi, dtype=torch.float64).detach().cpu().numpy()
    if points_np.ndim != 2 or points_np.shape[1] not in (1, 2, 3):
        raise InputError(f"points must have shape (N, D) with D in 1..3, got {points_np.shape}")
    if values_t.shape != (points_np.shape[0],):
        raise InputError(f"values must have shape ({points_np.shape[0]},), got {tuple(values_t.shape)}")
    dim = points_np.shape[1]
    if xi_np.ndim < 1 or xi_np.shape[-1] != dim:
        raise InputError(f"xi must have shape (..., {dim}), got {xi_np.shape}")
    values_np = values_t.detach().cpu().numpy()
    query = xi_np.reshape(-1, dim)
    if dim == 1:
        points_np, query = points_np[:, 0], query[:, 0]
    # Delaunay's many tiny LAPACK solves slow down by ~100x with competing BLAS threads.
    with threadpool_limits(1):
        result = scipy_griddata(points_np, values_np, query, method=method, fill_value=fill_value)
    out = torch.from_numpy(np.ascontiguousarray(result)).reshape(xi_np.shape[:-1])
    return out.to(dtype=values_t.dtype, device=values_t.device)
