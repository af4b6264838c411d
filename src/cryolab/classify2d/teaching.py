"""Expectation-maximization as Nelson teaches it: templates with unknown shifts, in plain real space.

The data are ``n`` noisy signals ``y_i`` (1D ``(L,)`` or 2D ``(H, W)``), each a copy of one of
``K`` templates ``t_k``, circularly shifted by one of ``S`` integer shifts ``s``, plus white
Gaussian noise of standard deviation ``σ``:

    y_i = roll(t_{k_i}, s_i) + noise,       k_i ~ π,   s_i ~ w,   noise ~ N(0, σ² I)

The class ``k_i`` and shift ``s_i`` are *hidden*. With ``D`` samples per signal the likelihood of
one signal is a sum over the hidden variables

    p(y_i | θ) = Σ_k Σ_s π_k w_s (2πσ²)^(−D/2) exp(−||y_i − roll(t_k, s)||² / (2σ²))

and the log-likelihood of the data set, ``L(θ) = Σ_i log p(y_i | θ)``, is what EM increases:

- **E-step** (θ fixed): the responsibility of each hypothesis for each signal,
  ``r_iks = π_k w_s p(y_i | k, s) / p(y_i)`` (Bayes' rule; a log-sum-exp keeps it finite).
- **M-step** (responsibilities fixed): the parameters that maximise the expected complete-data
  log-likelihood, in closed form — ``π_k = Σ_is r_iks / n``, ``w_s = Σ_ik r_iks / n``, each template
  the responsibility-weighted average of the signals shifted back, ``t_k = Σ_is r_iks roll(y_i, −s)
  / Σ_is r_iks``, and ``σ² = Σ_iks r_iks ||y_i − roll(t_k, s)||² / (n D)``.

Each iteration cannot decrease ``L`` (Dempster, Laird & Rubin 1977): the tests check it. With
``K = 1`` this is Nelson's single-template problem; the recovered ``w`` is the distribution of
shifts. :mod:`cryolab.classify2d.em` is the same algorithm with rotations, the CTF, coloured noise
and priors, computed in Fourier space.

References
----------
P. Nelson, *Physical Models of Living Systems*, 2nd ed. (2022), ch. 12 (single-particle
reconstruction; the likelihood of shifted noisy copies and its maximisation).
A. P. Dempster, N. M. Laird, D. B. Rubin, "Maximum likelihood from incomplete data via the EM
algorithm", J. R. Stat. Soc. B 39, 1–38 (1977).
F. J. Sigworth, J. Struct. Biol. 122, 328–339 (1998).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError

__all__ = [
    "TeachingModel", "TeachingResult", "integer_shifts", "shift_signals", "simulate_shifted_copies",
    "hypothesis_log_probabilities", "log_likelihood", "teaching_e_step", "teaching_m_step", "teaching_em",
]


@dataclass(frozen=True)
class TeachingModel:
    """Parameters θ of the shifted-templates model.

    Attributes
    ----------
    templates
        ``(K, *shape)`` templates ``t_k`` (``shape`` is ``(L,)`` or ``(H, W)``).
    class_weights
        ``(K,)`` ``π_k``.
    shift_weights
        ``(S,)`` ``w_s``, the prior over the shifts.
    sigma
        Noise standard deviation ``σ``.
    """

    templates: torch.Tensor
    class_weights: torch.Tensor
    shift_weights: torch.Tensor
    sigma: float


@dataclass(frozen=True)
class TeachingResult:
    """What :func:`teaching_em` found: the model, the log-likelihood before each iteration and after
    the last, the final responsibilities ``(n, K, S)`` and the templates after each iteration."""

    model: TeachingModel
    log_likelihoods: list
    responsibilities: torch.Tensor
    template_history: list = field(repr=False)


def integer_shifts(max_shift: int, ndim: int = 1) -> torch.Tensor:
    """All integer shift vectors with every component in ``[-max_shift, max_shift]``, ``(S, ndim)``.

    Components are geometric, ``(x,)`` or ``(x, y)`` (docs/conventions.md).
    """
    if int(max_shift) != max_shift or max_shift < 0:
        raise InputError(f"max_shift must be a non-negative integer, got {max_shift}")
    if ndim not in (1, 2):
        raise InputError(f"ndim must be 1 or 2, got {ndim}")
    axis = torch.arange(-int(max_shift), int(max_shift) + 1)
    if ndim == 1:
        return axis[:, None]
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)


def shift_signals(signals, shifts) -> torch.Tensor:
    """Every signal circularly shifted by every shift: ``out[..., j, :] = roll(signals[...], shifts[j])``.

    Parameters
    ----------
    signals
        ``(..., L)`` or ``(..., H, W)``; the number of signal axes is ``shifts.shape[-1]``.
    shifts
        ``(S, ndim)`` integer shifts ``(x[, y])``: content moves towards larger indices.

    Returns
    -------
    ``(..., S, *shape)``.
    """
    signals = signals if isinstance(signals, torch.Tensor) else as_tensor(signals)  # float64 stays float64
    shifts = as_tensor(shifts, dtype=torch.int64).reshape(len(shifts), -1)
    ndim = shifts.shape[-1]
    dims = tuple(range(-ndim, 0))
    out = [torch.roll(signals, shifts=tuple(int(v) for v in s.flip(0)), dims=dims) for s in shifts]  # (x, y) -> (y, x) axes
    return torch.stack(out, dim=signals.dim() - ndim)


def simulate_shifted_copies(templates, n: int, shifts, sigma: float, *, class_weights=None, shift_weights=None,
                            generator: torch.Generator | None = None):
    """Noisy, shifted copies of templates: the data of the teaching problem.

    Returns
    -------
    (signals, classes, shift_index)
        ``(n, *shape)`` float64 signals, ``(n,)`` true class and ``(n,)`` true index into ``shifts``.
    """
    templates = as_tensor(templates, dtype=torch.float64)
    shifts = as_tensor(shifts, dtype=torch.int64)
    if templates.dim() == shifts.shape[-1]:
        templates = templates[None]
    k, s = templates.shape[0], shifts.shape[0]
    pi = torch.full((k,), 1.0 / k, dtype=torch.float64) if class_weights is None else as_tensor(class_weights, dtype=torch.float64)
    w = torch.full((s,), 1.0 / s, dtype=torch.float64) if shift_weights is None else as_tensor(shift_weights, dtype=torch.float64)
    classes = torch.multinomial(pi / pi.sum(), n, replacement=True, generator=generator)
    shift_index = torch.multinomial(w / w.sum(), n, replacement=True, generator=generator)
    shifted = shift_signals(templates, shifts)  # (K, S, *shape)
    clean = shifted[classes, shift_index]
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float64) * sigma
    return clean + noise, classes, shift_index


def _check_data(data, shifts) -> tuple[torch.Tensor, torch.Tensor]:
    data = as_tensor(data, dtype=torch.float64)
    shifts = as_tensor(shifts, dtype=torch.int64)
    if shifts.dim() != 2 or shifts.shape[-1] not in (1, 2):
        raise InputError(f"shifts must be (S, 1) or (S, 2) integer vectors, got shape {tuple(shifts.shape)}")
    if data.dim() != 1 + shifts.shape[-1]:
        raise InputError(f"data must be (n, L) for 1D shifts or (n, H, W) for 2D shifts, got {tuple(data.shape)}")
    if not bool(torch.isfinite(data).all()):
        raise InputError("data contain NaN or infinite values")
    return data, shifts


def hypothesis_log_probabilities(data, model: TeachingModel, shifts) -> torch.Tensor:
    """``log[π_k w_s p(y_i | k, s)]`` for every signal and hypothesis, ``(n, K, S)``.

    ``log p(y_i | k, s) = −||y_i − roll(t_k, s)||² / (2σ²) − (D/2) log(2πσ²)``.
    """
    data, shifts = _check_data(data, shifts)
    ndim = shifts.shape[-1]
    d = math.prod(data.shape[1:])
    shifted = shift_signals(model.templates.double(), shifts)  # (K, S, *shape)
    diff = data[:, None, None] - shifted[None]
    sq = (diff**2).flatten(3).sum(-1) if ndim else diff**2  # (n, K, S)
    sigma2 = float(model.sigma) ** 2
    log_gauss = -sq / (2 * sigma2) - 0.5 * d * math.log(2 * math.pi * sigma2)
    return log_gauss + torch.log(model.class_weights.double())[None, :, None] + torch.log(model.shift_weights.double())[None, None, :]


def log_likelihood(data, model: TeachingModel, shifts) -> float:
    """``L(θ) = Σ_i log Σ_k Σ_s π_k w_s p(y_i | k, s)`` (nats)."""
    joint = hypothesis_log_probabilities(data, model, shifts)
    return float(torch.logsumexp(joint.flatten(1), dim=1).sum())


def teaching_e_step(data, model: TeachingModel, shifts) -> torch.Tensor:
    """Responsibilities ``r_iks = P(k, s | y_i, θ)``, ``(n, K, S)`` (each signal's sum to 1)."""
    joint = hypothesis_log_probabilities(data, model, shifts)
    return torch.softmax(joint.flatten(1), dim=1).reshape(joint.shape)


def teaching_m_step(data, responsibilities, shifts, *, min_sigma: float = 1e-6) -> TeachingModel:
    """The parameters maximising the expected complete-data log-likelihood (module docstring)."""
    data, shifts = _check_data(data, shifts)
    r = as_tensor(responsibilities, dtype=torch.float64)
    n = data.shape[0]
    d = math.prod(data.shape[1:])
    unshifted = shift_signals(data, -shifts)  # (n, S, *shape): each signal shifted back by each s
    mass = r.sum(dim=(0, 2))  # (K,)
    sums = torch.einsum("iks,is...->k...", r, unshifted)
    templates = sums / mass.clamp_min(1e-300).reshape(-1, *([1] * (data.dim() - 1)))
    class_weights = mass / n
    shift_weights = r.sum(dim=(0, 1)) / n
    shifted = shift_signals(templates, shifts)  # (K, S, *shape)
    sq = ((data[:, None, None] - shifted[None]) ** 2).flatten(3).sum(-1)
    sigma = math.sqrt(max(float((r * sq).sum()) / (n * d), min_sigma**2))
    return TeachingModel(templates=templates, class_weights=class_weights, shift_weights=shift_weights, sigma=sigma)


def teaching_em(data, n_classes: int, shifts, *, n_iterations: int = 30, initial_templates=None,
                initial_sigma: float | None = None, n_starts: int = 1,
                generator: torch.Generator | None = None) -> TeachingResult:
    """Run EM on the shifted-templates model.

    Parameters
    ----------
    data
        ``(n, L)`` or ``(n, H, W)`` signals.
    n_classes
        ``K``.
    shifts
        ``(S, 1)`` or ``(S, 2)`` integer shifts (:func:`integer_shifts`).
    n_iterations
        Number of E/M pairs.
    initial_templates
        ``(K, *shape)``; default ``K`` signals drawn at random but spread out: each next one with
        probability proportional to its squared distance (minimised over shifts) from those already
        drawn (k-means++ seeding, Arthur & Vassilvitskii 2007).
    initial_sigma
        Starting σ; default the RMS residual of the signals against their best-fitting initial
        template and shift.
    n_starts
        EM climbs to the nearest local maximum of ``L``; with several random starts the run with
        the highest final log-likelihood is returned (ignored with ``initial_templates``).

    Returns
    -------
    :class:`TeachingResult`; ``log_likelihoods`` has ``n_iterations + 1`` entries, non-decreasing.
    """
    data, shifts = _check_data(data, shifts)
    n = data.shape[0]
    if int(n_classes) != n_classes or n_classes < 1:
        raise InputError(f"number of classes must be a positive integer, got {n_classes}")
    if n < n_classes:
        raise InputError(f"{n} signals cannot fill {n_classes} classes")
    if int(n_starts) != n_starts or n_starts < 1:
        raise InputError(f"number of starts must be a positive integer, got {n_starts}")
    best = None
    for _ in range(1 if initial_templates is not None else int(n_starts)):
        if initial_templates is None:
            templates = _spread_out_signals(data, int(n_classes), shifts, generator)
        else:
            templates = as_tensor(initial_templates, dtype=torch.float64).reshape(n_classes, *data.shape[1:])
        result = _run_teaching_em(data, shifts, templates, n_iterations, initial_sigma)
        if best is None or result.log_likelihoods[-1] > best.log_likelihoods[-1]:
            best = result
    return best


def _spread_out_signals(data, k: int, shifts, generator) -> torch.Tensor:
    n = data.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=generator))]
    flat = data.flatten(1)
    nearest = torch.full((n,), math.inf, dtype=torch.float64)
    while len(chosen) < k:
        shifted = shift_signals(data[chosen[-1]], shifts).flatten(1)  # (S, D)
        d2 = torch.cdist(flat, shifted).min(dim=1).values ** 2
        nearest = torch.minimum(nearest, d2)
        p = nearest.clone()
        p[chosen] = 0.0
        chosen.append(int(torch.multinomial(p / p.sum(), 1, generator=generator)))
    return data[chosen].clone()


def _run_teaching_em(data, shifts, templates, n_iterations, initial_sigma) -> TeachingResult:
    k, s = templates.shape[0], shifts.shape[0]
    if initial_sigma is None:
        # the RMS residual of each signal against its best-fitting template and shift: a σ from the
        # data's overall spread would make every responsibility flat and the templates collapse
        shifted = shift_signals(templates, shifts).flatten(2)  # (K, S, D)
        d2 = torch.stack([torch.cdist(data.flatten(1), t) for t in shifted]).min(dim=-1).values.min(dim=0).values ** 2
        initial_sigma = math.sqrt(float(d2.mean()) / shifted.shape[-1])
    model = TeachingModel(templates=templates, class_weights=torch.full((k,), 1.0 / k, dtype=torch.float64),
                          shift_weights=torch.full((s,), 1.0 / s, dtype=torch.float64), sigma=float(initial_sigma))
    lls, history = [], []
    for _ in range(int(n_iterations) + 1):
        joint = hypothesis_log_probabilities(data, model, shifts).flatten(1)
        lls.append(float(torch.logsumexp(joint, dim=1).sum()))  # L(θ) of the current model
        responsibilities = torch.softmax(joint, dim=1).reshape(-1, k, s)  # E-step
        if len(lls) > int(n_iterations):
            break
        model = teaching_m_step(data, responsibilities, shifts)  # M-step
        history.append(model.templates.clone())
    return TeachingResult(model=model, log_likelihoods=lls, responsibilities=responsibilities, template_history=history)
