"""The contrast transfer function (CTF) of the electron microscope, its envelopes and its correction.

Convention (docs/conventions.md, "CTF"; RELION and CTFFIND): defocus ``U ≥ V`` in Å, positive for
underfocus; the astigmatism angle in degrees from the x axis towards y;
``Δf(θ) = (U+V)/2 + (U−V)/2 · cos(2(θ − angle))`` with ``θ = atan2(ky, kx)``;

    χ(k) = π λ Δf(θ) k² − (π/2) Cs λ³ k⁴ + phase_shift + arcsin(Q0)
    CTF(k) = sin χ(k) · exp(−B k² / 4) · scale

with k in 1/Å and Cs in Å. CTF(0) = +Q0 (no phase shift) and the CTF is positive at low frequency
in underfocus. These formulas agree with RELION 3.1.3 to ~1e-6 on the image grid (tested to 1e-5
in tests/test_ctf.py against the stored fixture tests/data/ctf_relion_reference.npz; see
:func:`ctf_2d` for the one row where RELION's rfft layout differs).

Precision: χ reaches hundreds of radians at high defocus and fine sampling, where float32 rounding
of χ alone is ~1e-5 rad. χ is therefore computed in float64 from exact integer frequency indices
(float32 on devices without float64, i.e. Apple MPS) and returned as float32 — or float64 when
the parameters are float64 tensors.

Parameters travel in a :class:`CTFParams`; every function broadcasts over its batch shape, so a
stack of N particles' CTFs is one ``CTFParams`` whose fields have shape ``(N,)``.

References
----------
- Mindell JA, Grigorieff N (2003) Accurate determination of local defocus and specimen tilt in
  electron microscopy. J Struct Biol 142:334–347 (astigmatic defocus convention, CTFFIND).
- Rohou A, Grigorieff N (2015) CTFFIND4. J Struct Biol 192:216–221 (phase shift term).
- Scheres SHW (2012) RELION. J Struct Biol 180:519–530; RELION 3.1 source ``src/ctf.h``.
- Frank J (2006) Three-Dimensional Electron Microscopy of Macromolecular Assemblies, 2nd ed.,
  Oxford University Press, chapter 2 (CTF, partial coherence envelopes, CTF correction).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from cryolab._tensor import as_tensor, broadcast_shapes
from cryolab.errors import InputError
from cryolab.fourier.grids import fftfreq_grid

__all__ = [
    "CTFParams",
    "electron_wavelength_A",
    "ctf_2d",
    "ctf_1d",
    "ctf_phase_chi",
    "spatial_coherence_envelope",
    "temporal_coherence_envelope",
    "chromatic_focal_spread_A",
    "phase_flip",
    "wiener_filter",
]

# RELION's relativistic wavelength constants: λ = h / sqrt(2 m0 e V (1 + e V / (2 m0 c²))).
_WAVELENGTH_H_OVER_SQRT_2ME = 12.2643247  # Å · V^½
_WAVELENGTH_RELATIVISTIC = 0.978466e-6  # e / (2 m0 c²) in 1/V


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

# Field name -> (RELION STAR column, value used when the column is missing; None: required).
# A missing rlnAmplitudeContrast means Q0 = 0 in RELION 3.1.3 (checked with relion_ctf_toolbox),
# so from_table uses 0 there, not the dataclass default 0.1.
_STAR_COLUMNS: dict[str, tuple[str, float | None]] = {
    "defocus_u_A": ("rlnDefocusU", None),
    "defocus_v_A": ("rlnDefocusV", None),
    "defocus_angle_deg": ("rlnDefocusAngle", None),
    "voltage_kV": ("rlnVoltage", 300.0),
    "cs_mm": ("rlnSphericalAberration", 2.7),
    "amplitude_contrast": ("rlnAmplitudeContrast", 0.0),
    "phase_shift_deg": ("rlnPhaseShift", 0.0),
    "bfactor_A2": ("rlnCtfBfactor", 0.0),
    "scale": ("rlnCtfScalefactor", 1.0),
}


def _field_tensor(value: Any, device) -> torch.Tensor:
    """Float64 tensors stay float64 (the caller asked for it); everything else becomes float32."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.float64:
        return value if device is None else value.to(device)
    return as_tensor(value, dtype=torch.float32, device=device)


@dataclass(frozen=True, eq=False)  # eq=False: element-wise tensor fields make == ambiguous
class CTFParams:
    """Parameters of one CTF or of a batch of CTFs (fields broadcast against each other).

    Every field is stored as a tensor (float32, or float64 if given as a float64 tensor), all on
    one device. Fields of different shapes broadcast: ``CTFParams(defocus_u_A=torch.rand(5)*2e4,
    ...)`` with scalar optics describes five particles; :attr:`batch_shape` is the broadcast shape.
    Use :func:`dataclasses.replace` to change fields.

    Attributes
    ----------
    defocus_u_A, defocus_v_A
        Defocus along the major and minor axes, Å, positive = underfocus (RELION rlnDefocusU/V).
    defocus_angle_deg
        Angle of the U axis from the image x axis towards y, degrees (rlnDefocusAngle).
    voltage_kV
        Acceleration voltage, kV (rlnVoltage).
    cs_mm
        Spherical aberration, mm (rlnSphericalAberration).
    amplitude_contrast
        Amplitude contrast fraction Q0 in [0, 1) (rlnAmplitudeContrast); enters as arcsin(Q0).
    phase_shift_deg
        Additional phase shift (phase plate), degrees (rlnPhaseShift).
    bfactor_A2
        CTF B-factor, Å²; the CTF is multiplied by ``exp(−B k²/4)`` (rlnCtfBfactor).
    scale
        Overall multiplicative scale (rlnCtfScalefactor).
    """

    defocus_u_A: torch.Tensor
    defocus_v_A: torch.Tensor
    defocus_angle_deg: torch.Tensor
    voltage_kV: torch.Tensor = 300.0
    cs_mm: torch.Tensor = 2.7
    amplitude_contrast: torch.Tensor = 0.1
    phase_shift_deg: torch.Tensor = 0.0
    bfactor_A2: torch.Tensor = 0.0
    scale: torch.Tensor = 1.0

    def __post_init__(self) -> None:
        values = [getattr(self, name) for name in _STAR_COLUMNS]
        devices = {v.device for v in values if isinstance(v, torch.Tensor)}
        if len(devices) > 1:
            raise InputError(f"CTFParams fields are on different devices: {sorted(map(str, devices))}")
        device = devices.pop() if devices else None
        for name, value in zip(_STAR_COLUMNS, values):
            object.__setattr__(self, name, _field_tensor(value, device))
        try:  # computed once (fields are frozen): broadcasting is slow for a per-call property
            object.__setattr__(self, "_batch_shape",
                               broadcast_shapes(*(getattr(self, name).shape for name in _STAR_COLUMNS)))
        except RuntimeError:
            shapes = {name: tuple(getattr(self, name).shape) for name in _STAR_COLUMNS}
            raise InputError(f"CTFParams field shapes do not broadcast: {shapes}") from None

    @property
    def batch_shape(self) -> torch.Size:
        """Broadcast shape of all fields: the leading shape of every CTF computed from these."""
        return self._batch_shape

    @property
    def device(self) -> torch.device:
        return self.defocus_u_A.device

    @property
    def dtype(self) -> torch.dtype:
        """float64 if any field is float64, else float32."""
        dtypes = {getattr(self, name).dtype for name in _STAR_COLUMNS}
        return torch.float64 if torch.float64 in dtypes else torch.float32

    def __getitem__(self, index) -> "CTFParams":
        """Index the batch dimensions (fields are broadcast to :attr:`batch_shape` first)."""
        shape = self.batch_shape
        return CTFParams(**{n: getattr(self, n).expand(shape)[index] for n in _STAR_COLUMNS})

    def to(self, *args, **kwargs) -> "CTFParams":
        """Apply ``Tensor.to(*args, **kwargs)`` to every field (device and/or dtype)."""
        return CTFParams(**{n: getattr(self, n).to(*args, **kwargs) for n in _STAR_COLUMNS})

    @classmethod
    def from_table(cls, table: Any) -> "CTFParams":
        """Read CTF parameters from a table with RELION STAR column names.

        Parameters
        ----------
        table
            A pandas DataFrame (one row per particle, optics-group columns already merged on, as
            ``cryolab.io`` returns them) or any mapping from column name to a 1D array.
            ``rlnDefocusU``, ``rlnDefocusV`` and ``rlnDefocusAngle`` are required; missing
            ``rlnVoltage`` (300 kV), ``rlnSphericalAberration`` (2.7 mm),
            ``rlnAmplitudeContrast`` (0, as RELION 3.1 assumes — not the dataclass default 0.1),
            ``rlnPhaseShift`` (0°), ``rlnCtfBfactor`` (0 Å²) and ``rlnCtfScalefactor`` (1) take
            these values. (RELION itself would take a missing rlnDefocusV equal to rlnDefocusU
            and a missing rlnDefocusAngle as 0; cryolab asks for them.)

        Returns
        -------
        CTFParams with batch shape ``(n_rows,)`` (float32 fields).

        Raises
        ------
        InputError
            If a required column is missing, a value is not finite, or ``|Q0| > 1``.
        """
        columns = set(table.columns) if hasattr(table, "columns") else set(table.keys())
        kwargs = {}
        for name, (column, default) in _STAR_COLUMNS.items():
            if column not in columns:
                if default is None:
                    raise InputError(f"missing column {column} (required for the CTF)")
                kwargs[name] = default
                continue
            try:
                values = np.array(table[column], dtype=np.float64)  # a writable copy
            except (TypeError, ValueError):
                raise InputError(f"column {column} is not numeric") from None
            if not np.all(np.isfinite(values)):
                raise InputError(f"column {column} has non-finite values")
            if column == "rlnAmplitudeContrast" and np.any(np.abs(values) > 1):
                raise InputError(f"column {column} must lie in [-1, 1] (it enters as arcsin)")
            kwargs[name] = values
        return cls(**kwargs)

    def to_columns(self) -> dict[str, np.ndarray]:
        """RELION STAR column name -> float64 numpy array of shape :attr:`batch_shape`.

        The inverse of :meth:`from_table`: ``df.assign(**params.to_columns())`` for a 1D batch.
        """
        shape = self.batch_shape
        return {
            column: getattr(self, name).detach().expand(shape).cpu().numpy().astype(np.float64)
            for name, (column, _) in _STAR_COLUMNS.items()
        }


# --------------------------------------------------------------------------------------------
# Physics helpers
# --------------------------------------------------------------------------------------------


def _compute_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _wavelength_A(voltage_kV: torch.Tensor) -> torch.Tensor:
    volts = voltage_kV * 1e3
    return _WAVELENGTH_H_OVER_SQRT_2ME / torch.sqrt(volts * (1.0 + _WAVELENGTH_RELATIVISTIC * volts))


def electron_wavelength_A(voltage_kV) -> torch.Tensor:
    """Relativistic electron wavelength in Å.

    ``λ = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))`` with V in volts — RELION's constants
    (``h / sqrt(2 m0 e)`` in Å·V^½ and ``e / (2 m0 c²)`` in 1/V). 0.019687 Å at 300 kV,
    0.025079 Å at 200 kV.

    Parameters
    ----------
    voltage_kV
        Acceleration voltage(s) in kV, any shape.

    Returns
    -------
    Tensor of the same shape, float32 (float64 for a float64 tensor input).
    """
    v = _field_tensor(voltage_kV, None)
    return _wavelength_A(v.to(_compute_dtype(v.device))).to(v.dtype)


class _Fields:
    """CTFParams fields in the compute dtype, reshaped to ``(*batch, *[1] * grid_ndim)``."""

    def __init__(self, params: CTFParams, grid_ndim: int, dtype: torch.dtype):
        batch_ndim = len(params.batch_shape)
        for name in _STAR_COLUMNS:
            t = getattr(params, name).to(dtype)
            shape = (1,) * (batch_ndim - t.dim()) + tuple(t.shape) + (1,) * grid_ndim
            setattr(self, name, t.reshape(shape))
        self.wavelength_A = _wavelength_A(self.voltage_kV)
        self.mean_defocus_A = 0.5 * (self.defocus_u_A + self.defocus_v_A)
        self.half_astigmatism_A = 0.5 * (self.defocus_u_A - self.defocus_v_A)
        self.angle_rad = torch.deg2rad(self.defocus_angle_deg)


def _chi(f: _Fields, k2: torch.Tensor, defocus_k2: torch.Tensor) -> torch.Tensor:
    """χ from |k|² (1/Å²) and Δf(θ)·|k|² (Å · 1/Å²)."""
    lam = f.wavelength_A
    cs_A = f.cs_mm * 1e7
    return (
        math.pi * lam * defocus_k2
        - (0.5 * math.pi) * cs_A * lam**3 * (k2 * k2)
        + torch.deg2rad(f.phase_shift_deg)
        + torch.asin(f.amplitude_contrast)
    )


def _defocus_times_k2(f: _Fields, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Δf(θ)·k² without atan2: cos(2(θ−a))·k² = (kx²−ky²)·cos 2a + 2 kx ky · sin 2a."""
    two_a = 2.0 * f.angle_rad
    k2 = kx * kx + ky * ky
    return (
        f.mean_defocus_A * k2
        + (f.half_astigmatism_A * torch.cos(two_a)) * (kx * kx - ky * ky)
        + (f.half_astigmatism_A * torch.sin(two_a)) * (2.0 * kx * ky)
    )


def _ctf_from_chi(f: _Fields, chi: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    return torch.sin(chi) * torch.exp(-0.25 * f.bfactor_A2 * k2) * f.scale


def _frequency_grid_A(shape, pixel_size_A: float, *, rfft: bool, fftshift: bool, device, dtype):
    """(kx, ky) in 1/Å on the layout of :func:`cryolab.fourier.fftfreq_grid`, in ``dtype``.

    fftfreq_grid works in the default (float32) dtype, where ``j / N`` is rounded; the layout is
    taken from it and the exact integer index ``j = round(f · N)`` recovered before dividing in
    ``dtype``.
    """
    h, w = shape
    grid = fftfreq_grid((h, w), rfft=rfft, fftshift=fftshift, device=device)
    kx = torch.round(grid[..., 0].to(dtype) * w) / (w * pixel_size_A)
    ky = torch.round(grid[..., 1].to(dtype) * h) / (h * pixel_size_A)
    return kx, ky


def _check_shape_and_pixel(shape: Sequence[int], pixel_size_A) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"CTF image shape must be (h, w) with positive sizes, got {shape}")
    if not float(pixel_size_A) > 0:
        raise InputError(f"pixel_size_A must be positive, got {pixel_size_A}")
    return shape


# χ = Σ_t c_t · b_t(k): per-particle coefficients times per-grid basis functions, so that a batch
# of CTFs is one (n, 5) @ (5, pixels) product in float64 instead of a dozen element-wise passes.
_N_CHI_TERMS = 5


def _grid_shape(shape: tuple[int, int], rfft: bool) -> tuple[int, int]:
    return (shape[0], shape[1] // 2 + 1) if rfft else tuple(shape)


@functools.lru_cache(maxsize=32)
def _chi_basis(shape: tuple[int, int], pixel_size_A: float, rfft: bool, fftshift: bool, device: str,
               dtype: torch.dtype) -> torch.Tensor:
    """``(5, pixels)`` basis of χ on a grid: ``k², kx² − ky², 2 kx ky, k⁴, 1`` (1/Å powers).

    With ``θ`` the azimuth, ``k² cos 2(θ − a) = (kx² − ky²) cos 2a + 2 kx ky sin 2a`` (no atan2).
    Cached per grid: treat as read-only."""
    kx, ky = _frequency_grid_A(shape, pixel_size_A, rfft=rfft, fftshift=fftshift, device=device, dtype=dtype)
    k2 = kx * kx + ky * ky
    terms = [k2, kx * kx - ky * ky, 2.0 * kx * ky, k2 * k2, torch.ones_like(k2)]
    return torch.stack([t.reshape(-1) for t in terms])


def _chi_coefficients(f: "_Fields") -> torch.Tensor:
    """``(*batch, 5)`` coefficients of :func:`_chi_basis` (radians per basis unit)."""
    lam = f.wavelength_A
    two_a = 2.0 * f.angle_rad
    astig = math.pi * lam * f.half_astigmatism_A
    terms = [math.pi * lam * f.mean_defocus_A, astig * torch.cos(two_a), astig * torch.sin(two_a),
             -(0.5 * math.pi) * (f.cs_mm * 1e7) * lam**3,
             torch.deg2rad(f.phase_shift_deg) + torch.asin(f.amplitude_contrast)]
    return torch.stack(torch.broadcast_tensors(*terms), dim=-1)



# sin χ for a batch, compiled. torch evaluates sin in float64 at ~5-15 ns a value (no vectorised
# double-precision sine on this build), which made the CTF the largest cost of a simulation after
# the projector. The kernel below evaluates χ = Σ_t c_t b_t on the grid with the terms of
# _chi_basis computed from the grid's axes (the grids are separable: kx per column, ky per row), so
# that nothing larger than a row is read per image; reduces χ to [-π/2, π/2] in float64
# (χ − 2π·rint(χ/2π), then the reflection sin(π − r) = sin r) and evaluates the odd Taylor
# polynomial of degree 17 (truncation < 1e-12 there), in loops that vectorise: ~1 ns a value,
# within one float32 rounding (≤ 1.2e-7) of float32(sin χ). Used for float32 parameters on the CPU
# without autograd when numba is installed and the environment variable CRYOLAB_NUMBA is not 0
# (the float64 torch path otherwise).


def _use_compiled_sin_chi(params: CTFParams, coefficients: torch.Tensor) -> bool:
    return (
        params.dtype == torch.float32
        and coefficients.device.type == "cpu"
        and coefficients.dtype == torch.float64
        and not coefficients.requires_grad
        and os.environ.get("CRYOLAB_NUMBA", "1") != "0"
        and _sin_chi_kernel() is not None
    )


@functools.lru_cache(maxsize=1)
def _sin_chi_kernel():
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        return None
    return numba.njit(cache=True, nogil=True, fastmath={"contract"})(_nb_sin_chi)


def _nb_sin_chi(coefficients, kx, ky, out):
    """out[j, r, c] = sin(χ_j(kx[c], ky[r])), χ_j = Σ_t coefficients[j, t] · (the terms of
    _chi_basis: k², kx² − ky², 2 kx ky, k⁴, 1); float64 χ, float32 out."""
    two_pi = 2.0 * np.pi
    half_pi = 0.5 * np.pi
    inv_two_pi = 1.0 / two_pi
    for j in range(out.shape[0]):
        c0, c1, c2, c3, c4 = (coefficients[j, 0], coefficients[j, 1], coefficients[j, 2], coefficients[j, 3],
                              coefficients[j, 4])
        for r in range(out.shape[1]):
            y = ky[r]
            y2 = y * y
            row = out[j, r]
            for m in range(row.shape[0]):
                x = kx[m]
                x2 = x * x
                k2 = x2 + y2
                chi = c0 * k2 + c1 * (x2 - y2) + c2 * (2.0 * x * y) + c3 * (k2 * k2) + c4
                t = chi - np.rint(chi * inv_two_pi) * two_pi  # [-π, π]
                t = min(t, np.pi - t)  # sin(π − t) = sin t: fold into [-π/2, π/2]
                t = max(t, -np.pi - t)
                t = min(max(t, -half_pi), half_pi)
                t2 = t * t
                s = 1.0 / 355687428096000.0  # 1/17!, then Horner down to t
                s = s * t2 - 1.0 / 1307674368000.0
                s = s * t2 + 1.0 / 6227020800.0
                s = s * t2 - 1.0 / 39916800.0
                s = s * t2 + 1.0 / 362880.0
                s = s * t2 - 1.0 / 5040.0
                s = s * t2 + 1.0 / 120.0
                s = s * t2 - 1.0 / 6.0
                row[m] = t + t * t2 * s


@functools.lru_cache(maxsize=32)
def _frequency_axes(shape: tuple[int, int], pixel_size_A: float, rfft: bool, fftshift: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``kx`` per column and ``ky`` per row (1/Å) of :func:`_frequency_grid_A` (CPU)."""
    kx, ky = _frequency_grid_A(shape, pixel_size_A, rfft=rfft, fftshift=fftshift, device="cpu", dtype=torch.float64)
    return kx[0].contiguous().numpy(), ky[:, 0].contiguous().numpy()


def _sin_chi_compiled(coefficients: torch.Tensor, shape: tuple[int, int], pixel_size_A: float, rfft: bool,
                      fftshift: bool) -> torch.Tensor:
    """``sin(coefficients @ _chi_basis(...))`` as float32 ``(n, h·w')``."""
    kx, ky = _frequency_axes(shape, pixel_size_A, rfft, fftshift)
    out = torch.empty(coefficients.shape[0], ky.shape[0], kx.shape[0], dtype=torch.float32)
    _sin_chi_kernel()(coefficients.contiguous().numpy(), kx, ky, out.numpy())
    return out.reshape(coefficients.shape[0], -1)


# --------------------------------------------------------------------------------------------
# CTF evaluation
# --------------------------------------------------------------------------------------------


def ctf_2d(
    params: CTFParams,
    shape: Sequence[int],
    pixel_size_A: float,
    *,
    rfft: bool = True,
    fftshift: bool = False,
) -> torch.Tensor:
    """The CTF on the Fourier grid of a real image of shape ``(h, w)``.

    Parameters
    ----------
    params
        CTF parameters with batch shape ``(*batch)``.
    shape
        Real-space image shape ``(h, w)`` (odd or even).
    pixel_size_A
        Pixel size in Å.
    rfft
        If True (default) the grid of ``torch.fft.rfft2``: ``(h, w // 2 + 1)``; else the full
        ``(h, w)`` grid of ``torch.fft.fft2``.
    fftshift
        If True the zero frequency sits at index ``N // 2`` (centred layout; with ``rfft`` only
        the row axis is shifted).

    Returns
    -------
    Tensor ``(*batch, h, w // 2 + 1)`` or ``(*batch, h, w)``, float32 (float64 for float64
    params), on ``params.device``.

    Notes
    -----
    Frequencies follow :func:`cryolab.fourier.fftfreq_grid` (numpy/torch ``fftfreq``): for even
    ``h`` the unshifted row ``h // 2`` is ``ky = −0.5`` cycles/pixel, as in RELION's centred
    images (``CTF::getCenteredImage``). RELION's rfft-layout CTF (``CTF::getFftwImage``, used by
    relion_project and relion_ctf_toolbox) puts that row at ``ky = +0.5`` instead; for an
    astigmatic CTF the two differ on that one row only (tests/test_ctf.py pins the relation).
    """
    h, w = _check_shape_and_pixel(shape, pixel_size_A)
    device = params.device
    dtype = _compute_dtype(device)
    basis = _chi_basis((h, w), float(pixel_size_A), rfft, fftshift, str(device), dtype)
    f = _Fields(params, grid_ndim=0, dtype=dtype)
    batch = params.batch_shape
    coefficients = _chi_coefficients(f).reshape(-1, _N_CHI_TERMS)
    if _use_compiled_sin_chi(params, coefficients):
        ctf = _sin_chi_compiled(coefficients, (h, w), float(pixel_size_A), rfft, fftshift)
    else:
        chi = coefficients @ basis  # (n, h·w'), float64: χ reaches 100s of rad
        ctf = torch.sin(chi).to(params.dtype)
    bfactor, scale = f.bfactor_A2.to(params.dtype), f.scale.to(params.dtype)
    if bool((bfactor != 0).any()):
        k2 = basis[0].to(params.dtype)
        ctf = ctf * torch.exp((-0.25 * bfactor.expand(batch).reshape(-1, 1)) * k2)
    if bool((scale != 1).any()):
        ctf = ctf * scale.expand(batch).reshape(-1, 1)
    return ctf.reshape(*batch, *_grid_shape((h, w), rfft))


def ctf_phase_chi(params: CTFParams, freq_xy_per_A) -> torch.Tensor:
    """The phase χ(k) in radians at arbitrary spatial-frequency vectors (for plots and teaching).

    ``χ = π λ Δf(θ) k² − (π/2) Cs λ³ k⁴ + phase_shift + arcsin(Q0)``; ``sin χ`` is the CTF before
    the B-factor envelope and scale.

    Parameters
    ----------
    params
        CTF parameters with batch shape ``(*batch)``.
    freq_xy_per_A
        Frequency vectors ``(*grid, 2)`` ordered ``(kx, ky)`` in 1/Å, e.g.
        ``fftfreq_grid(shape, pixel_size_A=...)``.

    Returns
    -------
    Tensor ``(*batch, *grid)``, float32 (float64 for float64 params).
    """
    dtype = _compute_dtype(params.device)
    k = _field_tensor(freq_xy_per_A, params.device).to(dtype)
    if k.dim() < 1 or k.shape[-1] != 2:
        raise InputError(f"freq_xy_per_A must have shape (..., 2), got {tuple(k.shape)}")
    kx, ky = k[..., 0], k[..., 1]
    f = _Fields(params, grid_ndim=kx.dim(), dtype=dtype)
    return _chi(f, kx * kx + ky * ky, _defocus_times_k2(f, kx, ky)).to(params.dtype)


def ctf_1d(params: CTFParams, freq_per_A, *, azimuth_deg=None) -> torch.Tensor:
    """Radial CTF profile at spatial frequencies ``|k|`` (1/Å).

    Parameters
    ----------
    params
        CTF parameters with batch shape ``(*batch)``.
    freq_per_A
        Frequency magnitudes in 1/Å, shape ``(*grid)``.
    azimuth_deg
        Direction θ of the profile in degrees from the x axis (scalar, or a tensor broadcastable
        to the batch shape). If None (default) the mean defocus ``(U + V) / 2`` is used, which is
        the profile along ``θ = angle ± 45°`` and the usual 1D curve for astigmatic CTFs. Note
        that it is not the azimuthal average of an astigmatic 2D CTF.

    Returns
    -------
    Tensor ``(*batch, *grid)``, float32 (float64 for float64 params).
    """
    dtype = _compute_dtype(params.device)
    k = _field_tensor(freq_per_A, params.device).to(dtype)
    f = _Fields(params, grid_ndim=k.dim(), dtype=dtype)
    if azimuth_deg is None:
        defocus = f.mean_defocus_A
    else:
        az = _field_tensor(azimuth_deg, params.device).to(dtype)
        batch_ndim = len(params.batch_shape)
        if az.dim() > batch_ndim:
            raise InputError(f"azimuth_deg shape {tuple(az.shape)} exceeds batch shape "
                             f"{tuple(params.batch_shape)}")
        az = az.reshape((1,) * (batch_ndim - az.dim()) + tuple(az.shape) + (1,) * k.dim())
        defocus = f.mean_defocus_A + f.half_astigmatism_A * torch.cos(
            2.0 * (torch.deg2rad(az) - f.angle_rad))
    k2 = k * k
    return _ctf_from_chi(f, _chi(f, k2, defocus * k2), k2).to(params.dtype)


# --------------------------------------------------------------------------------------------
# Envelopes of partial coherence
# --------------------------------------------------------------------------------------------


def spatial_coherence_envelope(
    freq_per_A,
    defocus_A,
    *,
    illumination_semiangle_mrad,
    voltage_kV=300.0,
    cs_mm=2.7,
) -> torch.Tensor:
    """Envelope of partial spatial coherence (finite source size / illumination aperture).

    ``E_s(k) = exp(−(π α / λ)² · (Δf λ k − Cs λ³ k³)²)``

    where ``(Δf λ k − Cs λ³ k³) = (1/2π) dχ/dk`` for the CTF convention of this module (Δf
    positive = underfocus). E_s = 1 at k = 0 and where underfocus balances spherical aberration,
    ``k² = Δf / (Cs λ²)``.

    Parameters
    ----------
    freq_per_A
        Frequency magnitudes k in 1/Å.
    defocus_A
        Defocus Δf in Å, positive = underfocus. For an astigmatic CTF on a 2D grid pass the
        defocus along each frequency's direction, Δf(θ); the azimuthal part of ∇χ, of relative
        size ``(U − V) / (2 Δf)``, is then neglected.
    illumination_semiangle_mrad
        Illumination semi-angle α in mrad: the 1/e half-width of a Gaussian distribution of
        illumination directions (α / λ is Frank's "generalized source size" q0).
    voltage_kV, cs_mm
        Acceleration voltage (kV) and spherical aberration (mm).

    All arguments broadcast against each other (torch rules); the result has the broadcast shape,
    float32.

    Notes
    -----
    Frank writes the bracket as ``(Cs λ³ k³ + Δz λ k)`` with Δz negative for underfocus; with
    this module's sign of Δf it reads ``(Cs λ³ k³ − Δf λ k)`` — the square is the same.

    References
    ----------
    Frank J (1973) The envelope of electron microscopic transfer functions for partially coherent
    illumination. Optik 38:519–536. Wade RH (1992) A brief look at imaging and contrast transfer.
    Ultramicroscopy 46:145–156. Frank J (2006), chapter 2.
    """
    dtype = torch.float64
    k = as_tensor(freq_per_A).to(dtype)
    defocus = as_tensor(defocus_A, device=k.device).to(dtype)
    alpha = as_tensor(illumination_semiangle_mrad, device=k.device).to(dtype) * 1e-3
    lam = _wavelength_A(as_tensor(voltage_kV, device=k.device).to(dtype))
    cs_A = as_tensor(cs_mm, device=k.device).to(dtype) * 1e7
    gradient = defocus * lam * k - cs_A * lam**3 * k**3  # (1/2π) dχ/dk, Å
    return torch.exp(-((math.pi * alpha / lam) ** 2) * gradient**2).to(torch.float32)


def chromatic_focal_spread_A(
    cc_mm,
    energy_spread_eV,
    *,
    voltage_kV=300.0,
    lens_current_instability=0.0,
    voltage_instability=0.0,
) -> torch.Tensor:
    """Standard deviation of the defocus spread caused by chromatic aberration, in Å.

    ``δ = Cc · sqrt((ΔE / E)² + (2 ΔI / I)² + (ΔV / V)²)``, with E = e·V the electron energy
    (classical, non-relativistic expression as in Frank 2006, chapter 2).

    Parameters
    ----------
    cc_mm
        Chromatic aberration coefficient, mm.
    energy_spread_eV
        Standard deviation of the electron energy, eV. A spread quoted as FWHM (e.g. 0.7 eV for a
        Schottky FEG) is divided by ``2 sqrt(2 ln 2) ≈ 2.3548`` first.
    voltage_kV
        Acceleration voltage, kV.
    lens_current_instability, voltage_instability
        Relative standard deviations ΔI/I of the objective-lens current and ΔV/V of the high
        tension (dimensionless, e.g. 1e-7).

    Returns
    -------
    Tensor (broadcast shape of the inputs), float32: δ in Å, for
    :func:`temporal_coherence_envelope`.
    """
    dtype = torch.float64
    cc_A = as_tensor(cc_mm).to(dtype) * 1e7
    de = as_tensor(energy_spread_eV, device=cc_A.device).to(dtype)
    volts = as_tensor(voltage_kV, device=cc_A.device).to(dtype) * 1e3
    di = as_tensor(lens_current_instability, device=cc_A.device).to(dtype)
    dv = as_tensor(voltage_instability, device=cc_A.device).to(dtype)
    return (cc_A * torch.sqrt((de / volts) ** 2 + (2.0 * di) ** 2 + dv**2)).to(torch.float32)


def temporal_coherence_envelope(freq_per_A, focal_spread_A, *, voltage_kV=300.0) -> torch.Tensor:
    """Envelope of partial temporal coherence (Gaussian spread of defocus).

    ``E_t(k) = exp(−(π λ δ k²)² / 2)``

    the average of ``exp(i π λ z k²)`` over defocus offsets ``z ~ Normal(0, δ²)``. If δ is quoted
    as a FWHM instead of a standard deviation this is the common form
    ``exp(−(π λ δ_FWHM k²)² / (16 ln 2))``.

    Parameters
    ----------
    freq_per_A
        Frequency magnitudes k in 1/Å.
    focal_spread_A
        Standard deviation δ of the defocus, Å (see :func:`chromatic_focal_spread_A`).
    voltage_kV
        Acceleration voltage, kV.

    All arguments broadcast; the result has the broadcast shape, float32.

    References
    ----------
    Hanszen KJ, Trepte L (1971) Optik 32:519–538. Wade RH (1992) Ultramicroscopy 46:145–156.
    Frank J (2006), chapter 2.
    """
    dtype = torch.float64
    k = as_tensor(freq_per_A).to(dtype)
    delta = as_tensor(focal_spread_A, device=k.device).to(dtype)
    lam = _wavelength_A(as_tensor(voltage_kV, device=k.device).to(dtype))
    return torch.exp(-0.5 * (math.pi * lam * delta * k * k) ** 2).to(torch.float32)


# --------------------------------------------------------------------------------------------
# CTF correction of images
# --------------------------------------------------------------------------------------------


def _real_images(images) -> torch.Tensor:
    x = as_tensor(images)
    if x.is_complex() or x.dim() < 2:
        raise InputError(f"images must be real with shape (..., h, w), got {tuple(x.shape)} {x.dtype}")
    return x


def _filter_images(images: torch.Tensor, transfer_rfft: torch.Tensor) -> torch.Tensor:
    """``irfft2(rfft2(images) · transfer)``; transfer is real on the rfft grid, broadcasting.

    The CTF is real and even (CTF(−k) = CTF(k)), so the filter is a circular convolution with a
    real, point-symmetric kernel: it commutes with shifts, so the ifftshift/fftshift pair that
    conventions.md prescribes for centred data would cancel and is not applied.
    """
    h, w = images.shape[-2:]
    spectrum = torch.fft.rfft2(images)
    return torch.fft.irfft2(spectrum * transfer_rfft.to(images.dtype), s=(h, w))


def phase_flip(images, params: CTFParams, pixel_size_A: float) -> torch.Tensor:
    """Multiply each image's transform by the sign of its CTF (phase flipping).

    Parameters
    ----------
    images
        Real images ``(..., h, w)``.
    params
        CTF parameters; ``params.batch_shape`` broadcasts with ``images.shape[:-2]``.
    pixel_size_A
        Pixel size in Å.

    Returns
    -------
    Tensor of the broadcast shape ``(..., h, w)``, images' dtype. Frequencies where the CTF is
    exactly 0 keep their sign (+1), as RELION's ``--ctf_phase_flip`` does; flipping twice is the
    identity.

    References
    ----------
    Frank J (2006), chapter 2 (CTF correction); Penczek PA (2010) Image restoration in
    cryo-electron microscopy. Methods Enzymol 482:35–72.
    """
    x = _real_images(images)
    ctf = ctf_2d(params, x.shape[-2:], pixel_size_A, rfft=True)
    sign = torch.where(ctf < 0, -1.0, 1.0).to(device=x.device)
    return _filter_images(x, sign)


def wiener_filter(
    images,
    params: CTFParams,
    pixel_size_A: float,
    *,
    wiener_constant=None,
    snr=None,
) -> torch.Tensor:
    """Wiener-filter images for their CTF: ``F · CTF / (CTF² + K)``.

    Parameters
    ----------
    images
        Real images ``(..., h, w)``.
    params
        CTF parameters; ``params.batch_shape`` broadcasts with ``images.shape[:-2]``.
    pixel_size_A
        Pixel size in Å.
    wiener_constant
        K > 0, scalar or a tensor broadcastable to ``(..., h, w // 2 + 1)`` (the rfft grid, e.g.
        a per-frequency 1/SSNR).
    snr
        Signal-to-noise ratio; ``K = 1 / snr``. Give exactly one of ``snr`` and
        ``wiener_constant``.

    Returns
    -------
    Tensor of the broadcast shape ``(..., h, w)``, images' dtype. With K → 0 and no CTF zeros the
    filter inverts the CTF exactly.

    References
    ----------
    Frank J (2006), chapter 2 (CTF correction by Wiener filtering); Penczek PA (2010) Methods
    Enzymol 482:35–72.
    """
    if (wiener_constant is None) == (snr is None):
        raise InputError("give exactly one of wiener_constant and snr")
    x = _real_images(images)
    given = as_tensor(wiener_constant if snr is None else snr, device=x.device)
    if torch.any(given <= 0):
        raise InputError(f"{'wiener_constant' if snr is None else 'snr'} must be positive")
    ctf = ctf_2d(params, x.shape[-2:], pixel_size_A, rfft=True).to(device=x.device, dtype=x.dtype)
    k_const = (given if snr is None else 1.0 / given).to(x.dtype)
    return _filter_images(x, ctf / (ctf * ctf + k_const))
