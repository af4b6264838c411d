"""Fourier transforms, frequency grids, shells, resampling and filters (docs/conventions.md).

Layouts: computation uses unshifted spectra (zero frequency at index 0), real-to-complex along
the last ``ndim`` axes; leading axes are batch axes. Real-space data are centred at ``N // 2``.
Forward transforms are unnormalised, inverses divide by the number of samples.
"""

from cryolab.fourier.convolve import fft_convolve
from cryolab.fourier.crop import crop_center, pad_center
from cryolab.fourier.dft import dft_1d, dft_2d, dft_matrix
from cryolab.fourier.filters import (
    apply_filter,
    bandpass_filter,
    bfactor_filter,
    butterworth_lowpass_filter,
    gaussian_lowpass_filter,
    highpass_filter,
    lowpass_filter,
)
from cryolab.fourier.grids import fftfreq_grid, fftfreq_magnitude
from cryolab.fourier.phase_randomization import randomize_phases_beyond
from cryolab.fourier.resample import (
    fourier_crop,
    fourier_crop_rfft,
    fourier_pad,
    fourier_pad_rfft,
    fourier_resample,
)
from cryolab.fourier.shells import (
    radial_average,
    radial_profile_to_grid,
    resolution_A_to_shell,
    shell_index,
    shell_to_frequency,
    shell_to_resolution_A,
)
from cryolab.fourier.shift import fourier_shift, phase_ramp_rfft, phase_shift_rfft
from cryolab.fourier.transforms import (
    fft_centered,
    fftshift,
    ifft_centered,
    ifftshift,
    irfft_centered,
    rfft_centered,
    rfft_fftshift,
    rfft_ifftshift,
    rfft_shape,
)

__all__ = [
    # grids
    "fftfreq_grid",
    "fftfreq_magnitude",
    # transforms
    "rfft_shape",
    "rfft_centered",
    "irfft_centered",
    "fft_centered",
    "ifft_centered",
    "fftshift",
    "ifftshift",
    "rfft_fftshift",
    "rfft_ifftshift",
    # shells
    "shell_index",
    "radial_average",
    "radial_profile_to_grid",
    "shell_to_frequency",
    "shell_to_resolution_A",
    "resolution_A_to_shell",
    # real-space boxes
    "crop_center",
    "pad_center",
    # Fourier resampling
    "fourier_crop",
    "fourier_pad",
    "fourier_resample",
    "fourier_crop_rfft",
    "fourier_pad_rfft",
    # shifts
    "fourier_shift",
    "phase_shift_rfft",
    "phase_ramp_rfft",
    # filters
    "lowpass_filter",
    "highpass_filter",
    "bandpass_filter",
    "gaussian_lowpass_filter",
    "butterworth_lowpass_filter",
    "bfactor_filter",
    "apply_filter",
    # convolution
    "fft_convolve",
    # phase randomisation
    "randomize_phases_beyond",
    # reference DFT
    "dft_matrix",
    "dft_1d",
    "dft_2d",
]
