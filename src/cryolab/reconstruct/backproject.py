"""Back-projection of images into a padded 3D Fourier grid: the "map" step of reconstruction.

Every image contributes its CTF-weighted transform to a data grid and its CTF² to a weight grid
(Fourier-slice theorem, RELION's ``BackProjector::backproject2Dto3D``):

    data(k)   += Σ_i  w(k − Aᵢᵀ q) · CTFᵢ(q) · e^{−2πi q·oᵢ} · F[imageᵢ](q)
    weight(k) += Σ_i  w(k − Aᵢᵀ q) · CTFᵢ(q)²

over the image frequencies ``q = (qx, qy)`` within the band limit, where ``w`` is the trilinear
(or nearest-neighbour) interpolation kernel on the grid and ``e^{−2πi q·oᵢ}`` undoes the particle
origin (docs/conventions.md, "Shifts": ``image(x) = P(x + o)``). The grids use the table layout of
:func:`cryolab.projection.prepare_volume_for_projection` — ``(P, P, P//2 + 1)`` with ``kz``, ``ky``
centred at ``P//2`` and ``kx ≥ 0`` — and the geometry of
:func:`cryolab.projection.insert_central_slices_rfft` (its coordinates, Friedel folding of
``kx < 0`` and wrap-around at the ``±P/2`` planes), so that inserting is the exact adjoint of
the projector's slice extraction (tests check the equality). This module adds what that
reference implementation leaves out for speed:

- the grids carry two margin samples after each axis that collect the taps beyond the stored
  range, folded once at the end (:meth:`PartialReconstruction.folded`) instead of wrapping taps;
- accumulation in place (``out=``), so streaming a data set costs one pair of grids however many
  particles it has;
- on the CPU with trilinear insertion, a compiled kernel (numba; section "The compiled CPU
  path" below) that shifts, CTF-weights and inserts every pixel in one sweep through the grids
  in memory order, releasing the GIL so that threads fill separate partials side by side;
- elsewhere (``CRYOLAB_NUMBA=0``, GPUs, autograd, nearest-neighbour insertion) torch code that
  scatters points in batches of ~10⁶, sorted by grid index first (the scatter is bound by
  memory latency, and a sweep through memory costs about half of random access).

Measured on one core of a shared 2-core machine (torch 2.13), per 128² image with CTF and shift
(6 490 Fourier samples, 8 taps each): ~0.5 ms on the compiled path (FFT, CTF and the kernel's
~0.35 ms), ~1.5 ms on the torch path; ``relion_reconstruct`` needs 3-4 ms per image in all.

Partial reconstructions add: ``backproject_chunk(a) + backproject_chunk(b)`` equals
``backproject_chunk(a ∪ b)`` (up to float rounding), which is what lets a driver stream chunks,
split half sets or spread work over processes, and finish with :func:`cryolab.reconstruct.finalize`.

References
----------
S. H. W. Scheres, "RELION: implementation of a Bayesian approach to cryo-EM structure
determination", J. Struct. Biol. 180 (2012) 519 (section 2.3: Fourier-space insertion with
CTF and CTF² grids); RELION ``src/backprojector.cpp``.
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import phase_ramp_rfft, rfft_centered
from cryolab.projection import apply_shifts_rfft, band_limited_frequencies, padded_size, slice_segments
from cryolab.reconstruct.symmetry import as_symmetry_operators

__all__ = ["PartialReconstruction", "backproject_chunk", "INSERT_METHODS"]

#: Interpolation kernels for insertion (the cubic kernel of the projector is not offered: its
#: negative lobes make the weight grid non-positive).
INSERT_METHODS = ("linear", "nearest")

#: Points scattered per batch (~160 images of 128²): enough that sorting them by grid index makes
#: the scatter a sweep through memory; the temporaries take ~100 bytes per point.
_POINTS_PER_BATCH = 1 << 20


#: Samples after the stored range on every axis of the accumulation grids: trilinear taps reach
#: index ``P + 1`` (``ky``/``kz``) and ``P/2 + 1`` (``kx``); see :meth:`PartialReconstruction.folded`.
_MARGIN = 2


@dataclass(frozen=True)
class PartialReconstruction:
    """Back-projected data and weight grids of some images; partials add with ``+``.

    Attributes
    ----------
    data
        complex64 ``(P + 2, P + 2, P//2 + 3)``: Σ CTF · F[image] spread onto the grid, in the
        table layout of :func:`cryolab.projection.prepare_volume_for_projection` (``P =
        padded_size(box_size, pad_factor)``; ``kz``, ``ky`` centred at ``P//2``, ``kx ≥ 0``) plus
        two samples after each axis that collect the interpolation taps beyond the stored
        range. :meth:`folded` adds them onto the samples they stand for and returns the
        ``(P, P, P//2 + 1)`` grids that ``cryolab.projection.insert_central_slices_rfft``
        returns. (Accumulating into the margins and folding once is cheaper than wrapping every
        tap.)
    weight
        float32, same shape: Σ CTF² spread the same way (Σ of interpolation weights without a
        CTF).
    box_size
        ``N``, the size of the images and of the map.
    pad_factor
        Oversampling of the 3D transform (2 as RELION).
    interpolation
        ``"linear"`` or ``"nearest"``; fixes the gridding correction in ``finalize``.
    n_images
        Number of images inserted (symmetry copies are not counted again).
    """

    data: torch.Tensor
    weight: torch.Tensor
    box_size: int
    pad_factor: float = 2.0
    interpolation: str = "linear"
    n_images: int = 0

    @classmethod
    def zeros(cls, box_size: int, *, pad_factor: float = 2.0, interpolation: str = "linear",
              device=None) -> "PartialReconstruction":
        """Empty grids for maps of ``box_size`` voxels."""
        _check_method(interpolation)
        if int(box_size) != box_size or box_size < 2:
            raise InputError(f"box size must be an integer >= 2, got {box_size}")
        p = padded_size(int(box_size), pad_factor)
        shape = (p + _MARGIN, p + _MARGIN, p // 2 + 1 + _MARGIN)
        return cls(torch.zeros(shape, dtype=torch.complex64, device=device),
                   torch.zeros(shape, dtype=torch.float32, device=device),
                   int(box_size), float(pad_factor), interpolation, 0)

    @property
    def pad_size(self) -> int:
        """``P``, samples per axis of the padded grid."""
        return int(self.weight.shape[-2]) - _MARGIN

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(data, weight)`` in the table layout ``(P, P, P//2 + 1)`` (views of the grids).

        Margin samples are added onto the samples they stand for — ``ky``/``kz`` index ``P + j``
        is ``j`` (the transform of the padded box is periodic), ``kx = P/2 + j`` is the Friedel
        partner ``kx = P/2 - j`` at ``(-ky, -kz)``, conjugated: the adjoint of the margins the
        projector reads (``cryolab.projection``) — and set to zero. This happens in place: the
        partial still represents the same grids, and more images can be added to it.
        """
        p, h = self.pad_size, self.pad_size // 2
        index = torch.arange(p, device=self.weight.device)
        friedel = (p - index) % p
        for grid in (self.data, self.weight):
            for dim in (0, 1):  # kz, ky: the planes after the last wrap around to the first
                grid.narrow(dim, 0, _MARGIN).add_(grid.narrow(dim, p, _MARGIN))
                grid.narrow(dim, p, _MARGIN).zero_()
            core = grid[:p, :p]
            for j in range(1, _MARGIN + 1):  # kx = P/2 + j  ->  conj at kx = P/2 - j, (-ky, -kz)
                margin = core[..., h + j].index_select(0, friedel).index_select(1, friedel)
                core[..., h - j] += margin.conj() if margin.is_complex() else margin
                core[..., h + j] = 0
        return self.data[:p, :p, : h + 1], self.weight[:p, :p, : h + 1]

    def _check_compatible(self, other: "PartialReconstruction") -> None:
        mine = (self.box_size, self.pad_size, self.interpolation)
        theirs = (other.box_size, other.pad_size, other.interpolation)
        if mine != theirs:
            raise InputError(f"cannot combine partial reconstructions with (box, pad size, interpolation) {mine} and {theirs}")

    def __add__(self, other: "PartialReconstruction") -> "PartialReconstruction":
        if not isinstance(other, PartialReconstruction):
            return NotImplemented
        self._check_compatible(other)
        return PartialReconstruction(self.data + other.data, self.weight + other.weight, self.box_size,
                                     self.pad_factor, self.interpolation, self.n_images + other.n_images)


def _check_method(interpolation: str) -> None:
    if interpolation not in INSERT_METHODS:
        raise InputError(f"insertion interpolation must be one of {INSERT_METHODS}, got {interpolation!r}")


# --------------------------------------------------------------------------------------------
# Scattering points into the grids
# --------------------------------------------------------------------------------------------


@contextmanager
def _single_threaded():
    """Run torch ops on one thread: the scatter (``index_add_``) is serial anyway, and the small
    element-wise ops around it lose far more to thread synchronisation than they gain, badly so
    on a busy machine. Parallelism belongs one level up: chunks in separate processes, whose
    partial reconstructions add."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _slice_points(k2d: torch.Tensor, rotations: torch.Tensor, pad: int):
    """Table coordinates of the slice points ``Aᵀ (kx, ky, 0)``, folded onto ``kx ≥ 0``, per component.

    The geometry of ``cryolab.projection._slice_table_coordinates`` (the projector's), computed as
    three contiguous ``(..., M)`` arrays ``x, y, z`` (array-index coordinates of the centred rfft
    table) plus the mask of points reflected through the origin (whose value is conjugated):
    component arrays keep every later step on contiguous memory.
    """
    qx, qy = k2d[:, 0], k2d[:, 1]  # (M,) cycles/pixel
    a = rotations[..., :2, :, None]  # (..., 2, 3, 1): rows A[0, :], A[1, :]
    x = qx * a[..., 0, 0, :] + qy * a[..., 1, 0, :]
    reflected = x < 0
    scale = torch.where(reflected, -float(pad), float(pad))  # fold kx < 0 onto -k, in table units
    x = x * scale
    y = (qx * a[..., 0, 1, :] + qy * a[..., 1, 1, :]) * scale + pad // 2
    z = (qx * a[..., 0, 2, :] + qy * a[..., 1, 2, :]) * scale + pad // 2
    # a point on the band edge can land a rounding error below index 0: index P is the same
    # plane (the grids are periodic), and the margin holds it
    y = torch.where(y < 0, y + pad, y)
    z = torch.where(z < 0, z + pad, z)
    return x, y, z, reflected


def _scatter(data: torch.Tensor, weight: torch.Tensor, values: torch.Tensor, ctf2: torch.Tensor | None,
             x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, interpolation: str) -> None:
    """Add ``values`` (complex ``(K,)``) and ``ctf2`` (real ``(K,)``, or ones) at table coordinates
    ``x, y, z`` (each ``(K,)``, folded onto ``kx ≥ 0``) into the margin grids ``data``/``weight``
    (``(P + 2, P + 2, P//2 + 3)``)."""
    _, ny, nx = weight.shape
    stride_y, stride_z = nx, ny * nx
    data_flat, weight_flat = data.view(-1), weight.view(-1)
    if ctf2 is None:
        ctf2 = torch.ones_like(x)
    if interpolation == "nearest":
        index = (torch.floor(z + 0.5) * stride_z + torch.floor(y + 0.5) * stride_y + torch.floor(x + 0.5))
        index = index.to(torch.int64)
        data_flat.scatter_add_(0, index, values)
        weight_flat.scatter_add_(0, index, ctf2)
        return
    fx, fy, fz = torch.floor(x), torch.floor(y), torch.floor(z)
    base = fz.to(torch.int64).mul_(stride_z).add_(fy.to(torch.int64), alpha=stride_y).add_(fx.to(torch.int64))
    # Visit the grid in memory order: the scatter is bound by memory latency, and sorted indices
    # turn random accesses into a sweep (about twice as fast for ~10⁶ points, sort included).
    base, order = torch.sort(base)
    wx, wy, wz = [(1 - t, t) for t in ((c - fc).index_select(0, order) for c, fc in ((x, fx), (y, fy), (z, fz)))]
    real_values = torch.view_as_real(values.index_select(0, order))  # (K, 2): scaled by real tap weights
    ctf2 = ctf2.index_select(0, order)
    # one scatter per tap, all points at once (cheaper than one scatter of all eight taps, whose
    # (K, 8) broadcast products cost more than they save), into buffers reused by every tap
    index, wzy, tap = torch.empty_like(base), torch.empty_like(x), torch.empty_like(x)
    spread, tap_weight = torch.empty_like(real_values), torch.empty_like(x)
    for dz in (0, 1):
        for dy in (0, 1):
            torch.mul(wz[dz], wy[dy], out=wzy)
            for dx in (0, 1):
                torch.mul(wzy, wx[dx], out=tap)
                torch.add(base, dz * stride_z + dy * stride_y + dx, out=index)
                torch.mul(real_values, tap[:, None].expand(-1, 2), out=spread)  # expanded: 2x faster than broadcast
                data_flat.scatter_add_(0, index, torch.view_as_complex(spread))
                weight_flat.scatter_add_(0, index, torch.mul(ctf2, tap, out=tap_weight))


# --------------------------------------------------------------------------------------------
# The compiled CPU path (linear interpolation)
# --------------------------------------------------------------------------------------------
#
# The torch path above spends most of its time outside the scatter: shifting, CTF-weighting,
# gathering and conjugating values, and eight weight products per point, each a pass over
# memory. The compiled path does all of that per point, in registers: one numba kernel takes
# the raw rfft of each image, multiplies it by the separable phase ramp (the particle origin and
# the move of the image centre to index 0, which replaces ``ifftshift``) and the CTF, and adds
# the eight trilinear taps to the data and weight grids. The points are visited in table order,
# as in ``cryolab.projection``'s sweep: every image row is cut into segments of a few
# neighbouring pixels, the segments of all images of a call are bucketed by the (kz, ky) cell of
# the grid their middle pixel falls in (a counting sort), and the buckets are swept in memory
# order, so that each part of the 100 MB grids is brought into cache once per call instead of
# once per image (about twice as fast). The kernel releases the GIL: threads back-projecting
# into separate partials run in parallel (``reconstruct_from_particles(workers=...)``). The
# kernel is self-contained (its geometry is that of ``_slice_points``; tests check both paths
# and ``insert_central_slices_rfft`` agree), so numba's on-disk cache of it, keyed on this file,
# never goes stale: that is why its sort (``_nb_sweep_order``) repeats the projector's instead
# of calling it, since a compiled caller holds a copy of its callee that a change in another
# file would not invalidate. ``CRYOLAB_NUMBA=0``, other devices, autograd and nearest-neighbour insertion
# take the torch path.

_CELL_BITS = 3  # grid cells of 8 × 8 (kz, ky) samples are the sort buckets
#: Images per kernel call: the sort sweeps the grids once per call, so more is better, up to
#: the memory of the prepared spectra (~100 bytes per pixel and image with the CTF).
_IMAGES_PER_SWEEP = 512
_PREFETCH_AHEAD = 16  # segments
_POSES_PER_SORT = 1024  # bounds the sort buffers (~12 bytes per segment, ~800 segments per 128² image)
#: Images per torch FFT / CTF call while preparing a sweep: small batches stay in cache (the
#: FFT of 64 images of 128² runs ~2.5x faster per image than that of 512).
_PREPARE_BATCH = 64
_KERNEL_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _numba():
    """The numba module, or None where it is not installed."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return numba


def _numba_enabled() -> bool:
    """Compiled kernels are used: numba is installed and ``CRYOLAB_NUMBA`` is not ``0``."""
    return os.environ.get("CRYOLAB_NUMBA", "1") != "0" and _numba() is not None


def _compiled_path_enabled(interpolation: str, *tensors) -> bool:
    """Linear insertion of CPU tensors that need no gradient, with the kernels enabled."""
    return (interpolation == "linear"
            and all(not isinstance(t, torch.Tensor) or (t.device.type == "cpu" and not t.requires_grad)
                    for t in tensors)
            and _numba_enabled())


def _backproject_kernel():
    """The compiled kernel (loaded from numba's on-disk cache after the first run)."""
    with _KERNEL_LOCK:  # threads may ask at once: compile once
        module = globals()
        if not hasattr(module["_nb_backproject"], "py_func"):
            numba = _numba()
            module["_nb_prefetch"] = _prefetch_intrinsic()
            for name in ("_nb_fold", "_nb_add_tap"):
                module[name] = numba.njit(cache=True, inline="always")(module[name])
            module["_nb_sweep_order"] = numba.njit(cache=True)(module["_nb_sweep_order"])
            module["_nb_backproject"] = numba.njit(cache=True, nogil=True)(module["_nb_backproject"])
        return module["_nb_backproject"]


def _prefetch_intrinsic():
    """``_nb_prefetch(array, index)`` for compiled code: LLVM's prefetch hint for ``array[index]``.

    The sweep visits the images of a call in grid order, so the spectrum and CTF of the next
    segment are rarely in cache; asking for them a few segments ahead hides that latency (~12 %
    of the kernel's time on a 128² data set).
    """
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
            byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            function = builder.module.declare_intrinsic(
                "llvm.prefetch", [byte_pointer], ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]))
            # a read, high temporal locality, data cache
            builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(array, index), codegen

    return prefetch


@functools.lru_cache(maxsize=8)
def _image_geometry(n: int):
    """Band-limited pixels of an ``n × n`` rfft image and their segments (numpy, read-only).

    Returns ``kxy`` (float32 ``(M, 2)``, cycles/pixel), ``pixel`` (flat rfft index), ``row`` and
    ``col`` of each pixel, and the segments ``first``, ``count``: runs of a few consecutive pixels
    of one row (:func:`cryolab.projection.slice_segments`).
    """
    k2d, pixel = band_limited_frequencies((n, n), "cpu")
    pixel = pixel.numpy().astype(np.int64)
    row, col = np.divmod(pixel, n // 2 + 1)
    first, count = slice_segments((n, n))  # the projector's segments
    return k2d.to(torch.float32).numpy(), pixel, row, col, first, count


# The kernels (plain Python until _backproject_kernel compiles them).


def _nb_prefetch(array, index):
    """A cache hint, nothing in Python (compiled: :func:`_prefetch_intrinsic`)."""


def _nb_fold(x, y, z, pf, o):
    """Grid coordinates of the frequency ``(x, y, z)`` (cycles/pixel, ``Aᵀ (kx, ky, 0)``), folded
    onto kx >= 0, and whether it was reflected (its value is conjugated): ``_slice_points`` for
    one point."""
    reflected = x < 0
    if reflected:
        x = -x
        y = -y
        z = -z
    return x * pf, y * pf + o, z * pf + o, reflected


def _nb_sweep_order(rot, kxy, first, count, j0, j1, p, pf, o, keys, cells, order):
    """Counting sort of the segments of poses j0 … j1-1 by the (kz, ky) grid cell of their middle
    pixel; fills ``order`` with ``(pose - j0) << bits | segment`` codes."""
    n_seg = first.shape[0]
    bits = 1
    while (1 << bits) < n_seg:
        bits += 1
    n_cell = (p >> _CELL_BITS) + 1
    cells[:] = 0
    i = 0
    for j in range(j0, j1):
        for s in range(n_seg):
            m = first[s] + (count[s] >> 1)
            kx, ky = kxy[m, 0], kxy[m, 1]
            _, y, z, _ = _nb_fold(kx * rot[j, 0, 0] + ky * rot[j, 1, 0], kx * rot[j, 0, 1] + ky * rot[j, 1, 1],
                                  kx * rot[j, 0, 2] + ky * rot[j, 1, 2], pf, o)
            k = (min(max(np.int64(z), 0), p) >> _CELL_BITS) * n_cell + (min(max(np.int64(y), 0), p) >> _CELL_BITS)
            keys[i] = k
            cells[k + 1] += 1
            i += 1
    for k in range(cells.shape[0] - 1):
        cells[k + 1] += cells[k]
    i = 0
    for j in range(j0, j1):
        for s in range(n_seg):
            k = keys[i]
            order[cells[k]] = ((j - j0) << bits) | s
            cells[k] += 1
            i += 1
    return i, bits


def _nb_add_tap(data, weight, t, tap, vr, vi, c2):
    """Add ``tap · (vr + i vi)`` to complex sample ``t`` of ``data`` (a flat real view) and
    ``tap · c2`` to ``weight[t]``; unsigned ``t``: no negative-index wrapping, no complex product."""
    k = t + t
    data[k] += tap * vr
    data[k + np.uint64(1)] += tap * vi
    weight[t] += tap * c2


def _nb_backproject(spectra, ramp_y, ramp_x, ctf, has_ctf, multiply_ctf, rot, copies, kxy, pixel, row, col,
                    first, count, data, weight, p, stride_y, stride_z, pf, o, one, group):
    """Insert ``ramp · CTF · spectrum`` (and ``CTF²``) of every band-limited pixel at its pose.

    ``spectra`` complex ``(B, L)`` raw rffts; ``ramp_y`` ``(B or 1, h)`` and ``ramp_x``
    ``(B or 1, w')`` the separable phase factors; ``ctf`` ``(B or 1, L)`` (ignored unless
    ``has_ctf``); ``rot`` ``(B · copies, 3, 3)``, pose ``j`` belonging to image ``j // copies``;
    ``data`` (a flat real view, re/im interleaved) and ``weight`` the flat margin grids with
    strides ``stride_y``, ``stride_z``; ``pf``,
    ``o`` and ``one`` are ``P``, ``P // 2`` and 1 in the precision of the grids.
    """
    n_pose = rot.shape[0]
    n_seg = first.shape[0]
    cells = np.empty(((p >> _CELL_BITS) + 1) ** 2 + 1, np.int64)
    keys = np.empty(min(group, n_pose) * n_seg, np.int32)
    order = np.empty(min(group, n_pose) * n_seg, np.int64)
    per_image_y = ramp_y.shape[0] > 1
    per_image_x = ramp_x.shape[0] > 1
    per_image_ctf = ctf.shape[0] > 1
    dy, dz = np.uint64(stride_y), np.uint64(stride_z)  # tap offsets
    dx = np.uint64(1)
    for j0 in range(0, n_pose, group):
        j1 = min(j0 + group, n_pose)
        total, bits = _nb_sweep_order(rot, kxy, first, count, j0, j1, p, pf, o, keys, cells, order)
        mask = (1 << bits) - 1
        for q in range(total):
            if q + _PREFETCH_AHEAD < total:  # the inputs of a segment a few steps ahead
                ahead = order[q + _PREFETCH_AHEAD]
                i_ahead = (j0 + (ahead >> bits)) // copies
                k_ahead = pixel[first[ahead & mask]]
                _nb_prefetch(spectra[i_ahead], k_ahead)
                _nb_prefetch(spectra[i_ahead], k_ahead + 4)  # 8 complex64 span two cache lines at most
                if has_ctf:
                    _nb_prefetch(ctf[i_ahead if per_image_ctf else 0], k_ahead)
            j = j0 + (order[q] >> bits)
            s = order[q] & mask
            i = j // copies
            iy = i if per_image_y else 0
            ix = i if per_image_x else 0
            ic = i if per_image_ctf else 0
            # a segment is a run of consecutive pixels of one row: the row's ramp factor, ky and
            # its share of the slice coordinates are constant along it
            m0 = first[s]
            k0 = pixel[m0]
            c0 = col[m0]
            ry = ramp_y[iy, row[m0]]
            ky = kxy[m0, 1]
            a0x, a0y, a0z = rot[j, 0, 0], rot[j, 0, 1], rot[j, 0, 2]
            bx, by, bz = ky * rot[j, 1, 0], ky * rot[j, 1, 1], ky * rot[j, 1, 2]
            for d in range(count[s]):
                k = k0 + d
                v = spectra[i, k] * (ry * ramp_x[ix, c0 + d])
                c2 = one
                if has_ctf:
                    c = ctf[ic, k]
                    c2 = c * c
                    if multiply_ctf:
                        v = v * c
                kx = kxy[m0 + d, 0]
                x, y, z, reflected = _nb_fold(kx * a0x + bx, kx * a0y + by, kx * a0z + bz, pf, o)
                if reflected:
                    v = v.conjugate()
                # a point on the band edge can land a rounding error below index 0: index P is
                # the same plane (the grids are periodic), and the margin holds it
                if y < 0:
                    y += pf
                if z < 0:
                    z += pf
                fx = np.floor(x)
                fy = np.floor(y)
                fz = np.floor(z)
                tx = x - fx
                ty = y - fy
                tz = z - fz
                wx = one - tx
                w00 = (one - tz) * (one - ty)
                w01 = (one - tz) * ty
                w10 = tz * (one - ty)
                w11 = tz * ty
                t = np.uint64(np.int64(fz) * stride_z + np.int64(fy) * stride_y + np.int64(fx))
                vr, vi = v.real, v.imag
                _nb_add_tap(data, weight, t, w00 * wx, vr, vi, c2)
                _nb_add_tap(data, weight, t + dx, w00 * tx, vr, vi, c2)
                _nb_add_tap(data, weight, t + dy, w01 * wx, vr, vi, c2)
                _nb_add_tap(data, weight, t + dy + dx, w01 * tx, vr, vi, c2)
                t += dz
                _nb_add_tap(data, weight, t, w10 * wx, vr, vi, c2)
                _nb_add_tap(data, weight, t + dx, w10 * tx, vr, vi, c2)
                _nb_add_tap(data, weight, t + dy, w11 * wx, vr, vi, c2)
                _nb_add_tap(data, weight, t + dy + dx, w11 * tx, vr, vi, c2)


def _phase_ramps(shifts_A, pixel_size_A, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column factors, complex64 ``(B or 1, n)`` and ``(B or 1, n//2 + 1)``, that turn the
    raw ``rfft2`` of an image centred at ``n//2`` into ``apply_shifts_rfft(rfft_centered(image),
    -shifts_A)``.

    ``rfft_centered`` is the raw transform times the ramp of a translation by ``-(n//2)`` pixels,
    and undoing the origin ``o`` is a translation by ``+o``: one ramp of ``o - n//2`` does both,
    with ``phase_ramp_rfft``'s Nyquist factor ``cos(π s)`` (exact, as ``n//2`` is an integer).
    """
    if shifts_A is None:
        shifts_px = torch.zeros(1, 2, dtype=torch.float64)
    else:
        shifts_px = shifts_A.to(torch.float64) / float(pixel_size_A)
    shifts_px = shifts_px - (n // 2)
    zero = torch.zeros_like(shifts_px[:, :1])
    ramp_y = phase_ramp_rfft(torch.cat([zero, shifts_px[:, 1:]], dim=1), (n, 1))[..., 0]
    ramp_x = phase_ramp_rfft(shifts_px[:, :1], (n,))
    return ramp_y.contiguous(), ramp_x.contiguous()


def _backproject_compiled(images, rotations, shifts_A, ctf, pixel_size_A, ops, ctf_premultiplied, out) -> None:
    """:func:`backproject_chunk`'s work on the compiled path, into ``out``'s grids (in place)."""
    b, n = images.shape[0], images.shape[-1]
    half = n // 2 + 1
    kxy, pixel, row, col, first, count = _image_geometry(n)
    kernel = _backproject_kernel()
    copies, pad = ops.shape[0], out.pad_size
    _, ny, nx = out.weight.shape
    data, weight = torch.view_as_real(out.data).view(-1).numpy(), out.weight.view(-1).numpy()
    from_params = ctf is not None and hasattr(ctf, "batch_shape")
    no_ctf = torch.zeros(1, 1, dtype=torch.float32)
    for start in range(0, b, _IMAGES_PER_SWEEP):
        stop = min(start + _IMAGES_PER_SWEEP, b)
        spectra = torch.empty(stop - start, n, half, dtype=torch.complex64)
        ctf_values = torch.empty(stop - start, n, half, dtype=torch.float32) if from_params else None
        for a in range(start, stop, _PREPARE_BATCH):
            z = min(a + _PREPARE_BATCH, stop)
            torch.fft.rfft2(images[a:z], out=spectra[a - start:z - start])
            if from_params:
                ctf_values[a - start:z - start] = _ctf_values(_select(ctf, a, z), n, pixel_size_A, "cpu")
        if ctf is None:
            ctf_values = no_ctf
        elif not from_params:
            ctf_values = _select(ctf, start, stop)
        ramp_y, ramp_x = _phase_ramps(_select(shifts_A, start, stop), pixel_size_A, n)
        poses = (rotations[start:stop, None] @ ops[None]).reshape(-1, 3, 3).contiguous()  # A R, image-major
        kernel(spectra.view(stop - start, -1).numpy(), ramp_y.numpy(), ramp_x.numpy(),
               ctf_values.reshape(ctf_values.shape[0], -1).contiguous().numpy(), ctf is not None,
               not ctf_premultiplied, poses.numpy(), copies, kxy, pixel, row, col, first, count, data, weight,
               pad, nx, ny * nx, np.float32(pad), np.float32(pad // 2), np.float32(1), _POSES_PER_SORT)


# --------------------------------------------------------------------------------------------
# The public map step
# --------------------------------------------------------------------------------------------


def _ctf_values(ctf, n: int, pixel_size_A, device) -> torch.Tensor:
    if isinstance(ctf, (torch.Tensor, np.ndarray)):
        values = as_tensor(ctf, device=device)
        if values.dim() < 2 or tuple(values.shape[-2:]) != (n, n // 2 + 1):
            raise InputError(f"CTF values must have shape (..., {n}, {n // 2 + 1}) (rfft layout), got {tuple(values.shape)}")
        return values.to(torch.float32)
    if pixel_size_A is None:
        raise InputError("a CTF given as parameters needs pixel_size_A")
    from cryolab.ctf import ctf_2d

    return ctf_2d(ctf, (n, n), pixel_size_A, rfft=True).to(device=device, dtype=torch.float32)


def _select(x, start: int, stop: int):
    if x is None:
        return None
    if hasattr(x, "batch_shape"):  # CTFParams
        return x if len(x.batch_shape) == 0 else x[start:stop]
    return x if x.dim() == 0 or x.shape[0] == 1 else x[start:stop]


def backproject_chunk(
    images,
    rotations,
    shifts_A=None,
    ctf=None,
    *,
    pixel_size_A: float | None = None,
    pad_factor: float = 2,
    interpolation: str = "linear",
    symmetry="C1",
    ctf_premultiplied: bool = False,
    out: PartialReconstruction | None = None,
) -> PartialReconstruction:
    """Insert CTF-weighted image transforms into data and weight grids (one map step).

    Parameters
    ----------
    images
        Real ``(B, N, N)`` particle images centred at ``N//2`` (numpy or torch).
    rotations
        ``(B, 3, 3)`` RELION matrices ``A`` (map → view frame, ``cryolab.rotations``).
    shifts_A
        Optional ``(B, 2)`` origins ``(rlnOriginXAngst, rlnOriginYAngst)`` in Å; undone by the
        phase ramp ``e^{−2πi q·o}`` (``apply_shifts_rfft`` with ``−o``). Needs ``pixel_size_A``.
    ctf
        Optional CTF: ``cryolab.ctf.CTFParams`` with batch shape ``(B,)`` (or scalar), or CTF
        values ``(B, N, N//2 + 1)`` in the unshifted rfft layout. Without a CTF every pixel has
        weight 1.
    pixel_size_A
        Pixel size in Å (for shifts and CTF parameters).
    pad_factor
        Oversampling of the 3D transform; the grids have ``P = padded_size(N, pad_factor)``
        samples per axis. Ignored when ``out`` is given (its grids decide).
    interpolation
        ``"linear"`` (trilinear, RELION's default) or ``"nearest"`` (RELION's ``--NN``; a cruder
        kernel, shown for teaching). Ignored when ``out`` is given.
    symmetry
        Point group (``"C4"``, ``"D7"``, ``"I"``, … — :func:`symmetry_operators`) or ``(G, 3, 3)``
        operators ``R``: every image is inserted at each pose ``A R``, so a symmetric map is
        recovered from views of one asymmetric unit.
    ctf_premultiplied
        The images already carry one factor of the CTF (RELION's
        ``rlnCtfDataAreCtfPremultiplied``): the data grid gets ``F[image]``, the weight grid
        still ``CTF²``.
    out
        Accumulate into this partial's grids in place (they are modified) instead of allocating
        new ones; the returned partial shares them.

    Returns
    -------
    PartialReconstruction
        The sum of ``out`` (if given) and the contribution of these images.

    Notes
    -----
    Equivalent to ``cryolab.projection.insert_central_slices_rfft(CTF·shift·rfft_centered(images),
    A R, (N, N, N), weights=CTF²)`` summed over the symmetry operators, computed in batches (of
    512 images on the compiled path, ~10⁶ points on the torch path) so that memory does not grow
    with ``B`` (tests check the equality for both paths).
    """
    images = as_tensor(images, dtype=torch.float32)
    if images.dim() == 2:
        images = images[None]
    if images.dim() != 3 or images.shape[-1] != images.shape[-2]:
        raise InputError(f"images must be square (B, N, N), got shape {tuple(images.shape)}")
    b, n = images.shape[0], images.shape[-1]
    device = images.device
    rotations = as_tensor(rotations, dtype=torch.float32, device=device)
    if rotations.dim() == 2:
        rotations = rotations[None]
    if rotations.dim() != 3 or tuple(rotations.shape[-2:]) != (3, 3) or rotations.shape[0] not in (1, b):
        raise InputError(f"rotations must have shape ({b}, 3, 3), got {tuple(rotations.shape)}")
    rotations = rotations.expand(b, 3, 3)
    if shifts_A is not None:
        if pixel_size_A is None:
            raise InputError("shifts_A needs pixel_size_A")
        shifts_A = as_tensor(shifts_A, dtype=torch.float32, device=device).reshape(-1, 2)
        if shifts_A.shape[0] not in (1, b):
            raise InputError(f"shifts_A must have shape ({b}, 2), got {tuple(shifts_A.shape)}")
    if ctf is not None and not hasattr(ctf, "batch_shape"):
        ctf = _ctf_values(ctf, n, pixel_size_A, device)
        if ctf.dim() == 2:
            ctf = ctf[None]
        if ctf.shape[0] not in (1, b):
            raise InputError(f"CTF values for {ctf.shape[0]} images given for {b} images")
    elif ctf is not None and len(ctf.batch_shape) and ctf.batch_shape[0] not in (1, b):
        raise InputError(f"CTF parameters for {ctf.batch_shape[0]} images given for {b} images")

    if out is None:
        out = PartialReconstruction.zeros(n, pad_factor=pad_factor, interpolation=interpolation, device=device)
    elif out.box_size != n:
        raise InputError(f"images of {n} pixels cannot go into a reconstruction of box {out.box_size}")
    pad = out.pad_size
    ops = as_symmetry_operators(symmetry, dtype=torch.float32, device=device)
    if (_compiled_path_enabled(out.interpolation, images, rotations, shifts_A, ctf, out.data)
            and out.data.is_contiguous() and out.weight.is_contiguous()):
        with _single_threaded():
            _backproject_compiled(images, rotations, shifts_A, ctf, pixel_size_A, ops, ctf_premultiplied, out)
        return PartialReconstruction(out.data, out.weight, out.box_size, out.pad_factor, out.interpolation,
                                     out.n_images + b)
    g = ops.shape[0]
    k2d, index = band_limited_frequencies((n, n), device)
    m = index.numel()
    step = max(1, _POINTS_PER_BATCH // (m * g))
    with _single_threaded():
        for start in range(0, b, step):
            stop = min(start + step, b)
            spectra = rfft_centered(images[start:stop], 2)
            shifts = _select(shifts_A, start, stop)
            if shifts is not None and bool((shifts != 0).any()):
                spectra = apply_shifts_rfft(spectra, -shifts, pixel_size_A)
            ctf2 = None
            if ctf is not None:
                params = _select(ctf, start, stop)
                c = params if isinstance(params, torch.Tensor) else _ctf_values(params, n, pixel_size_A, device)
                if not ctf_premultiplied:
                    spectra = spectra * c
                ctf2 = (c * c).expand(spectra.shape).reshape(stop - start, -1)[:, index]
                ctf2 = ctf2[:, None].expand(-1, g, -1).reshape(-1)
            values = spectra.reshape(stop - start, -1)[:, index]  # (b, M)
            rots = rotations[start:stop, None] @ ops[None]  # (b, G, 3, 3): the poses A R
            x, y, z, reflected = _slice_points(k2d, rots, pad)  # (b, G, M) each
            values = values[:, None].expand(-1, g, -1)
            values = torch.where(reflected, values.conj(), values).reshape(-1)
            _scatter(out.data, out.weight, values, ctf2, x.reshape(-1), y.reshape(-1), z.reshape(-1),
                     out.interpolation)
    return PartialReconstruction(out.data, out.weight, out.box_size, out.pad_factor, out.interpolation,
                                 out.n_images + b)
