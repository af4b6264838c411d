"""cryolab.postprocess: Guinier plot, B-factor fit, sharpening, FSC weighting (RELION agreement); `cryolab postprocess`."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import apply_filter, bfactor_filter, shell_index
from cryolab.masks import spherical_mask
from cryolab.postprocess import (
    fit_bfactor,
    fsc_weighting_filter,
    guinier_plot,
    lowpass_at_resolution,
    postprocess,
    sharpen,
)

REFERENCE = Path(__file__).parent / "data" / "validate_relion_reference.npz"


@pytest.fixture(scope="module")
def relion():
    data = np.load(REFERENCE)
    halves = torch.from_numpy(data["half_maps"].astype(np.float32))
    provenance = json.loads(str(data["provenance"]))
    return data, halves[0], halves[1], torch.from_numpy(data["mask"].astype(np.float32)), provenance


def _white(n, seed):
    return torch.randn(n, n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- Guinier plot and B-factor ----------------------------------------------------------------


@pytest.mark.parametrize("b_factor", [50.0, 150.0])
def test_guinier_slope_of_a_blurred_map_recovers_its_b_factor(b_factor):
    """A flat-spectrum map blurred by exp(-B k²/4) has Guinier slope -B/4: the fit returns -B."""
    n, pixel = 64, 1.2
    blurred = apply_filter(_white(n, 0), bfactor_filter((n, n, n), b_factor, pixel), ndim=3)
    k2, log_amplitude = guinier_plot(blurred, pixel)
    assert k2.shape == log_amplitude.shape == (n // 2 + 1,)
    assert float(k2[-1]) == pytest.approx((0.5 / pixel) ** 2)
    # up to 2.5 px: the Nyquist shell is half cut off by sharpen(), which zeroes |k| > Nyquist
    highres = 2.5 * pixel
    fit = fit_bfactor(k2, log_amplitude, lowres_A=10.0, highres_A=highres)
    assert fit.b_factor_A2 == pytest.approx(-b_factor, rel=0.03)  # RELION's sign: the B that sharpens it
    assert fit.correlation > 0.99
    assert fit.n_points == sum(1 for s in range(n // 2 + 1) if 1 / 10 <= s / (n * pixel) <= 1 / highres)
    # sharpening by the fitted B flattens the plot: a second fit gives ~0
    flat = sharpen(blurred, pixel, fit.b_factor_A2)
    refit = fit_bfactor(*guinier_plot(flat, pixel), lowres_A=10.0, highres_A=highres)
    assert abs(refit.b_factor_A2) < 0.03 * b_factor


def test_sharpen_is_bfactor_filter_up_to_nyquist():
    n, pixel = 32, 1.5
    volume = _white(n, 1).float()
    sharpened = sharpen(volume, pixel, -80.0)
    spectrum_ratio = torch.fft.rfftn(sharpened) / torch.fft.rfftn(volume)
    envelope = bfactor_filter((n, n, n), -80.0, pixel)
    inside = shell_index((n, n, n)) <= n // 2 - 1  # well inside Nyquist
    assert torch.allclose(spectrum_ratio.real[inside], envelope[inside], rtol=1e-3)
    corner = torch.zeros(n, n, n // 2 + 1, dtype=torch.bool)
    corner[n // 2, n // 2, n // 2] = True  # |k| = sqrt(3)/2 pixel⁻¹ > Nyquist: zeroed
    assert float(spectrum_ratio.abs()[corner]) < 1e-4
    assert torch.allclose(sharpen(sharpen(volume, pixel, -80.0), pixel, 80.0)[0:4], lowpass_nyquist(volume)[0:4], atol=1e-4)


def lowpass_nyquist(volume):
    n = volume.shape[0]
    from cryolab.fourier import fftfreq_magnitude

    k = fftfreq_magnitude((n, n, n), rfft=True)
    return torch.fft.irfftn(torch.fft.rfftn(volume) * (k <= 0.5 + 1e-9), s=volume.shape)


def test_fit_range_errors():
    k2 = torch.linspace(0, 0.06, 33)
    y = -10 * k2
    with pytest.raises(InputError, match="empty"):
        fit_bfactor(k2, y, lowres_A=5.0, highres_A=8.0)
    with pytest.raises(InputError, match="fewer than two"):
        fit_bfactor(k2, y, lowres_A=4.5, highres_A=4.4)
    assert fit_bfactor(k2, y, lowres_A=10.0).b_factor_A2 == pytest.approx(-40.0)
    # both ends inclusive, also for shells exactly at the limits (160 px of 1 Å: shell 16 is 10 Å)
    k2 = (torch.arange(81, dtype=torch.float32) / 160) ** 2
    assert fit_bfactor(k2, -k2, lowres_A=10.0, highres_A=5.0).n_points == 17  # shells 16 .. 32


def test_fsc_weighting_filter_follows_relion():
    curve = torch.tensor([1.0, 0.9, 1 / 3, 0.05, 0.00005, 0.2, 0.5, 0.5, 0.5])
    filt = fsc_weighting_filter(curve, (16, 16, 16))
    shells = shell_index((16, 16, 16))
    weight = lambda f: math.sqrt(2 * f / (1 + f))  # noqa: E731
    assert float(filt[shells == 1][0]) == pytest.approx(weight(0.9))
    assert float(filt[shells == 2][0]) == pytest.approx(math.sqrt(0.5), rel=1e-5)  # C_ref(1/3)
    assert float(filt[shells == 3][0]) == pytest.approx(weight(0.05))
    assert torch.all(filt[shells >= 4] == 0)  # from the first FSC < 1e-4 on, and past the curve
    negative = fsc_weighting_filter(torch.tensor([1.0, 0.5, -0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]), (16, 16, 16))
    assert float(negative[shells == 1][0]) == pytest.approx(weight(0.5)) and torch.all(negative[shells >= 2] == 0)


def test_lowpass_at_resolution_uses_a_two_shell_cosine_edge():
    n, pixel = 32, 2.0
    volume = _white(n, 2).float()
    filtered = lowpass_at_resolution(volume, pixel, 8.0)  # shell 64 / 8 = 8
    ratio = (torch.fft.rfftn(filtered) / torch.fft.rfftn(volume)).real
    shells = shell_index((n, n, n))
    assert torch.allclose(ratio[shells <= 6], torch.ones(()), atol=1e-4)
    assert torch.allclose(ratio[shells >= 10], torch.zeros(()), atol=1e-4)
    k = torch.linalg.vector_norm(torch.stack(torch.meshgrid(*[torch.fft.fftfreq(n)] * 2, torch.fft.rfftfreq(n), indexing="ij")), dim=0)
    on_cutoff = (k * n - 8).abs() < 1e-6
    assert torch.allclose(ratio[on_cutoff], torch.full((), 0.5), atol=1e-4)


# --- the driver, against relion_postprocess ---------------------------------------------------


def test_postprocess_matches_relion_without_mask(relion):
    data, a, b, _, provenance = relion
    pixel = float(data["pixel_size_A"])
    result = postprocess(a, b, pixel, autob_highres_A=provenance["autob_highres_A"])
    assert result.resolution.resolution_A == pytest.approx(float(data["unmasked_resolution_A"]), rel=1e-5)
    assert result.b_factor_A2 == pytest.approx(float(data["unmasked_bfactor_A2"]), abs=0.5)
    assert result.bfactor_fit.slope == pytest.approx(float(data["unmasked_guinier_slope"]), abs=0.1)
    assert result.bfactor_fit.intercept == pytest.approx(float(data["unmasked_guinier_intercept"]), abs=1e-3)
    c = a.shape[0] // 2
    slices = torch.stack([result.map[c], result.map[:, c], result.map[:, :, c]]).numpy()
    reference = data["unmasked_map_slices"]
    assert np.abs(slices - reference).max() < 1e-4 * np.abs(reference).max()
    assert result.lowpass_A == pytest.approx(result.resolution.resolution_A)
    assert result.masked is None and result.masked_map is None


def test_postprocess_fits_like_relion_default_range(relion):
    data, a, b, _, _ = relion
    result = postprocess(a, b, float(data["pixel_size_A"]), autob_highres_A=0)  # RELION's --autob_highres 0
    assert result.b_factor_A2 == pytest.approx(float(data["default_highres_bfactor_A2"]), abs=0.5)


def test_postprocess_with_mask_agrees_with_relion(relion):
    data, a, b, mask, provenance = relion
    result = postprocess(a, b, float(data["pixel_size_A"]), mask=mask, autob_highres_A=provenance["autob_highres_A"], seed=0)
    # the Guinier plot of the averaged map is deterministic: equal to RELION's
    assert np.abs(result.guinier_input.numpy() - data["masked_guinier_rlnLogAmplitudesOriginal"]).max() < 1e-4
    assert np.allclose(result.frequency_squared.numpy(), data["masked_guinier_rlnResolutionSquared"], atol=1e-6)
    # the FSC weighting uses the corrected FSC, whose random phases differ from RELION's
    assert result.resolution.resolution_A == pytest.approx(float(data["masked_resolution_A"]), rel=1e-5)
    assert result.b_factor_A2 == pytest.approx(float(data["masked_bfactor_A2"]), abs=5.0)
    assert torch.equal(result.masked_map, result.map * mask)
    assert result.fsc_final is result.masked.corrected


def test_postprocess_with_a_given_bfactor_and_no_weighting():
    n, pixel = 32, 1.5
    truth = apply_filter(_white(n, 3).float() * spherical_mask(n, pixel, 15.0, soft_edge_A=5.0), bfactor_filter((n, n, n), 100.0, pixel), ndim=3)
    a = truth + 0.3 * _white(n, 4).float()
    b = truth + 0.3 * _white(n, 5).float()
    result = postprocess(a, b, pixel, b_factor_A2=-100.0, fsc_weighting=False, lowpass_A=None)
    assert result.bfactor_fit is None and result.b_factor_A2 == -100.0 and result.lowpass_A is None
    assert torch.allclose(result.map, sharpen(0.5 * (a + b), pixel, -100.0), atol=1e-5)
    with pytest.raises(InputError):
        postprocess(a, b, pixel, b_factor_A2="sharp")
    with pytest.raises(InputError, match="different shapes"):
        postprocess(a, b[:-1, :-1, :-1], pixel)


# --- cryolab postprocess ---------------------------------------------------------------------


@pytest.fixture
def half_map_files(tmp_path):
    from cryolab.io import write_mrc

    data = np.load(REFERENCE)
    for i in range(2):
        write_mrc(tmp_path / f"half{i + 1}.mrc", data["half_maps"][i].astype(np.float32), float(data["pixel_size_A"]))
    write_mrc(tmp_path / "mask.mrc", data["mask"].astype(np.float32), float(data["pixel_size_A"]))
    write_mrc(tmp_path / "mask_wrong.mrc", data["mask"].astype(np.float32), 1.0)
    write_mrc(tmp_path / "other_pixel.mrc", data["half_maps"][1].astype(np.float32), 3.0)
    return tmp_path


def test_cli_postprocess_end_to_end(half_map_files):
    from cryolab.cli import main
    from cryolab.io import read_mrc

    folder = half_map_files
    out = folder / "post"
    assert main(["postprocess", str(folder / "half1.mrc"), str(folder / "half2.mrc"), "--mask", str(folder / "mask.mrc"), "-o", str(out)]) == 0
    for name in ("postprocess.mrc", "postprocess_masked.mrc", "postprocess.json", "guinier.png", "fsc.png", "fsc.csv", "run.json"):
        assert (out / name).exists(), name
    sharpened = read_mrc(out / "postprocess.mrc")
    assert sharpened.pixel_size_A == pytest.approx(2.0) and sharpened.data.shape == (64, 64, 64)
    summary = json.loads((out / "postprocess.json").read_text())
    assert summary["resolution_A"] == pytest.approx(5.12)
    assert summary["bfactor_A2"] < 0 and summary["bfactor_fit"]["lowres_A"] == 10.0
    assert summary["bfactor_fit"]["highres_A"] == pytest.approx(5.12)
    assert summary["fsc_curve"] == "corrected masked FSC" and summary["mask"]["randomize_from_shell"] == 12

    out = folder / "adhoc"
    assert main(["postprocess", str(folder / "half1.mrc"), str(folder / "half2.mrc"), "--bfactor", "-50", "--lowpass-A", "0", "-o", str(out)]) == 0
    summary = json.loads((out / "postprocess.json").read_text())
    assert summary["bfactor_A2"] == -50.0 and summary["bfactor_mode"] == "given" and summary["lowpass_A"] is None
    assert not (out / "postprocess_masked.mrc").exists()


@pytest.mark.parametrize(
    "second, extra, message",
    [
        ("half2.mrc", ["--mask", "mask_wrong.mrc"], "pixel size"),
        ("other_pixel.mrc", [], "pixel size"),
        ("half2.mrc", ["--autob-lowres-A", "3", "--autob-highres-A", "4"], "B-factor fit range"),
        ("missing.mrc", [], "missing.mrc"),
    ],
)
def test_cli_postprocess_bad_input_is_one_line_exit_2_and_no_output(half_map_files, capsys, second, extra, message):
    from cryolab.cli import main

    folder = half_map_files
    extra = [str(folder / e) if e.endswith(".mrc") else e for e in extra]
    out = folder / "out"
    assert main(["postprocess", str(folder / "half1.mrc"), str(folder / second), *extra, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cryolab postprocess: error: ") and message in err
    assert not out.exists()
