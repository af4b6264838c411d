"""Local resolution: the half-map FSC in a small soft window around each point of a map.

A map is rarely equally good everywhere: a rigid core is resolved better than flexible loops or
a detergent belt. Following blocres (Cardone et al. 2013) and RELION's ``relion_postprocess
--locres``, the local resolution at a point is the resolution where the FSC of the two half maps,
both seen through the same small window centred there, crosses a threshold. It is computed on a
regular grid of points ``step_voxels`` apart and interpolated trilinearly back to every voxel.

Windows. Each window is a cube of ``W = round(window_A / pixel_size_A)`` voxels holding a soft
sphere: 1 out to ``W/4`` voxels from its centre, then a raised cosine falling to 0 at ``W/2``,
the inscribed sphere. A sphere rather than a cube with a separable Hann window because its
weight depends only on the distance, so the measurement does not depend on the direction of
the map's axes, as RELION's spherical local masks; and it reaches 0 before the faces of the
cube, so the periodic FFT of the window sees no edge. The window-weighted mean is subtracted
first: otherwise the mean density leaks, through the window's transform, into the lowest shells
of both halves alike and correlates them. Points near the box faces see zeros beyond it.

Crossing. The FSC of the windowed maps is :func:`cryolab.validate.fsc_from_spectra` on the
``W``-cube (shells ``round(|k| W)``, RELION's sums), and the crossing that of
:func:`cryolab.validate.fsc_resolution_A`, linearly interpolated between shells: a window has
only ``W/2`` shells, and RELION's last-shell rule would quantise the map into a handful of values
(``2p, 2.2p, 2.5p, 2.9p, ...`` for ``W = 20``). The default threshold is 0.143, as RELION's locres
(Rosenthal & Henderson's criterion for half maps). The resolution is bounded by the window: a
point whose FSC is below the threshold already at shell 1 gets ``W · pixel_size_A`` (the
coarsest resolution the window can measure), one whose FSC never drops below it gets Nyquist,
``2 pixel_size_A``.

With ``crossing="last_above"`` the crossing is instead the last shell of the run from the origin
above the threshold, RELION's rule, ``W · pixel_size_A / s``. It is only nominally RELION's:
RELION evaluates the local FSC on the shells of the whole box (``N`` of them where the window
has ``W``), so its rounding costs a fraction of a shell of the box, while on the window's
shells it makes every value coarser by up to a whole window shell (half a shell on average).

Phase-randomisation correction. Two halves seen through the same window share the window's
transform: low-resolution density common to both, multiplied by the window, puts correlated
power into the shells beyond it, and the local FSC is inflated there. RELION's locres corrects
each local FSC as Chen et al. (2013) correct a masked FSC (:mod:`cryolab.validate.masked`):
with ``randomize_at_A``, the phases of both half maps are randomised once, on the whole box,
beyond ``randomize_at_A`` (the first randomised shell of the box is
``floor(N · pixel_size_A / randomize_at_A)``, RELION's rounding, and each half gets its own
phases, drawn from ``seed``); the same windows are taken from the randomised maps, in the
same chunks, and their FSC ``FSC_n`` corrects the FSC ``FSC_t`` of the original windows as
``(FSC_t - FSC_n) / (1 - FSC_n)`` from the window shell ``s = round(W · pixel_size_A /
randomize_at_A)`` plus two (:func:`cryolab.validate.phase_randomization_correction`; two
shells of the window are about the width of its transform, over which the randomised FSC is
still rising out of the unrandomised shells). Unlike RELION, a negative ``FSC_n`` is taken as
0: the correlation a window creates is that of a component common to both halves, never
negative, so a negative value is sampling noise (a window shell holds few independent samples,
and the noise of ``FSC_n`` is that of the local FSC itself); left in, it would raise the
corrected FSC and make a fifth of the points of an unmasked-like map finer by more than a tenth
of a shell. Clamped, the corrected FSC is never above the uncorrected one
(``(t - n) / (1 - n) <= t`` for ``0 <= n < 1``), so the correction only ever makes a local
resolution coarser; the price is a small coarsening where the window creates no correlation
(a quarter of a shell on average in the tests). The window-weighted mean is subtracted and the
window is soft, so here the inflation is small to begin with, unlike RELION's local masks
whose mean is not removed; see ``benchmarks/local_resolution.py`` for the effect on a map
and the agreement with RELION. The correction and the last-shell rule are off by default: on
the benchmark's 96³ ADK half maps the correction moves the median local resolution by 0.05 Å
and the last-shell rule by 0.2 Å; together they bring the median from 0.40 Å to 0.15 Å finer
than RELION's but leave the voxelwise correlation with it at 0.80, and agreeing more closely
with RELION's quantised values is not being more accurate.

The three remaining differences from ``relion_postprocess --locres``: RELION's local mask is
flat to ``S/2`` and falls to 0 at ``1.5 S`` (cryolab's window of ``3 S`` is flat to ``0.75 S``
and reaches 0 at the same radius); RELION samples every ``S`` Å and blends the samples at a
voxel as the mask-weighted harmonic mean over every local mask that covers it, where cryolab
interpolates a finer grid trilinearly; and RELION caps the local resolution at
``--locres_minres`` (50 Å), cryolab at the window.

Mask. With a mask, only the voxels where it is at least 0.5 get a local resolution; the others
are NaN (not measured: whatever value they got would be invented; a command that needs a value
everywhere fills in the global resolution). Grid points are computed where they enter the
interpolation of a voxel inside the mask, and nowhere else.

References
----------
G. Cardone, J. B. Heymann & A. C. Steven, "One number does not fit all: mapping local variations
in resolution in cryo-EM reconstructions", J. Struct. Biol. 184, 226-236 (2013) (blocres);
S. Chen, G. McMullan, A. R. Faruqi, et al., "High-resolution noise substitution to measure
overfitting and validate resolution in 3D structure determination by single particle electron
cryomicroscopy", Ultramicroscopy 135, 24-35 (2013) (the phase-randomisation correction);
A. Kucukelbir, F. J. Sigworth & H. D. Tagare, "Quantifying the local resolution of cryo-EM
density maps", Nat. Methods 11, 63-65 (2014) (ResMap);
RELION ``Postprocessing::run_locres`` (src/postprocessing.cpp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cryolab._progress import progress
from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import randomize_phases_beyond
from cryolab.interpolate import sample_grid_3d
from cryolab.masks import spherical_mask
from cryolab.validate.fsc import _check_pair, fsc_from_spectra, fsc_resolution_A
from cryolab.validate.masked import phase_randomization_correction

__all__ = ["LocalResolution", "local_resolution", "MIN_WINDOW_VOXELS"]

MIN_WINDOW_VOXELS = 6
"""Smallest window (voxels): 3 shells beyond the origin; fewer cannot locate a crossing."""

_MASK_INSIDE = 0.5  # a soft mask's value from which a voxel counts as inside
_CROSSINGS = ("interpolated", "last_above")  # fsc_resolution_A's methods


@dataclass(frozen=True)
class LocalResolution:
    """What :func:`local_resolution` computed.

    Attributes
    ----------
    resolution_A : float32 ``(N, N, N)``
        Local resolution (Å) of every voxel; NaN outside the mask.
    grid_resolution_A : float32 ``(Gz, Gy, Gx)``
        Local resolution (Å) at the grid points ``start + i · step_voxels`` on each axis; NaN at
        points that were not computed (away from the mask).
    grid_start_voxel, step_voxels : int
        Index of the first grid point (the same on every axis; the box centre ``N // 2`` is a grid
        point) and the grid spacing, in voxels.
    inside : bool ``(N, N, N)``
        The voxels that got a local resolution (mask >= 0.5; all without a mask).
    window_A : float
        Edge of the window cube, ``window_voxels · pixel_size_A`` (Å).
    window_voxels : int
    threshold : float
        FSC threshold of the crossing.
    pixel_size_A : float
    crossing : str
        ``"interpolated"`` or ``"last_above"`` (:func:`cryolab.validate.fsc_resolution_A`).
    randomize_at_A : float or None
        Resolution (Å) beyond which the phases were randomised for the correction; None: no
        correction.
    randomize_from_window_shell : int or None
        Window shell ``s = round(W · pixel_size_A / randomize_at_A)``; the local FSCs are
        corrected from shell ``s + 2`` on.
    """

    resolution_A: torch.Tensor
    grid_resolution_A: torch.Tensor
    grid_start_voxel: int
    step_voxels: int
    inside: torch.Tensor
    window_A: float
    window_voxels: int
    threshold: float
    pixel_size_A: float
    crossing: str = "interpolated"
    randomize_at_A: float | None = None
    randomize_from_window_shell: int | None = None


def _window_voxels(window_A: float | None, pixel_size_A: float, box_size: int) -> int:
    if window_A is None:
        window_A = min(20, box_size) * pixel_size_A
    if not (math.isfinite(window_A) and window_A > 0):
        raise InputError(f"the window must be a positive number of Å, got {window_A}")
    w = int(round(window_A / pixel_size_A))
    if w > box_size:
        raise InputError(f"the window of {window_A:g} Å ({w} voxels) is larger than the box ({box_size} voxels of {pixel_size_A:g} Å)")
    if w < MIN_WINDOW_VOXELS:
        raise InputError(f"the window of {window_A:g} Å is {w} voxels of {pixel_size_A:g} Å; it needs at least {MIN_WINDOW_VOXELS} "
                         f"({MIN_WINDOW_VOXELS * pixel_size_A:g} Å) to hold enough Fourier shells")
    return w


def _computed_grid_points(inside: torch.Tensor, start: int, step: int) -> torch.Tensor:
    """Grid points within ``step - 1`` voxels (Chebyshev) of an inside voxel: those that enter the
    trilinear interpolation of some inside voxel with a nonzero weight. Bool ``(Gz, Gy, Gx)``."""
    near = F.max_pool3d(inside[None, None].float(), kernel_size=2 * step - 1, stride=1, padding=step - 1)[0, 0]
    return near[start::step, start::step, start::step] > 0


def _windowed_spectra(windows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """rfft of ``(..., W, W, W)`` windows after removing their weighted mean and applying the weights."""
    dims = (-3, -2, -1)
    mean = (windows * weights).sum(dim=dims, keepdim=True) / weights.sum()
    return torch.fft.rfftn((windows - mean) * weights, dim=dims)


def local_resolution(
    half_map_a,
    half_map_b,
    pixel_size_A: float,
    *,
    mask=None,
    window_A: float | None = None,
    step_voxels: int = 3,
    threshold: float = 0.143,
    crossing: str = "interpolated",
    randomize_at_A: float | None = None,
    seed: int | torch.Generator = 0,
    max_voxels_per_chunk: int = 2**22,
    show_progress: bool = False,
) -> LocalResolution:
    """Local resolution of two half maps: the FSC crossing in a soft window around each grid point.

    Windows around many grid points are taken at once (a strided ``unfold`` view of the padded
    maps, gathered in chunks of at most ``max_voxels_per_chunk`` window voxels, so memory stays
    bounded whatever the box), transformed together and reduced to one FSC curve each; no
    Python loop runs over voxels. See the module notes for the window, the crossing and the mask.

    Parameters
    ----------
    half_map_a, half_map_b
        Real ``(N, N, N)`` unfiltered, unmasked half maps; computed in float32 on their device.
    pixel_size_A
        Voxel size in Å.
    mask
        Optional ``(N, N, N)`` soft mask in [0, 1]: local resolutions are given where it is at
        least 0.5, NaN elsewhere. It selects points; it is not multiplied into the windows.
    window_A
        Edge of the window cube in Å, rounded to ``W`` voxels (default 20 voxels): between
        ``MIN_WINDOW_VOXELS`` voxels and the box. Larger windows give smoother, less noisy maps
        that blur the boundaries between regions; a window several times the expected
        resolution is the usual choice (blocres, RELION's default of 3 × 25 Å).
    step_voxels
        Spacing of the grid of points where the FSC is computed (voxels); the map in between is
        trilinear. Computing time goes as ``1 / step_voxels³``.
    threshold
        FSC threshold (default 0.143, as RELION's locres).
    crossing
        ``"interpolated"`` (default): the crossing interpolated linearly between the window's
        shells; ``"last_above"``: RELION's last-shell rule on the window's shells, which is
        coarser by half a window shell on average (module notes).
    randomize_at_A
        Correct each local FSC for the window's own correlation by phase randomisation beyond
        this resolution (Å), as ``relion_postprocess --locres_randomize_at`` (RELION's default
        25 Å); it must fall within the window's shells 1 .. ``W // 2``. None (default): no
        correction, the behaviour before this option.
    seed
        Int seed or ``torch.Generator`` for the random phases (with ``randomize_at_A``); the
        default 0 makes the corrected map the same on every run.
    max_voxels_per_chunk
        Bound on the window voxels held at once (each half, and each randomised half with
        ``randomize_at_A``: the chunks are then half as many windows; default 4 M, a peak of
        about 200 MB of intermediate arrays whatever the box).
    show_progress
        Show a progress bar over the chunks.

    Returns
    -------
    :class:`LocalResolution`.
    """
    a = as_tensor(half_map_a).float()
    b = as_tensor(half_map_b).float().to(a.device)
    shape = _check_pair(a, b, 3)
    if a.dim() != 3 or b.dim() != 3:
        raise InputError(f"local_resolution takes single (N, N, N) maps, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if not (pixel_size_A is not None and math.isfinite(pixel_size_A) and pixel_size_A > 0):
        raise InputError(f"pixel_size_A must be a positive number, got {pixel_size_A}")
    if not 0 < threshold < 1:
        raise InputError(f"the FSC threshold must be between 0 and 1, got {threshold}")
    if int(step_voxels) != step_voxels or step_voxels < 1:
        raise InputError(f"step_voxels must be a positive integer, got {step_voxels}")
    if crossing not in _CROSSINGS:
        raise InputError(f"crossing must be one of {', '.join(map(repr, _CROSSINGS))}, got {crossing!r}")
    n, step, pixel_size_A = shape[0], int(step_voxels), float(pixel_size_A)
    w = _window_voxels(window_A, pixel_size_A, n)
    window_shell = None
    if randomize_at_A is not None:
        randomize_at_A = float(randomize_at_A)
        window_shell = round(w * pixel_size_A / randomize_at_A) if math.isfinite(randomize_at_A) and randomize_at_A > 0 else 0
        if not 1 <= window_shell <= w // 2:
            raise InputError(f"randomize_at_A must be a resolution within the window's shells, {w * pixel_size_A / (w // 2):g} to "
                             f"{w * pixel_size_A:g} Å (window shells 1 to {w // 2} of {w} voxels), got {randomize_at_A:g} Å")
    if mask is None:
        inside = torch.ones(shape, dtype=torch.bool, device=a.device)
    else:
        mask = as_tensor(mask, device=a.device)
        if tuple(mask.shape) != shape:
            raise InputError(f"mask has shape {tuple(mask.shape)}, the maps have box {shape}")
        inside = mask >= _MASK_INSIDE
        if not bool(inside.any()):
            raise InputError(f"the mask has no voxel >= {_MASK_INSIDE}: no region to measure")

    # Grid points start + i·step with the box centre among them; window i is centred on point i.
    start = (n // 2) % step
    computed = _computed_grid_points(inside, start, step)
    # Pad so that every window lies in the array: a window centred at c spans padded c .. c+w-1.
    maps = [a, b]
    if window_shell is not None:
        # Randomise the whole maps once, as RELION: shells >= floor(N p / R) of the box change.
        generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        box_shell = max(1, int(n * pixel_size_A / randomize_at_A))
        maps += list(randomize_phases_beyond(torch.stack([a, b]), box_shell - 1, ndim=3, generator=generator))
    both = F.pad(torch.stack(maps), (w // 2, w - 1 - w // 2) * 3)
    windows = both[:, start:, start:, start:].unfold(1, w, step).unfold(2, w, step).unfold(3, w, step)  # a view
    weights = spherical_mask(w, pixel_size_A, w * pixel_size_A / 4, soft_edge_A=w * pixel_size_A / 4, device=a.device)

    points = torch.nonzero(computed)  # (P, 3) grid indices (z, y, x)
    grid = torch.full(computed.shape, math.nan, dtype=torch.float32, device=a.device)
    chunk = max(1, int(max_voxels_per_chunk) // (w**3 * (len(maps) // 2)))
    starts = range(0, len(points), chunk)
    values = []
    for lo in progress(starts, total=len(starts), desc="local resolution", unit="chunk", enabled=show_progress):
        iz, iy, ix = points[lo:lo + chunk].unbind(-1)
        spectra = _windowed_spectra(windows[:, iz, iy, ix], weights)  # (2 or 4, chunk, w, w, w // 2 + 1)
        curves = fsc_from_spectra(spectra[0], spectra[1], (w, w, w))
        if window_shell is not None:
            randomized = fsc_from_spectra(spectra[2], spectra[3], (w, w, w)).clamp(min=0.0)  # see the module notes
            curves = phase_randomization_correction(curves, randomized, window_shell)
        resolution = fsc_resolution_A(curves, w, pixel_size_A, threshold, method=crossing)
        values.append(resolution.clamp(max=w * pixel_size_A))  # inf (shell 1 below) -> the window
    if values:
        grid[computed] = torch.cat(values)

    # Trilinear from the grid to every voxel, in grid-index coordinates clamped to the grid (voxels
    # beyond the last point take its value). Uncomputed points only ever carry zero weight here.
    axis = ((torch.arange(n, dtype=torch.float32, device=a.device) - start) / step).clamp(0, computed.shape[0] - 1)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    coords_xyz = torch.stack([x, y, z], dim=-1).reshape(-1, 3)
    full = sample_grid_3d(torch.nan_to_num(grid, nan=0.0), coords_xyz).reshape(shape)
    full = torch.where(inside, full, torch.full_like(full, math.nan))
    return LocalResolution(
        resolution_A=full,
        grid_resolution_A=grid,
        grid_start_voxel=start,
        step_voxels=step,
        inside=inside,
        window_A=w * pixel_size_A,
        window_voxels=w,
        threshold=float(threshold),
        pixel_size_A=pixel_size_A,
        crossing=crossing,
        randomize_at_A=randomize_at_A,
        randomize_from_window_shell=window_shell,
    )
