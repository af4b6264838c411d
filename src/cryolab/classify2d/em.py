"""Maximum-likelihood 2D classification by expectation-maximization (RELION's Class2D), in Fourier space.

The model is stated in :mod:`cryolab.classify2d.model`. One EM iteration has two visible steps:

**E-step** (:func:`e_step`, batch by batch, the model held fixed). For every particle, class
``c``, in-plane angle ``psi`` and origin ``o`` on the grids, the log-likelihood over the Fourier
samples ``k`` used (shells up to the current resolution, half plane with weights ``h(k)``: 2,
or 1 on the ``kx = 0`` and Nyquist columns) is

    log p(X | c, psi, o) = − Σ_k h(k) |X(k) − CTF(k) S_o(k) RA_{c,psi}(k)|² / (2σ²(k)) + const

with ``RA_{c,psi}(k) = A_c(Rᵀ k)`` (the average read at rotated frequencies from its 2× padded
transform, RELION's projector, :mod:`~cryolab.classify2d.projector`, once per iteration) and
``S_o(k) = exp(2πi k·o)`` (the origin as a phase ramp). Since ``|S_o| = 1``, expanding the square
gives three terms:

    ||X||²_w  −  2 Re Σ_k w(k) CTF(k) X(k) conj(S_o(k)) conj(RA(k))  +  Σ_k w(k) CTF(k)² |RA(k)|²

with ``w = h / (2σ²)``. The first does not depend on the hypothesis, the second is one real
matrix product ``(b·T, 2M) @ (2M, K·R)`` between the phase-shifted, CTF-weighted images and the
noise-weighted rotated references (real and imaginary parts side by side), the third a product
``(b, M) @ (M, K·R)``. Adding the log priors (class weight, Gaussian on the origin, uniform
angle) and normalising with a log-sum-exp gives the posterior ``P(c, psi, o | X)``. The same
posteriors, contracted with the images once more, give the sufficient statistics: per
``(class, angle)`` the image-frame sums ``N = Σ P · CTF · conj(S_o) · X`` and ``D = Σ P · CTF²``.

**M-step** (:func:`m_step`, once per iteration). Each class average is the maximum a posteriori
estimate under a Gaussian prior of variance ``T τ_c²`` per Fourier coefficient (``T`` is RELION's
``tau2_fudge``, ``τ_c²`` the power spectrum of the previous average). Without rotations that is

    A_c(k) = Σ CTF·X / (Σ CTF² + σ²(k) / (T · τ_c²(k)))

and with them the normal equations ``(Σ_psi Lᵀ (D_psi/σ²) L + 1/(Tτ²)) a = Σ_psi Lᵀ N_psi/σ²``
with the projector ``L`` of the E-step, solved by preconditioned conjugate gradients (the formula
above, with ``Σ_psi D`` averaged per shell, is the preconditioner). RELION instead divides the
sums after spreading them on a padded grid; solving the equations undoes the interpolation
exactly (tests recover averages from particles drawn from the model to 1%). The noise spectrum is
the posterior-expected squared residual per shell (averaged over all shells for white noise), the
class weights the posterior class fractions, the origin prior's σ the posterior RMS origin per
axis. Each class is also averaged over two random halves of its particles; their Fourier ring
correlation (:func:`cryolab.validate.fsc`, 0.143 threshold) is reported as the class's
resolution (optimistic: both halves are aligned to one average). The next E-step uses
frequencies up to the last shell where the data outweigh the prior (RELION's ``data_vs_prior``
above 1, best class) plus ``resolution_increment_shells``; the limit never decreases.

:func:`run_em` is the short driver: :func:`initial_state`, then E-step over all batches, M-step,
repeated.

References
----------
S. H. W. Scheres, "A Bayesian view on cryo-EM structure determination", J. Mol. Biol. 415,
406–418 (2012); "RELION: implementation of a Bayesian approach to cryo-EM structure
determination", J. Struct. Biol. 180, 519–530 (2012).
S. H. W. Scheres et al., "Maximum-likelihood multi-reference refinement for electron microscopy
images", J. Mol. Biol. 348, 139–149 (2005) (ML2D).
F. J. Sigworth, "A maximum-likelihood approach to single-particle image refinement", J. Struct.
Biol. 122, 328–339 (1998).
P. Nelson, *Physical Models of Living Systems*, 2nd ed. (2022), ch. 12.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from cryolab._progress import progress
from cryolab._tensor import as_tensor
from cryolab.classify2d.model import (Class2DSettings, Class2DState, Class2DStats, ParticleAssignments,
                                      ParticleBatch)
from cryolab.classify2d.projector import (RotatedSampler, project_references, project_references_adjoint,
                                          rotated_sampler)
from cryolab.classify2d.sampling import offset_grid_A
from cryolab.ctf import ctf_2d
from cryolab.errors import InputError
from cryolab.fourier import irfft_centered, phase_ramp_rfft, radial_average, rfft_centered, shell_index
from cryolab.masks import spherical_mask
from cryolab.rotations import inplane_angles
from cryolab.validate import fsc, fsc_resolution_A

__all__ = [
    "ExpectationContext", "IterationRecord", "Class2DResult", "prepare_expectation", "e_step", "m_step",
    "initial_state", "run_em", "reseed_empty_classes",
]

#: FRC threshold for the per-class resolution (two half-sets, Rosenthal & Henderson 2003).
FRC_THRESHOLD = 0.143

#: Oversampling of the averages' transforms that rotated samples are read from (RELION's --pad 2).
PAD = 2

#: Conjugate-gradient iterations and relative residual of the M-step's normal equations.
CG_MAX_ITERATIONS = 12
CG_TOLERANCE = 1e-3


# --------------------------------------------------------------------------------------------
# Fourier bookkeeping


def _rfft_hermitian_weights(box_size: int, device) -> torch.Tensor:
    """``(N, N//2 + 1)``: how many full-plane samples each rfft sample stands for (2, or 1)."""
    w = torch.full((box_size, box_size // 2 + 1), 2.0, device=device)
    w[:, 0] = 1.0
    if box_size % 2 == 0:
        w[:, -1] = 1.0
    return w


def _active_samples(box_size: int, resolution_shell: int, device):
    """Flat rfft indices, shells and Hermitian weights of the samples with shell <= limit."""
    shells = shell_index((box_size, box_size), rfft=True, device=device).reshape(-1)
    index = torch.nonzero(shells <= resolution_shell).squeeze(-1)
    herm = _rfft_hermitian_weights(box_size, device).reshape(-1)
    return index, shells[index], herm[index]


def _active_frequencies(index: torch.Tensor, box_size: int) -> torch.Tensor:
    """``(M, 2)`` integer frequencies ``(kx, ky)`` (cycles per box) at flat rfft ``index``."""
    width = box_size // 2 + 1
    row, col = index // width, index % width
    return torch.stack([col, torch.where(row < (box_size + 1) // 2, row, row - box_size)], dim=-1)


def _gather_rfft(grid: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(..., N, N//2 + 1)`` -> ``(..., M)`` at flat rfft ``index``."""
    return grid.reshape(*grid.shape[:-2], -1)[..., index]


def _shell_mean(values: torch.Tensor, shells: torch.Tensor, weights: torch.Tensor, n_shells: int):
    """Weighted mean of ``(..., M)`` values in each shell ``0 .. n_shells-1`` and the weight per shell."""
    sums = torch.zeros(*values.shape[:-1], n_shells, dtype=values.dtype, device=values.device)
    sums.index_add_(-1, shells, values * weights)
    counts = torch.zeros(n_shells, dtype=values.dtype, device=values.device).index_add_(0, shells, weights)
    return sums / counts.clamp_min(1e-30), counts


def _power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """``(..., N//2 + 1)`` mean of ``|rfft|²`` per shell (full-plane average)."""
    n = images.shape[-1]
    spectrum = rfft_centered(images, 2)
    return radial_average(spectrum.real**2 + spectrum.imag**2, (n, n))


# --------------------------------------------------------------------------------------------
# What the E-step holds fixed


@dataclass(frozen=True)
class ExpectationContext:
    """Everything an E-step needs that depends on the state only (computed once per iteration).

    Attributes
    ----------
    resolution_shell
        Highest shell used; ``M`` samples of the rfft half plane lie within it.
    index, shells, hermitian
        ``(M,)`` flat rfft indices, their shells and Hermitian weights (2, or 1 on the ``kx = 0``
        and Nyquist columns).
    psi_deg
        ``(R,)`` in-plane angles.
    offsets_A
        ``(T,)`` origins ``(x, y)`` in Å, ``(T, 2)``.
    ramps
        ``(T, M)`` complex ``S_o(k) = exp(2πi k·o)``.
    sampler
        The rotated-sample operator ``L`` (:func:`~cryolab.classify2d.projector.rotated_sampler`).
    rotated_references
        ``(K, R, M)`` complex ``A_c(Rᵀ k)``.
    noise_weights
        ``(M,)`` ``h(k) / (2σ²(k))``.
    log_normalisation
        ``−Σ_k h(k)/2 · log(2π σ²(k) / N²)``: the Gaussian normaliser of an image over the
        samples used, so that log-likelihoods are densities of the band-limited real image.
    log_offset_prior
        ``(T,)`` log prior of each origin (Gaussian, normalised over the grid).
    log_class_prior
        ``(K,)`` ``log π_c``.
    mask
        ``(N, N)`` soft particle mask, or None.
    """

    resolution_shell: int
    index: torch.Tensor
    shells: torch.Tensor
    hermitian: torch.Tensor
    psi_deg: torch.Tensor
    offsets_A: torch.Tensor
    ramps: torch.Tensor
    sampler: RotatedSampler
    rotated_references: torch.Tensor
    noise_weights: torch.Tensor
    log_normalisation: float
    log_offset_prior: torch.Tensor
    log_class_prior: torch.Tensor
    mask: torch.Tensor | None


def _particle_mask(settings: Class2DSettings, device) -> torch.Tensor | None:
    if settings.mask_diameter_A is None:
        return None
    # RELION's particle mask: a disc of the particle diameter with a raised-cosine edge outside it
    return spherical_mask(settings.box_size, settings.pixel_size_A, settings.mask_diameter_A / 2,
                          soft_edge_A=settings.mask_edge_px * settings.pixel_size_A, ndim=2, device=device)


def _log_offset_prior(offsets_A: torch.Tensor, sigma_A: float) -> torch.Tensor:
    log_p = -(offsets_A**2).sum(-1) / (2.0 * sigma_A**2)
    return log_p - torch.logsumexp(log_p, dim=0)


def prepare_expectation(state: Class2DState) -> ExpectationContext:
    """The E-step's fixed quantities for ``state``: rotated references, phase ramps, weights, priors.

    Rotated references are read from the padded transform of each average by bilinear
    interpolation (:mod:`~cryolab.classify2d.projector`, RELION's projector), once per
    iteration; origins become phase ramps (:func:`cryolab.fourier.phase_ramp_rfft`).
    """
    s = state.settings
    device = state.device
    n = s.box_size
    index, shells, herm = _active_samples(n, state.resolution_shell, device)
    psi = inplane_angles(s.psi_step_deg, device=device)
    offsets = offset_grid_A(s.offset_range_A, s.offset_step_A).to(device)
    # image(x) = P(x + o): the content moves by -o, the ramp exp(+2πi k·o)
    ramps = _gather_rfft(phase_ramp_rfft(-offsets / s.pixel_size_A, (n, n), device=device), index)
    sampler = rotated_sampler(_active_frequencies(index, n), psi, n, pad=PAD, device=device)
    rotated_ft = project_references(state.references, sampler)  # (K, R, M): A_c(Rᵀ k)
    sigma2 = state.noise_spectrum.to(device)[shells].to(torch.float32)
    noise_weights = herm / (2.0 * sigma2)
    log_norm = float(-(0.5 * herm.double() * torch.log(2 * math.pi * sigma2.double() / n**2)).sum())
    return ExpectationContext(
        resolution_shell=int(state.resolution_shell), index=index, shells=shells, hermitian=herm, psi_deg=psi,
        offsets_A=offsets, ramps=ramps, sampler=sampler, rotated_references=rotated_ft, noise_weights=noise_weights,
        log_normalisation=log_norm, log_offset_prior=_log_offset_prior(offsets, state.offset_sigma_A),
        log_class_prior=torch.log(state.class_weights.to(device).clamp_min(1e-30)).to(torch.float32),
        mask=_particle_mask(s, device),
    )


# --------------------------------------------------------------------------------------------
# E-step


def _batch_spectra(ctx: ExpectationContext, settings: Class2DSettings, batch: ParticleBatch, device):
    """Masked image transforms ``X`` ``(b, M)`` and CTFs ``(b, M)`` on the samples used."""
    n = settings.box_size
    images = as_tensor(batch.images, dtype=torch.float32).to(device)
    if images.dim() != 3 or tuple(images.shape[-2:]) != (n, n):
        raise InputError(f"a batch must hold (b, {n}, {n}) images, got {tuple(images.shape)}")
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = int(as_tensor(batch.indices)[~finite.cpu()][0])
        raise InputError(f"particle {bad + 1} (1-based) has NaN or infinite pixel values")
    if ctx.mask is not None:
        images = images * ctx.mask
    spectra = _gather_rfft(rfft_centered(images, 2), ctx.index)
    if settings.use_ctf:
        if batch.ctf is None:
            raise InputError("CTF correction needs CTF parameters for every particle (or switch it off: --no-ctf)")
        ctf = ctf_2d(batch.ctf.to(device), (n, n), settings.pixel_size_A, rfft=True).to(torch.float32)
        ctf = _gather_rfft(ctf, ctx.index).expand(images.shape[0], -1)
    else:
        ctf = torch.ones(images.shape[0], ctx.index.numel(), device=device)
    return spectra, ctf


def _log_scores(ctx: ExpectationContext, spectra: torch.Tensor, ctf: torch.Tensor):
    """Unnormalised log posteriors ``(b, T, K·R)`` (without the ``−||X||²_w`` term) and ``Y``.

    ``Y = CTF · conj(S_o) · X`` ``(b, T, M)`` is returned for the statistics.
    """
    b, m = spectra.shape
    k, r, _ = ctx.rotated_references.shape
    t = ctx.ramps.shape[0]
    y = (ctf * spectra)[:, None, :] * ctx.ramps.conj()[None]  # (b, T, M)
    weighted_refs = ctx.rotated_references.reshape(k * r, m) * ctx.noise_weights
    # Re(y · conj(a)) = y_re a_re + y_im a_im: a real product over interleaved (re, im) pairs
    cross = torch.view_as_real(y).reshape(b * t, 2 * m) @ torch.view_as_real(weighted_refs).reshape(k * r, 2 * m).T
    ref_power = ctx.rotated_references.real**2 + ctx.rotated_references.imag**2  # (K, R, M)
    ref_term = (ctf**2 * ctx.noise_weights) @ ref_power.reshape(k * r, m).T  # (b, K·R)
    log_prior = ctx.log_offset_prior[:, None] + (ctx.log_class_prior - math.log(r)).repeat_interleave(r)[None, :]
    scores = 2.0 * cross.reshape(b, t, k * r) - ref_term[:, None, :] + log_prior[None]
    return scores, y


def _accumulate(posteriors: torch.Tensor, y: torch.Tensor, ctf2: torch.Tensor, n_half0: int):
    """Per-half sums ``Σ P · Y`` ``(2, K·R, M)`` and ``Σ P · CTF²`` ``(2, K·R, M)``.

    Rows ``:n_half0`` belong to half 0, the rest to half 1 (the caller sorted them).
    """
    b, t, kr = posteriors.shape
    m = y.shape[-1]
    numerators, weights = [], []
    for rows in (slice(0, n_half0), slice(n_half0, b)):
        p, yy = posteriors[rows], y[rows]
        num = p.reshape(-1, kr).T @ torch.view_as_real(yy).reshape(-1, 2 * m)
        numerators.append(torch.view_as_complex(num.reshape(kr, m, 2).contiguous()))
        weights.append(p.sum(1).T @ ctf2[rows])
    return torch.stack(numerators), torch.stack(weights)


def e_step(state: Class2DState, batch: ParticleBatch, *, context: ExpectationContext | None = None) -> Class2DStats:
    """Posteriors over class, in-plane angle and origin for a batch, and their sufficient statistics.

    Parameters
    ----------
    state
        The current model (held fixed).
    batch
        Particles (:class:`~cryolab.classify2d.model.ParticleBatch`).
    context
        :func:`prepare_expectation` of ``state``, to reuse across batches (computed if None).

    Returns
    -------
    :class:`~cryolab.classify2d.model.Class2DStats` of the batch, with its per-particle
    :class:`~cryolab.classify2d.model.ParticleAssignments` (most probable hypothesis, its
    probability, and the log-likelihood). Statistics of batches add with ``+``.
    """
    ctx = context if context is not None else prepare_expectation(state)
    if ctx.resolution_shell != state.resolution_shell:
        raise ValueError("the expectation context was prepared for another state")
    s = state.settings
    device = state.device
    k, r, m = ctx.rotated_references.shape
    halves = as_tensor(batch.halves, dtype=torch.int64).to(device).reshape(-1)
    order = torch.argsort(halves, stable=True)  # half 0 first, so per-half sums are slices
    n_half0 = int((halves == 0).sum())
    spectra, ctf = _batch_spectra(ctx, s, batch, device)
    spectra, ctf = spectra[order], ctf[order]
    b = spectra.shape[0]

    scores, y = _log_scores(ctx, spectra, ctf)
    flat = scores.reshape(b, -1)
    log_z = torch.logsumexp(flat, dim=1)
    posteriors = torch.exp(scores - log_z[:, None, None])
    data_term = ((spectra.real**2 + spectra.imag**2) * ctx.noise_weights).sum(-1)
    log_likelihood = log_z.double() - data_term.double() + ctx.log_normalisation

    best_value, best = flat.max(dim=1)
    best_t, best_kr = best // (k * r), best % (k * r)
    numerator, ctf2 = _accumulate(posteriors, y, ctf**2, n_half0)
    offset_sq = (ctx.offsets_A**2).sum(-1)
    inverse = torch.argsort(order)
    particles = ParticleAssignments(
        indices=as_tensor(batch.indices, dtype=torch.int64).reshape(-1).cpu(),
        class_index=(best_kr // r)[inverse].cpu(),
        psi_deg=ctx.psi_deg[best_kr % r][inverse].cpu(),
        offsets_A=ctx.offsets_A[best_t][inverse].cpu(),
        max_probability=torch.exp(best_value - log_z)[inverse].cpu(),
        log_likelihood=log_likelihood[inverse].cpu(),
    )
    return Class2DStats(
        resolution_shell=ctx.resolution_shell,
        numerator=numerator.reshape(2, k, r, m),
        ctf2=ctf2.reshape(2, k, r, m),
        power=(spectra.real**2 + spectra.imag**2).sum(0),
        class_counts=posteriors.sum(dim=(0, 1)).reshape(k, r).sum(-1),
        offset_sq_sum_A2=(posteriors.sum(-1) * offset_sq).sum(),
        n_particles=b,
        log_likelihood=float(log_likelihood.sum()),
        particles=particles,
    )


# --------------------------------------------------------------------------------------------
# M-step


def _band_limit(images: torch.Tensor, resolution_shell: int) -> torch.Tensor:
    n = images.shape[-1]
    keep = shell_index((n, n), rfft=True, device=images.device) <= resolution_shell
    return irfft_centered(rfft_centered(images, 2) * keep, (n, n))


def _solve_averages(numerator: torch.Tensor, ctf2: torch.Tensor, prior: torch.Tensor, ctx: ExpectationContext,
                    noise: torch.Tensor, box_size: int, *, initial: torch.Tensor | None = None,
                    max_iterations: int = CG_MAX_ITERATIONS, tolerance: float = CG_TOLERANCE) -> torch.Tensor:
    """MAP class averages: solve ``(Lᵀ W L + Λ) a = Lᵀ B`` by preconditioned conjugate gradients.

    With ``L`` the rotated-sample operator of :mod:`~cryolab.classify2d.projector`, the
    expected negative log posterior of an average ``a`` is, up to a constant,

        ½ Σ_{psi,k} h(k) D_psi(k) |L a|² / σ²(k) − Re Σ h(k) conj(L a) N_psi(k) / σ²(k) + ½ Σ_k h(k) λ(k) |A(k)|²

    (``N``, ``D``: the E-step's per-angle sums of ``CTF · conj(S) · X`` and ``CTF²``; ``λ = 1/(T τ²)``),
    whose minimiser solves the normal equations above. For a single angle without interpolation
    they reduce to RELION's ``A = Σ CTF X / (Σ CTF² + σ²/(T τ²))``; with rotations they undo the
    interpolation exactly instead of dividing sums spread on a grid. The preconditioner is that
    diagonal formula with ``Σ_psi D_psi`` averaged per shell. The unknowns are band-limited to the
    E-step's shells.

    Parameters
    ----------
    numerator, ctf2
        ``(..., R, M)`` per-angle sums for each system (``...`` e.g. ``(3, K)``: whole set and halves).
    prior
        ``(..., N // 2 + 1)`` ``λ = 1/(T τ²)`` per shell (units of ``1/E|A|²``).
    noise
        ``(N // 2 + 1,)`` σ² per shell.
    initial
        Optional ``(..., N, N)`` starting point (e.g. the previous averages).

    Returns
    -------
    real ``(..., N, N)`` averages (float32).
    """
    n = box_size
    sampler = ctx.sampler
    sigma2 = noise.to(numerator.device).double()[ctx.shells]
    herm = ctx.hermitian.double()
    weights = (herm * ctf2.double() / sigma2).to(torch.float32)  # (..., R, M)
    rhs = project_references_adjoint((herm / sigma2).to(torch.float32) * numerator, sampler).double()
    # λ and the preconditioner's diagonal on the rfft grid; zero outside the band
    shells = shell_index((n, n), rfft=True, device=numerator.device)
    band = shells <= ctx.resolution_shell
    lam = prior.double()[..., shells.clamp(max=n // 2)] * band
    data_shell, _ = _shell_mean(ctf2.double().sum(-2), ctx.shells, herm, n // 2 + 1)  # mean Σ_psi D per shell
    diagonal = n * n * (data_shell[..., shells.clamp(max=n // 2)] / noise.double().to(numerator.device)[shells.clamp(max=n // 2)] + lam)
    inverse_diagonal = torch.where(band & (diagonal > 0), 1.0 / diagonal.clamp_min(1e-300), torch.zeros_like(diagonal))

    def apply_h(x):
        data = project_references_adjoint(weights * project_references(x.to(torch.float32), sampler), sampler)
        prior_term = n * n * irfft_centered(lam * rfft_centered(x, 2), (n, n))
        return data.double() + prior_term

    def precondition(r):
        return irfft_centered(inverse_diagonal * rfft_centered(r, 2), (n, n))

    def dot(u, v):
        return (u * v).sum(dim=(-2, -1))

    rhs = _band_limit(rhs, ctx.resolution_shell)
    x = precondition(rhs) if initial is None else _band_limit(initial.double().expand_as(rhs), ctx.resolution_shell)
    r = rhs - _band_limit(apply_h(x), ctx.resolution_shell)
    z = precondition(r)
    p = z
    rz = dot(r, z)
    scale = dot(rhs, rhs).sqrt().clamp_min(1e-300)
    for _ in range(max_iterations):
        if bool((dot(r, r).sqrt() <= tolerance * scale).all()):
            break
        hp = _band_limit(apply_h(p), ctx.resolution_shell)
        php = dot(p, hp)
        alpha = torch.where(php > 0, rz / php.clamp_min(1e-300), torch.zeros_like(php))
        x = x + alpha[..., None, None] * p
        r = r - alpha[..., None, None] * hp
        z = precondition(r)
        rz_new = dot(r, z)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-300), torch.zeros_like(rz))
        p = z + beta[..., None, None] * p
        rz = rz_new
    return x.to(torch.float32)


def _data_vs_prior(ctf2: torch.Tensor, tau2: torch.Tensor, noise: torch.Tensor, ctx: ExpectationContext,
                   settings: Class2DSettings) -> torch.Tensor:
    """``(K, N//2 + 1)`` shell mean of ``T τ² Σ_psi CTF² / σ²``: the weight of the data against the prior.

    Above 1 the averages are determined by the data, below 1 by the prior (RELION's
    ``data_vs_prior``, whose crossing of 1 is its current resolution). Shells not used are 0.
    """
    n_shells = settings.box_size // 2 + 1
    ratio = settings.tau2_fudge * tau2.double()[:, ctx.shells] * ctf2.double().sum(-2) / noise.double()[ctx.shells]
    means, counts = _shell_mean(ratio, ctx.shells, ctx.hermitian.double(), n_shells)
    return torch.where(counts > 0, means, torch.zeros_like(means))


def _masked(images: torch.Tensor, settings: Class2DSettings) -> torch.Tensor:
    mask = _particle_mask(settings, images.device)
    return images * mask if mask is not None else images


def _update_noise(state: Class2DState, stats: Class2DStats, ctx: ExpectationContext) -> torch.Tensor:
    """``σ²`` per shell: the posterior-expected ``|X − CTF·S·RA|²`` per sample, averaged per shell.

    ``Σ_i E|X − CTF S RA|² = Σ|X|² − 2 Re Σ_{c,psi} RA · conj(Σ P CTF conj(S) X) + Σ_{c,psi} |RA|² Σ P CTF²``,
    so the E-step sums suffice (the references of the E-step, as RELION).
    """
    s = state.settings
    n_shells = s.box_size // 2 + 1
    ra = ctx.rotated_references
    numerator = stats.numerator.sum(0)
    ctf2 = stats.ctf2.sum(0)
    residual = (stats.power - 2.0 * (ra * numerator.conj()).real.sum((0, 1))
                + ((ra.real**2 + ra.imag**2) * ctf2).sum((0, 1))) / max(stats.n_particles, 1)
    residual = residual.double().clamp_min(0.0)
    herm = ctx.hermitian.double()
    old = state.noise_spectrum.to(residual.device).double()
    if s.noise_model == "white":
        value = (residual * herm).sum() / herm.sum()
        new = torch.full_like(old, float(value))
    else:
        means, counts = _shell_mean(residual, ctx.shells, herm, n_shells)
        new = torch.where(counts > 0, means, old)
    floor = 1e-6 * float(new[: ctx.resolution_shell + 1].max())
    return new.clamp_min(max(floor, 1e-30)).to(torch.float32)


def m_step(state: Class2DState, stats: Class2DStats, *, context: ExpectationContext | None = None) -> Class2DState:
    """New class averages, noise spectrum, class weights, origin prior and resolution from E-step sums.

    Parameters
    ----------
    state
        The state the E-step used.
    stats
        Sums of :func:`e_step` over all particles.
    context
        :func:`prepare_expectation` of ``state`` (recomputed if None).

    Returns
    -------
    The next :class:`~cryolab.classify2d.model.Class2DState` (``iteration + 1``).
    """
    ctx = context if context is not None else prepare_expectation(state)
    if stats.resolution_shell != ctx.resolution_shell:
        raise ValueError("statistics and state disagree on the resolution limit")
    if stats.n_particles < 1:
        raise InputError("no particles in the statistics")
    s = state.settings
    n = s.box_size
    noise = _update_noise(state, stats, ctx)
    # three systems per class: the whole set and its two random halves (for the FRC)
    numerator = torch.cat([stats.numerator.sum(0, keepdim=True), stats.numerator])  # (3, K, R, M)
    ctf2 = torch.cat([stats.ctf2.sum(0, keepdim=True), stats.ctf2])
    prior = 1.0 / (s.tau2_fudge * state.tau2.double().clamp_min(1e-300))  # (K, shells)
    prior = torch.where(state.tau2 > 0, prior, torch.full_like(prior, 1e30))  # no power: force 0
    initial = None
    if state.half_references is not None:
        initial = torch.cat([state.references[None], state.half_references])
    solved = _solve_averages(numerator, ctf2, prior, ctx, noise, n, initial=initial)
    references = _masked(solved[0], s)  # RELION's solvent flattening
    # the FRC on unmasked halves: a mask shared by both would spread their common low-resolution
    # signal into high shells and inflate the FRC there
    half_averages = solved[1:]
    frc = fsc(half_averages[0], half_averages[1], ndim=2)
    class_resolution = fsc_resolution_A(frc, n, s.pixel_size_A, FRC_THRESHOLD)

    # τ² of the next iteration: the new averages' power where they were estimated
    power = _power_spectrum(references).to(state.tau2.dtype)
    new_tau2 = state.tau2.clone().to(power.device)
    limit = ctx.resolution_shell + 1
    new_tau2[:, :limit] = power[:, :limit]

    counts = stats.class_counts.double()
    weights = (counts / counts.sum()).to(torch.float32)
    offset_sigma = math.sqrt(float(stats.offset_sq_sum_A2) / (2.0 * stats.n_particles))
    offset_sigma = max(offset_sigma, 0.5 * s.offset_step_A)

    ssnr = _data_vs_prior(stats.ctf2.sum(0), state.tau2, noise, ctx, s)
    next_shell = max(state.resolution_shell, _resolution_window(ssnr, s))
    return dataclasses.replace(
        state, references=references.to(torch.float32), class_weights=weights, noise_spectrum=noise,
        tau2=new_tau2, offset_sigma_A=offset_sigma, resolution_shell=next_shell, iteration=state.iteration + 1,
        frc=frc, class_resolution_A=class_resolution, half_references=half_averages.to(torch.float32),
        data_vs_prior=ssnr.to(torch.float32),
    )


def reseed_empty_classes(state: Class2DState, *, min_fraction: float = 0.5) -> tuple[Class2DState, list]:
    """Give under-populated classes a new start by splitting the most populated class.

    EM from random averages can strand a class (its weight falls towards 0 and it stays there)
    while another class holds two views. A class whose weight is below ``min_fraction`` of an even
    share ``1/K`` takes one of the largest class's two half-set averages and the largest class
    keeps the other; they share its weight. The halves differ by their noise, which is enough for
    EM to pull them apart when the class held two kinds of particle (cryoSPARC re-seeds small
    classes similarly; RELION does not). :func:`run_em` calls it in the first half of a run.

    Returns
    -------
    (state, reseeded)
        The new state and a list of ``(small_class, split_class)`` pairs (0-based).
    """
    if state.half_references is None:
        return state, []
    k = state.settings.n_classes
    weights = state.class_weights.clone().double()
    refs = state.references.clone()
    tau2 = state.tau2.clone()
    mask = _particle_mask(state.settings, refs.device)
    pairs, touched = [], set()
    for empty in torch.argsort(weights).tolist():  # smallest first
        if weights[empty] >= min_fraction / k:
            break
        candidates = weights.clone()
        candidates[list(touched | {empty})] = -1.0  # each class is split or refilled at most once
        split = int(torch.argmax(candidates))
        if candidates[split] < 2 * min_fraction / k:
            break
        touched |= {empty, split}
        halves = state.half_references[:, split] * (mask if mask is not None else 1.0)
        refs[split], refs[empty] = halves[0], halves[1]
        weights[empty] = weights[split] = weights[split] / 2
        tau2[empty] = tau2[split]
        pairs.append((empty, split))
    if not pairs:
        return state, []
    return dataclasses.replace(state, references=refs, class_weights=(weights / weights.sum()).to(torch.float32),
                               tau2=tau2), pairs


def _resolution_window(data_vs_prior: torch.Tensor, settings: Class2DSettings) -> int:
    """Shell limit of the next E-step: the best class's last shell with data_vs_prior >= 1, + the increment."""
    below = data_vs_prior < 1.0
    n = data_vs_prior.shape[-1]
    index = torch.arange(n, device=data_vs_prior.device).expand_as(data_vs_prior)
    first_below = torch.where(below & (index > 0), index, torch.full_like(index, n)).min(dim=-1).values
    current = int((first_below - 1).clamp(min=1).max())
    return min(settings.max_shell, current + int(settings.resolution_increment_shells))


# --------------------------------------------------------------------------------------------
# Initialisation and driver


def _count_particles(batches) -> int:
    n = getattr(batches, "n_particles", None)
    return int(n) if n is not None else sum(len(b) for b in batches)


def initial_state(batches: Iterable[ParticleBatch], settings: Class2DSettings, *, initial_references=None,
                  generator: torch.Generator | None = None, device=None, show_progress: bool = True) -> Class2DState:
    """The state before the first E-step, from one pass over the data.

    Without ``initial_references`` (RELION's default for 2D) each particle is given a random class
    and a random angle of the grid, and the averages are the regularised CTF-corrected means of
    those random subsets (round blobs, slightly different per class); the prior power ``τ²`` for
    that first average is the power spectrum of the average of all particles. The noise spectrum
    starts as the particles' mean power spectrum (the residual with empty references), the class
    weights uniform, the origin prior at ``settings.initial_offset_sigma_A``, and the E-step
    resolution at the best random class's FRC resolution plus the increment.

    Parameters
    ----------
    batches
        Re-iterable collection of :class:`~cryolab.classify2d.model.ParticleBatch`.
    settings
        Run settings.
    initial_references
        Optional ``(K, N, N)`` starting averages (then the first E-step uses all shells up to
        ``settings.max_shell``).
    generator
        Random numbers for the random subsets (CPU generator).
    device
        Device of the state (default CPU).

    Raises
    ------
    InputError
        Fewer particles than classes; references of the wrong shape.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    n_particles = _count_particles(batches)
    k, n = settings.n_classes, settings.box_size
    if n_particles < k:
        raise InputError(f"{n_particles} particles cannot fill {k} classes: ask for at most {n_particles} classes")
    n_shells = n // 2 + 1
    psi = inplane_angles(settings.psi_step_deg, device=device)
    r = psi.numel()
    placeholder = Class2DState(
        settings=settings, references=torch.zeros(k, n, n, device=device), class_weights=torch.full((k,), 1.0 / k, device=device),
        noise_spectrum=torch.ones(n_shells, device=device), tau2=torch.ones(k, n_shells, device=device),
        offset_sigma_A=float(settings.initial_offset_sigma_A), resolution_shell=settings.max_shell,
    )
    ctx = prepare_expectation(placeholder)
    given = initial_references is not None
    if given:
        refs = as_tensor(initial_references, dtype=torch.float32).to(device)
        if refs.dim() == 2:
            refs = refs[None]
        if tuple(refs.shape) != (k, n, n):
            raise InputError(f"initial references must be ({k}, {n}, {n}) for {k} classes, got {tuple(refs.shape)}")
        if not bool(torch.isfinite(refs).all()):
            raise InputError("initial references contain NaN or infinite values")

    random_choice = torch.randint(k * r, (n_particles,), generator=generator)
    total = None
    bar = progress(total=n_particles, desc="initial references", unit="img", enabled=show_progress)
    try:
        for batch in batches:
            spectra, ctf = _batch_spectra(ctx, settings, batch, device)
            b = spectra.shape[0]
            halves = as_tensor(batch.halves, dtype=torch.int64).to(device).reshape(-1)
            order = torch.argsort(halves, stable=True)
            spectra, ctf = spectra[order], ctf[order]
            posteriors = torch.zeros(b, 1, k * r, device=device)
            if not given:  # each particle's random (class, angle) depends on its index only
                index = as_tensor(batch.indices, dtype=torch.int64).reshape(-1).cpu() % n_particles
                choice = random_choice[index][order.cpu()].to(device)
                posteriors[torch.arange(b, device=device), 0, choice] = 1.0
            numerator, ctf2 = _accumulate(posteriors, (ctf * spectra)[:, None, :], ctf**2, int((halves == 0).sum()))
            stats = Class2DStats(
                resolution_shell=ctx.resolution_shell, numerator=numerator.reshape(2, k, r, -1),
                ctf2=ctf2.reshape(2, k, r, -1), power=(spectra.real**2 + spectra.imag**2).sum(0),
                class_counts=posteriors.sum(dim=(0, 1)).reshape(k, r).sum(-1),
                offset_sq_sum_A2=torch.zeros((), device=device), n_particles=b, log_likelihood=0.0,
            )
            total = stats if total is None else total + stats
            bar.update(b)
    finally:
        bar.close()

    mean_power, _ = _shell_mean(total.power.double() / n_particles, ctx.shells, ctx.hermitian.double(), n_shells)
    if settings.noise_model == "white":
        mean_power = torch.full_like(mean_power, float((total.power.double() * ctx.hermitian).sum() / (n_particles * ctx.hermitian.sum())))
    last = min(settings.max_shell, n_shells - 1)
    mean_power[last + 1:] = mean_power[last]
    noise = mean_power.clamp_min(1e-30).to(torch.float32)

    if given:
        mask = _particle_mask(settings, device)
        refs = refs * mask if mask is not None else refs
        tau2 = _power_spectrum(refs).clamp_min(0.0)
        return dataclasses.replace(placeholder, references=refs, noise_spectrum=noise, tau2=tau2)

    pooled_ctf2 = total.ctf2.sum(dim=(0, 1))  # (R, M)
    tiny = 1e-3 * float((pooled_ctf2.sum(0) * ctx.hermitian / noise[ctx.shells]).mean())  # a tiny Wiener constant
    pooled = _solve_averages(total.numerator.sum(dim=(0, 1)), pooled_ctf2, torch.full((n_shells,), tiny, dtype=torch.float64),
                             ctx, noise, n)
    pooled = _masked(pooled, settings)
    pooled_power = _power_spectrum(pooled)
    pooled_power[last + 1:] = pooled_power[last]
    tau2 = pooled_power.clamp_min(1e-30 * float(pooled_power.max().clamp_min(1e-30)))[None].expand(k, -1).clone()
    start = dataclasses.replace(placeholder, noise_spectrum=noise, tau2=tau2)
    first = m_step(start, total, context=ctx)
    return dataclasses.replace(
        first, class_weights=torch.full((k,), 1.0 / k, device=device), offset_sigma_A=float(settings.initial_offset_sigma_A),
        resolution_shell=_resolution_window(first.data_vs_prior, settings), iteration=0,
    )


@dataclass(frozen=True)
class IterationRecord:
    """What one EM iteration produced (handed to :func:`run_em`'s callback).

    Attributes
    ----------
    iteration
        1-based iteration number.
    state
        The state after this iteration's M-step (its class averages, resolutions, ...).
    assignments
        Per-particle results of this iteration's E-step, ordered by particle index.
    log_likelihood
        ``Σ_i log p(X_i | model)`` in the E-step (over the frequencies it used).
    changed_fraction
        Fraction of particles whose most probable class changed from the previous iteration
        (1 at the first).
    resolution_shell
        Shell limit of this iteration's E-step.
    seconds
        Wall-clock seconds of the iteration.
    """

    iteration: int
    state: Class2DState
    assignments: ParticleAssignments
    log_likelihood: float
    changed_fraction: float
    resolution_shell: int
    seconds: float


@dataclass(frozen=True)
class Class2DResult:
    """The outcome of :func:`run_em`: final state, last assignments, and per-iteration summaries."""

    state: Class2DState
    assignments: ParticleAssignments
    history: list


def run_em(batches: Iterable[ParticleBatch], settings: Class2DSettings, *, n_iterations: int = 25,
           initial_references=None, seed: int = 0, device=None,
           callback: Callable[[IterationRecord], None] | None = None, show_progress: bool = True,
           reseed_iterations: int | None = None) -> Class2DResult:
    """2D classification: :func:`initial_state`, then ``n_iterations`` of E-step (all batches) and M-step.

    Parameters
    ----------
    batches
        Re-iterable collection of :class:`~cryolab.classify2d.model.ParticleBatch` (e.g.
        :func:`~cryolab.classify2d.data.batches_from_particles`, which streams from disk); it is
        iterated once per iteration, so memory is bounded by the batch size.
    settings
        :class:`~cryolab.classify2d.model.Class2DSettings`.
    n_iterations
        Number of EM iterations.
    initial_references
        Optional ``(K, N, N)`` starting averages; default random subsets (seeded by ``seed``).
    seed
        Seed of the random initial subsets; the same seed gives the same result on one device.
    device
        Where to compute (``"cuda"`` if available and wanted); batches are moved there.
    callback
        Called with an :class:`IterationRecord` after each iteration (to write files, plot).
    show_progress
        Progress bar with ETA per iteration.
    reseed_iterations
        In iterations up to this one, under-populated classes are re-seeded by splitting the
        largest (:func:`reseed_empty_classes`); default the first half of the run, 0 never
        (RELION's behaviour).

    Returns
    -------
    :class:`Class2DResult`; ``history`` holds one dict per iteration (``iteration``,
    ``log_likelihood``, ``changed_fraction``, ``resolution_A``, ``class_weights``, ``seconds``).
    """
    import time

    if int(n_iterations) != n_iterations or n_iterations < 1:
        raise InputError(f"number of iterations must be a positive integer, got {n_iterations}")
    generator = torch.Generator().manual_seed(int(seed))
    state = initial_state(batches, settings, initial_references=initial_references, generator=generator,
                          device=device, show_progress=show_progress)
    n_particles = _count_particles(batches)
    previous = None
    history = []
    assignments = None
    reseed_until = int(n_iterations) // 2 if reseed_iterations is None else int(reseed_iterations)
    for it in range(1, int(n_iterations) + 1):
        start = time.perf_counter()
        ctx = prepare_expectation(state)
        total, parts = None, []
        bar = progress(total=n_particles, desc=f"iteration {it}/{n_iterations}", unit="img", enabled=show_progress)
        try:
            for batch in batches:
                stats = e_step(state, batch, context=ctx)
                parts.append(stats.particles)
                stats = dataclasses.replace(stats, particles=None)
                total = stats if total is None else total + stats
                bar.update(len(batch))
        finally:
            bar.close()
        assignments = ParticleAssignments.concatenate(parts).sorted()
        new_state = m_step(state, total, context=ctx)
        reseeded = []
        if it <= reseed_until and it < n_iterations:
            new_state, reseeded = reseed_empty_classes(new_state)
        changed = 1.0 if previous is None else float((assignments.class_index != previous).double().mean())
        previous = assignments.class_index
        seconds = time.perf_counter() - start
        record = IterationRecord(iteration=it, state=new_state, assignments=assignments,
                                 log_likelihood=total.log_likelihood, changed_fraction=changed,
                                 resolution_shell=state.resolution_shell, seconds=seconds)
        history.append({
            "iteration": it, "log_likelihood": total.log_likelihood, "changed_fraction": changed,
            "resolution_A": state.resolution_A, "class_weights": new_state.class_weights.tolist(),
            "class_resolution_A": new_state.class_resolution_A.tolist(), "offset_sigma_A": new_state.offset_sigma_A,
            "reseeded": [[e + 1, c + 1] for e, c in reseeded], "seconds": seconds,
        })
        if callback is not None:
            callback(record)
        state = new_state
    return Class2DResult(state=state, assignments=assignments, history=history)
