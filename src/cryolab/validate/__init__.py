"""Validation of reconstructions: FSC, resolution, masking correction, directional FSC, local resolution.

See :mod:`cryolab.validate.fsc` for the FSC convention (RELION's half-grid sums on integer
shells ``round(|k| N)``, docs/conventions.md).
"""

from cryolab.validate.fsc import (
    FSCResolution,
    fsc,
    fsc_from_spectra,
    fsc_resolution,
    fsc_resolution_A,
    fsc_shell_frequencies,
    fsc_to_truth_from_half,
    full_map_fsc_from_half,
    shell_sample_counts,
)
from cryolab.validate.directional import DirectionalFSC, directional_fsc, fibonacci_directions, sphericity
from cryolab.validate.local import LocalResolution, local_resolution
from cryolab.validate.masked import MaskedFSC, masked_fsc_corrected, phase_randomization_correction, randomization_shell

__all__ = [
    "fsc",
    "fsc_from_spectra",
    "shell_sample_counts",
    "fsc_shell_frequencies",
    "FSCResolution",
    "fsc_resolution",
    "fsc_resolution_A",
    "full_map_fsc_from_half",
    "fsc_to_truth_from_half",
    # masking correction (Chen et al. 2013)
    "MaskedFSC",
    "masked_fsc_corrected",
    "randomization_shell",
    "phase_randomization_correction",
    # directional FSC
    "fibonacci_directions",
    "DirectionalFSC",
    "directional_fsc",
    "sphericity",
    # local resolution
    "LocalResolution",
    "local_resolution",
]
