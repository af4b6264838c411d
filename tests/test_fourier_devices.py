"""Every cryolab.fourier function computes on its input's device and agrees with the CPU.

On a CPU-only machine this checks that results stay on the CPU; where CUDA is present the same
calls run on the GPU and are compared with the CPU results.
"""

import pytest
import torch

from cryolab import fourier as F

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run_everything(image: torch.Tensor, volume: torch.Tensor) -> dict[str, torch.Tensor]:
    device = image.device
    spectrum = F.rfft_centered(image, 2)
    return {
        "rfft": spectrum,
        "irfft": F.irfft_centered(spectrum, (16, 16)),
        "fft": F.ifft_centered(F.fft_centered(volume, 3), 3),
        "shifted_layout": F.rfft_fftshift(spectrum, 2),
        "radial": F.radial_average(spectrum.abs() ** 2, (16, 16)),
        "profile_grid": F.radial_profile_to_grid(torch.arange(9.0, device=device), (16, 16)),
        "crop": F.crop_center(volume, 9, ndim=3),
        "pad": F.pad_center(image, 21, ndim=2),
        "fourier_pad": F.fourier_pad(image, 21, ndim=2),
        "fourier_crop": F.fourier_crop(volume, (11, 12, 9)),
        "shift": F.fourier_shift(volume, torch.tensor([0.5, -1.25, 2.0], device=device)),
        "filters": F.apply_filter(image, F.lowpass_filter((16, 16), 0.2, edge_width=0.05, device=device), ndim=2)
        + F.apply_filter(image, F.bfactor_filter((16, 16), 50.0, 1.2, device=device), ndim=2),
        "convolve": F.fft_convolve(image, image[3:8, 4:9], mode="same"),
        "randomized": F.randomize_phases_beyond(volume, 3, ndim=3, generator=11),
        "dft": F.dft_2d(image),
    }


@pytest.mark.parametrize("device", DEVICES)
def test_results_stay_on_the_input_device_and_match_cpu(device):
    torch.manual_seed(0)
    image, volume = torch.randn(16, 16), torch.randn(2, 14, 14, 14)
    reference = run_everything(image, volume)
    results = run_everything(image.to(device), volume.to(device))
    for name, value in results.items():
        assert value.device.type == device, name
        torch.testing.assert_close(value.cpu(), reference[name], atol=1e-4, rtol=1e-4, msg=name)
