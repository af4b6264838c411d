"""The objects that travel through 2D classification: settings, state, a batch, statistics, assignments.

The statistical model (Scheres 2012, J. Mol. Biol. 415, 406; Sigworth 1998; Nelson 2019 ch. 12)
is, for particle ``i`` with Fourier transform ``X_i``:

    X_i(k) = CTF_i(k) · exp(2πi k·o) · A_c(Rᵀ k) + N_i(k),     N_i(k) ~ CN(0, σ²(|k|))

with unknown class ``c`` (prior ``π_c``), in-plane angle ``psi`` (uniform on a grid), origin
``o`` (Gaussian prior of standard deviation ``σ_o`` on a grid) and noise whose variance
``σ²`` depends on the frequency shell only (coloured) or not at all (white). Class averages
have a Gaussian prior ``A_c(k) ~ CN(0, T · τ_c²(|k|))`` with ``τ_c²`` the power spectrum of the
current average and ``T`` the regularisation parameter (RELION's ``--tau2_fudge``).

Units: Fourier quantities are those of the unnormalised transform of the image
(:func:`cryolab.fourier.rfft_centered`), so ``σ²(k) = E|N_i(k)|²`` equals ``N² ·`` the real-space
pixel variance for white noise in an ``N × N`` box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from cryolab.ctf import CTFParams
from cryolab.errors import InputError

__all__ = ["Class2DSettings", "Class2DState", "ParticleBatch", "ParticleAssignments", "Class2DStats"]

NOISE_MODELS = ("coloured", "white")


@dataclass(frozen=True)
class Class2DSettings:
    """Fixed parameters of a 2D classification run.

    Attributes
    ----------
    n_classes
        ``K``, the number of class averages.
    box_size
        ``N``: images are ``N × N`` pixels.
    pixel_size_A
        Pixel size in Å.
    psi_step_deg
        In-plane angular step; ``ceil(360 / step)`` angles (:func:`cryolab.rotations.inplane_angles`).
    offset_range_A, offset_step_A
        Origins searched on a grid of ``offset_step_A`` within a disc of ``offset_range_A`` about
        the box centre (:func:`~cryolab.classify2d.sampling.offset_grid_A`). Default 5 and 1
        pixels.
    tau2_fudge
        Regularisation parameter ``T`` (RELION ``--tau2_fudge``; 2 is RELION's choice for 2D):
        larger trusts the data more.
    mask_diameter_A
        Diameter of the soft circular mask applied to the particles (zeros outside) and to the
        class averages; None: no mask.
    mask_edge_px
        Width of the mask's raised-cosine edge in pixels (RELION's ``--maskedge``, 5).
    use_ctf
        Model the CTF (needs CTF parameters in every batch); False treats images as CTF-free.
    noise_model
        ``"coloured"``: σ² re-estimated per Fourier shell; ``"white"``: one σ² for all
        frequencies.
    resolution_increment_shells
        Fourier shells beyond the current resolution included in the E-step (RELION's
        ``--incr_size``, 10).
    max_resolution_A
        Never use frequencies finer than this (Å); None: up to Nyquist.
    initial_offset_sigma_A
        Standard deviation of the origin prior before it is re-estimated (RELION ``--offset``);
        default the offset range.
    """

    n_classes: int
    box_size: int
    pixel_size_A: float
    psi_step_deg: float = 10.0
    offset_range_A: float | None = None
    offset_step_A: float | None = None
    tau2_fudge: float = 2.0
    mask_diameter_A: float | None = None
    mask_edge_px: float = 5.0
    use_ctf: bool = True
    noise_model: str = "coloured"
    resolution_increment_shells: int = 10
    max_resolution_A: float | None = None
    initial_offset_sigma_A: float | None = None

    def __post_init__(self):
        if int(self.n_classes) != self.n_classes or self.n_classes < 1:
            raise InputError(f"number of classes must be a positive integer, got {self.n_classes}")
        if int(self.box_size) != self.box_size or self.box_size < 8:
            raise InputError(f"box size must be an integer >= 8 pixels, got {self.box_size}")
        if not (math.isfinite(self.pixel_size_A) and self.pixel_size_A > 0):
            raise InputError(f"pixel size must be positive (Å), got {self.pixel_size_A}")
        if not (self.psi_step_deg > 0 and self.psi_step_deg <= 360):
            raise InputError(f"psi step must lie in (0, 360] degrees, got {self.psi_step_deg}")
        px = self.pixel_size_A
        if self.offset_range_A is None:
            object.__setattr__(self, "offset_range_A", 5.0 * px)
        if self.offset_step_A is None:
            object.__setattr__(self, "offset_step_A", 1.0 * px)
        if not (self.offset_range_A >= 0 and math.isfinite(self.offset_range_A)):
            raise InputError(f"offset range must be >= 0 Å, got {self.offset_range_A}")
        if not (self.offset_step_A > 0 and math.isfinite(self.offset_step_A)):
            raise InputError(f"offset step must be positive (Å), got {self.offset_step_A}")
        if self.initial_offset_sigma_A is None:
            object.__setattr__(self, "initial_offset_sigma_A", max(self.offset_range_A, self.offset_step_A))
        if not self.initial_offset_sigma_A > 0:
            raise InputError(f"initial offset sigma must be positive (Å), got {self.initial_offset_sigma_A}")
        if not (self.tau2_fudge > 0 and math.isfinite(self.tau2_fudge)):
            raise InputError(f"tau2 fudge must be positive, got {self.tau2_fudge}")
        if self.mask_diameter_A is not None and not self.mask_diameter_A > 0:
            raise InputError(f"mask diameter must be positive (Å), got {self.mask_diameter_A}")
        if self.noise_model not in NOISE_MODELS:
            raise InputError(f"noise model must be one of {NOISE_MODELS}, got {self.noise_model!r}")
        if int(self.resolution_increment_shells) != self.resolution_increment_shells or self.resolution_increment_shells < 0:
            raise InputError(f"resolution increment must be a non-negative number of shells, got {self.resolution_increment_shells}")
        if self.max_resolution_A is not None and not self.max_resolution_A >= 2 * self.pixel_size_A * (1 - 1e-6):
            raise InputError(f"max resolution must be >= Nyquist ({2 * self.pixel_size_A:g} Å), got {self.max_resolution_A}")

    @property
    def nyquist_shell(self) -> int:
        return self.box_size // 2

    @property
    def max_shell(self) -> int:
        """Highest Fourier shell ever used: Nyquist, or ``floor(N · p / max_resolution_A)``."""
        if self.max_resolution_A is None:
            return self.nyquist_shell
        return min(self.nyquist_shell, int(math.floor(self.box_size * self.pixel_size_A / self.max_resolution_A + 1e-6)))


@dataclass(frozen=True)
class Class2DState:
    """The model parameters between two EM iterations (everything the E-step holds constant).

    Attributes
    ----------
    settings
        The run's :class:`Class2DSettings`.
    references
        ``(K, N, N)`` real-space class averages (CTF-corrected, masked), float32.
    class_weights
        ``(K,)`` prior class probabilities ``π_c`` (sum 1).
    noise_spectrum
        ``(N // 2 + 1,)`` noise variance ``σ²`` per Fourier shell, in units of the unnormalised
        rfft (``E|N(k)|²``).
    tau2
        ``(K, N // 2 + 1)`` power spectrum ``τ_c²`` of each class average (same units), the
        variance of the prior on the next average.
    offset_sigma_A
        Standard deviation (Å) of the Gaussian prior on each origin component.
    resolution_shell
        Highest Fourier shell used in the next E-step (inclusive).
    iteration
        Number of completed M-steps (0 before the first).
    frc
        ``(K, N // 2 + 1)`` Fourier ring correlation between the averages of the two random
        halves of each class (None before the first M-step).
    class_resolution_A
        ``(K,)`` resolution where each class's FRC drops below 0.143 (Å; inf if never above).
        Both halves are aligned against the same average, so this FRC is optimistic (reference
        bias); it is a guide, not a gold-standard resolution.
    half_references
        ``(2, K, N, N)`` unmasked averages of the two random halves of each class (None before
        the first M-step).
    data_vs_prior
        ``(K, N // 2 + 1)`` shell mean of ``T τ² Σ CTF² / σ²`` in the last M-step: above 1 the
        data determine the average; the E-step resolution follows its crossing of 1 (RELION).
    """

    settings: Class2DSettings
    references: torch.Tensor
    class_weights: torch.Tensor
    noise_spectrum: torch.Tensor
    tau2: torch.Tensor
    offset_sigma_A: float
    resolution_shell: int
    iteration: int = 0
    frc: torch.Tensor | None = None
    class_resolution_A: torch.Tensor | None = None
    half_references: torch.Tensor | None = None
    data_vs_prior: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.references.device

    @property
    def resolution_A(self) -> float:
        """Resolution (Å) of the highest shell the next E-step uses."""
        s = self.settings
        return s.box_size * s.pixel_size_A / max(self.resolution_shell, 1)


@dataclass(frozen=True)
class ParticleBatch:
    """A batch of particles handed to :func:`~cryolab.classify2d.em.e_step`.

    Attributes
    ----------
    images
        ``(b, N, N)`` real images centred at ``N // 2``, background normalised (mean 0, std 1).
    ctf
        CTF parameters with batch shape ``(b,)`` (or broadcastable), or None for CTF-free data.
    indices
        ``(b,)`` int64 positions of the particles in the data set (rows of the particle table).
    halves
        ``(b,)`` int64 random half (0 or 1) of each particle, for the per-class FRC.
    """

    images: torch.Tensor
    ctf: CTFParams | None
    indices: torch.Tensor
    halves: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class ParticleAssignments:
    """Per-particle results of an E-step (the most probable hypothesis and its probability).

    Attributes
    ----------
    indices
        ``(n,)`` int64 positions of the particles in the data set.
    class_index
        ``(n,)`` int64 most probable class, 0-based.
    psi_deg
        ``(n,)`` in-plane angle of the most probable hypothesis (RELION ``rlnAnglePsi``:
        ``image(x) = A(Rᵀ(x + o))``).
    offsets_A
        ``(n, 2)`` origin ``(x, y)`` in Å (``rlnOriginXAngst/YAngst``).
    max_probability
        ``(n,)`` posterior probability of that hypothesis (``rlnMaxValueProbDistribution``).
    log_likelihood
        ``(n,)`` ``log p(X_i | model)`` marginalised over class, angle and origin (nats; the
        Gaussian normalisation over the frequencies used is included).
    """

    indices: torch.Tensor
    class_index: torch.Tensor
    psi_deg: torch.Tensor
    offsets_A: torch.Tensor
    max_probability: torch.Tensor
    log_likelihood: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @staticmethod
    def concatenate(parts) -> "ParticleAssignments":
        parts = list(parts)
        return ParticleAssignments(*(torch.cat([getattr(p, name) for p in parts]) for name in
                                     ("indices", "class_index", "psi_deg", "offsets_A", "max_probability", "log_likelihood")))

    def sorted(self) -> "ParticleAssignments":
        """The same assignments ordered by particle index."""
        order = torch.argsort(self.indices)
        return ParticleAssignments(*(getattr(self, name)[order] for name in
                                     ("indices", "class_index", "psi_deg", "offsets_A", "max_probability", "log_likelihood")))


@dataclass(frozen=True)
class Class2DStats:
    """Sufficient statistics of the E-step, summed over particles (batches add with ``+``).

    ``M`` is the number of rfft samples used (shells ``<= resolution_shell``), ``R`` the number of
    in-plane angles. Image-frame sums are kept per ``(class, angle)`` and turned into the class's
    frame once per iteration by the M-step.

    Attributes
    ----------
    resolution_shell
        Shell limit of the E-step that produced them (fixes ``M``).
    numerator
        ``(2, K, R, M)`` complex ``Σ_i Σ_o P(c, psi, o | X_i) · CTF_i · conj(ramp_o) · X_i`` per
        random half.
    ctf2
        ``(2, K, R, M)`` real ``Σ_i P(c, psi | X_i) · CTF_i²`` per random half.
    power
        ``(M,)`` ``Σ_i |X_i(k)|²``.
    class_counts
        ``(K,)`` ``Σ_i P(c | X_i)``.
    offset_sq_sum_A2
        ``Σ_i E[|o|²]`` (Å²).
    n_particles
        Number of particles summed.
    log_likelihood
        ``Σ_i log p(X_i | model)``.
    particles
        The per-particle :class:`ParticleAssignments` (not summed: concatenated).
    """

    resolution_shell: int
    numerator: torch.Tensor
    ctf2: torch.Tensor
    power: torch.Tensor
    class_counts: torch.Tensor
    offset_sq_sum_A2: torch.Tensor
    n_particles: int
    log_likelihood: float
    particles: ParticleAssignments | None = field(default=None, repr=False)

    def __add__(self, other: "Class2DStats") -> "Class2DStats":
        if other.resolution_shell != self.resolution_shell:
            raise ValueError("statistics from E-steps at different resolutions cannot be added")
        parts = [p for p in (self.particles, other.particles) if p is not None]
        return Class2DStats(
            resolution_shell=self.resolution_shell,
            numerator=self.numerator + other.numerator,
            ctf2=self.ctf2 + other.ctf2,
            power=self.power + other.power,
            class_counts=self.class_counts + other.class_counts,
            offset_sq_sum_A2=self.offset_sq_sum_A2 + other.offset_sq_sum_A2,
            n_particles=self.n_particles + other.n_particles,
            log_likelihood=self.log_likelihood + other.log_likelihood,
            particles=ParticleAssignments.concatenate(parts) if parts else None,
        )
