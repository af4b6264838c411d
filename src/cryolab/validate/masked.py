"""FSC of masked maps corrected for the mask's own correlation by phase randomisation.

A mask multiplies both half maps by the same function, so their transforms are both convolved
with the mask's transform and share structure that is not signal: a tight mask inflates the
FSC. Chen et al. (2013) measure that inflation directly: randomise the phases of both half maps
beyond a resolution where the signal is still strong, mask them, and compute their FSC
(``FSC_n``). Beyond that resolution any correlation of the randomised maps comes from the mask,
and the true FSC of the masked maps (``FSC_t``) is corrected as

    FSC_true = (FSC_t - FSC_n) / (1 - FSC_n).

As in RELION's ``relion_postprocess``, the randomisation starts at the first shell where the
unmasked FSC drops below 0.8, the correction is applied from two shells beyond it (near the
randomisation shell the randomised FSC has small artefacts) and the masked FSC is kept below.

Reference: S. Chen, G. McMullan, A. R. Faruqi, G. N. Murshudov, J. M. Short, S. H. W. Scheres &
R. Henderson, "High-resolution noise substitution to measure overfitting and validate
resolution in 3D structure determination by single particle electron cryomicroscopy",
Ultramicroscopy 135, 24-35 (2013).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import randomize_phases_beyond
from cryolab.validate.fsc import _check_pair, fsc

__all__ = ["MaskedFSC", "masked_fsc_corrected", "randomization_shell", "phase_randomization_correction"]


@dataclass(frozen=True)
class MaskedFSC:
    """FSC curves of a masked half-map pair, all ``(n_shells,)`` float32.

    Attributes
    ----------
    unmasked : FSC of the maps as given.
    masked : FSC after multiplying both maps by the mask (``FSC_t``).
    randomized_masked : FSC of the phase-randomised maps, masked (``FSC_n``).
    corrected : ``(FSC_t - FSC_n) / (1 - FSC_n)`` from ``randomize_from_shell + 2`` on, ``FSC_t`` below.
    randomize_from_shell : int
        First shell whose phases were randomised.
    """

    unmasked: torch.Tensor
    masked: torch.Tensor
    randomized_masked: torch.Tensor
    corrected: torch.Tensor
    randomize_from_shell: int


def randomization_shell(fsc_unmasked, *, randomize_at_fsc: float = 0.8) -> int:
    """First shell beyond 0 where the unmasked FSC drops below ``randomize_at_fsc`` (RELION's choice).

    Raises :class:`InputError` when the curve never drops below it (nothing to randomise).
    """
    curve = as_tensor(fsc_unmasked)
    below = torch.nonzero(curve[1:] < randomize_at_fsc)
    if len(below) == 0:
        raise InputError(f"the unmasked FSC never drops below {randomize_at_fsc}: no shell to randomise phases from")
    return int(below[0, 0]) + 1


def phase_randomization_correction(fsc_masked, fsc_randomized_masked, randomize_from_shell: int) -> torch.Tensor:
    """``(FSC_t - FSC_n) / (1 - FSC_n)`` for shells ``>= randomize_from_shell + 2``; ``FSC_t`` below.

    ``fsc_masked`` and ``fsc_randomized_masked`` are ``(..., n_shells)`` curves whose leading
    dimensions broadcast (one curve each, or one per local window). Shell 0 of either curve, if
    not positive, is set to 1 first (a map with zero mean can give an FSC of -1 at the origin;
    RELION does the same). Where ``FSC_n`` is 1 the result is 0.
    """
    fsc_t, fsc_n = torch.broadcast_tensors(as_tensor(fsc_masked), as_tensor(fsc_randomized_masked))
    fsc_t, fsc_n = fsc_t.clone(), fsc_n.clone()
    for curve in (fsc_t, fsc_n):
        curve[..., 0] = torch.where(curve[..., 0] <= 0, torch.ones_like(curve[..., 0]), curve[..., 0])
    shells = torch.arange(fsc_t.shape[-1], device=fsc_t.device)
    denominator = 1.0 - fsc_n
    safe = torch.where(denominator.abs() > 1e-12, denominator, torch.ones_like(denominator))
    corrected = torch.where(denominator.abs() > 1e-12, (fsc_t - fsc_n) / safe, torch.zeros_like(fsc_t))
    return torch.where(shells >= int(randomize_from_shell) + 2, corrected, fsc_t)


def masked_fsc_corrected(
    map_a,
    map_b,
    mask,
    *,
    randomize_at_fsc: float = 0.8,
    randomize_from_shell: int | None = None,
    randomize_from_A: float | None = None,
    pixel_size_A: float | None = None,
    seed: int | torch.Generator = 0,
) -> MaskedFSC:
    """Masked FSC of two half maps, corrected for the mask by phase randomisation (Chen et al. 2013).

    Parameters
    ----------
    map_a, map_b
        Real ``(N, N, N)`` half maps (unmasked).
    mask
        ``(N, N, N)`` soft mask in [0, 1] (:mod:`cryolab.masks`).
    randomize_at_fsc
        Randomise from the first shell where the unmasked FSC drops below this (RELION's
        ``--randomize_at_fsc``, default 0.8).
    randomize_from_shell, randomize_from_A, pixel_size_A
        Or give the first randomised shell directly, or a resolution in Å (with the pixel
        size; the shell is ``floor(N * pixel_size_A / randomize_from_A)``, RELION's rounding).
    seed
        Int seed or ``torch.Generator`` for the random phases; the same seed gives the same
        curves. Each half map gets its own phases.

    Returns
    -------
    :class:`MaskedFSC` with the unmasked, masked, randomised-masked and corrected curves.
    """
    map_a, map_b = as_tensor(map_a), as_tensor(map_b)
    shape = _check_pair(map_a, map_b, 3)
    if map_a.dim() != 3 or map_b.dim() != 3:
        raise InputError(f"masked_fsc_corrected takes single maps, got shapes {tuple(map_a.shape)} and {tuple(map_b.shape)}")
    mask = as_tensor(mask, device=map_a.device)
    if tuple(mask.shape) != shape:
        raise InputError(f"mask has shape {tuple(mask.shape)}, the maps have box {shape}")
    unmasked = fsc(map_a, map_b)
    if randomize_from_shell is None and randomize_from_A is not None:
        if pixel_size_A is None or not pixel_size_A > 0:
            raise InputError("randomize_from_A needs a positive pixel_size_A")
        randomize_from_shell = int(shape[0] * pixel_size_A / randomize_from_A)
    if randomize_from_shell is None:
        randomize_from_shell = randomization_shell(unmasked, randomize_at_fsc=randomize_at_fsc)
    randomize_from_shell = int(randomize_from_shell)
    if not 1 <= randomize_from_shell <= shape[0] // 2:
        raise InputError(f"the first randomised shell must be in 1..{shape[0] // 2}, got {randomize_from_shell}")

    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    # randomize_phases_beyond keeps shells <= its argument: shells >= randomize_from_shell change.
    both = torch.stack([map_a, map_b])
    randomized = randomize_phases_beyond(both, randomize_from_shell - 1, ndim=3, generator=generator)
    masked = fsc(map_a, map_b, mask=mask)
    randomized_masked = fsc(randomized[0], randomized[1], mask=mask)
    corrected = phase_randomization_correction(masked, randomized_masked, randomize_from_shell)
    return MaskedFSC(
        unmasked=unmasked,
        masked=masked,
        randomized_masked=randomized_masked,
        corrected=corrected,
        randomize_from_shell=randomize_from_shell,
    )
