"""cryolab.validate: FSC (RELION agreement), resolution rules, mask correction, directional FSC; `cryolab fsc`."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import apply_filter, bfactor_filter, fftfreq_grid, lowpass_filter, radial_profile_to_grid
from cryolab.masks import spherical_mask
from cryolab.validate import (
    directional_fsc,
    fibonacci_directions,
    fsc,
    fsc_resolution,
    fsc_resolution_A,
    fsc_shell_frequencies,
    fsc_to_truth_from_half,
    full_map_fsc_from_half,
    masked_fsc_corrected,
    phase_randomization_correction,
    randomization_shell,
    shell_sample_counts,
    sphericity,
)

REFERENCE = Path(__file__).parent / "data" / "validate_relion_reference.npz"


@pytest.fixture(scope="module")
def relion():
    data = np.load(REFERENCE)
    halves = torch.from_numpy(data["half_maps"].astype(np.float32))
    return data, halves[0], halves[1], torch.from_numpy(data["mask"].astype(np.float32))


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def _blob(n, generator, *, b_factor=60.0, radius=None):
    """A random compact 'particle' whose spectrum falls off like a B-factor of ``b_factor`` px²."""
    blob = torch.randn(n, n, n, generator=generator) * spherical_mask(n, 1.0, radius or n / 3, soft_edge_A=4.0)
    blob = apply_filter(blob, bfactor_filter((n, n, n), b_factor, 1.0), ndim=3)
    return blob / blob.std()


# --- the FSC itself ------------------------------------------------------------------------


def test_identical_maps_correlate_perfectly_in_every_shell():
    volume = torch.randn(32, 32, 32, generator=_generator())
    assert torch.allclose(fsc(volume, volume), torch.ones(17), atol=1e-6)
    assert torch.allclose(fsc(volume, 3.0 * volume + 0.0), torch.ones(17), atol=1e-6)  # scale-free
    image = torch.randn(40, 40, generator=_generator(1))
    assert torch.allclose(fsc(image, image, ndim=2), torch.ones(21), atol=1e-6)  # FRC
    assert torch.allclose(fsc(volume, -volume), -torch.ones(17), atol=1e-6)


def test_independent_noise_has_fsc_near_zero_with_one_over_sqrt_count_spread():
    n = 64
    a = torch.randn(4, n, n, n, generator=_generator(2))
    b = torch.randn(4, n, n, n, generator=_generator(3))
    curves = fsc(a, b)  # batch of 4 independent pairs
    counts = shell_sample_counts((n, n, n)).double()
    # expected spread 1/sqrt(voxels in the whole shell) = 1/sqrt(2 × half-grid count)
    z = curves[:, 4:].double() * (2 * counts[4:]).sqrt()
    assert abs(float(z.mean())) < 0.35  # 116 values: the mean has standard error ~0.1
    # The kx = 0 plane holds each conjugate pair twice, so the effective count is slightly lower
    # and the spread slightly above 1.
    assert 0.95 < float(z.std()) < 1.2
    assert float(z.abs().max()) < 5


def test_fsc_of_signal_plus_noise_with_known_snr_per_shell():
    """Half maps S + N_i with per-shell SNR(s) = P_S(s) / σ²: FSC(s) = SNR / (1 + SNR)."""
    n = 48
    shells = torch.arange(n // 2 + 1, dtype=torch.float64)
    snr = 4.0 * torch.exp(-shells / 6.0)  # from 4 at the origin to ~0.07 at Nyquist
    amplitude = radial_profile_to_grid(snr.sqrt(), (n, n, n), rfft=True)  # noise σ = 1
    signal = apply_filter(torch.randn(n, n, n, generator=_generator(4), dtype=torch.float64), amplitude, ndim=3)
    a = signal + torch.randn(n, n, n, generator=_generator(5), dtype=torch.float64)
    b = signal + torch.randn(n, n, n, generator=_generator(6), dtype=torch.float64)
    measured = fsc(a, b).double()
    expected = snr / (1 + snr)
    tolerance = 4 / shell_sample_counts((n, n, n)).double().sqrt()
    assert torch.all((measured - expected).abs()[3:] < tolerance[3:])
    # and the curve crosses 0.143 where SNR = 1/6 (shell 6 ln 24 ≈ 19.1): last shell above is 19
    assert fsc_resolution(measured, n, 1.0).shell in (18, 19, 20)


def test_fsc_matches_relion_getfsc_on_the_stored_half_maps(relion):
    data, a, b, mask = relion
    ours = fsc(a, b).numpy()
    theirs = data["unmasked_rlnFourierShellCorrelationUnmaskedMaps"]
    assert ours.shape == theirs.shape == (33,)
    assert np.abs(ours - theirs).max() < 1e-4
    masked = fsc(a, b, mask=mask).numpy()
    assert np.abs(masked - data["masked_rlnFourierShellCorrelationMaskedMaps"]).max() < 1e-4
    # numpy in, torch out; float64 in, same answer
    assert torch.allclose(fsc(a.double().numpy(), b.double().numpy()), fsc(a, b), atol=1e-6)


def test_resolution_matches_relion_last_shell_above(relion):
    data, a, b, _ = relion
    box, pixel = a.shape[0], float(data["pixel_size_A"])
    result = fsc_resolution(fsc(a, b), box, pixel)
    assert result.resolution_A == pytest.approx(float(data["unmasked_resolution_A"]), rel=1e-5)
    assert float(fsc_resolution_A(fsc(a, b), box, pixel)) == pytest.approx(result.resolution_A, rel=1e-6)
    # the interpolated crossing lies between the last shell above and the next one
    assert box * pixel / (result.shell + 1) <= result.interpolated_resolution_A <= result.resolution_A


def test_resolution_rules_on_a_hand_made_curve():
    curve = torch.tensor([1.0, 0.9, 0.5, 0.3, 0.1, 0.2, 0.05, 0.0, 0.0])
    r = fsc_resolution(curve, 16, 2.0, 0.143)
    assert r.shell == 3  # RELION stops at the first shell below (4), though shell 5 is above again
    assert r.resolution_A == pytest.approx(32.0 / 3)
    assert r.interpolated_shell == pytest.approx(3 + (0.3 - 0.143) / (0.3 - 0.1))
    assert r.interpolated_frequency_per_A == pytest.approx(r.interpolated_shell / 32.0)
    assert fsc_resolution(curve, 16, 2.0, 0.5).shell == 2
    assert fsc_resolution(curve, 16, 2.0, 0.5).interpolated_shell == pytest.approx(2.0)
    never_below = torch.ones(9)
    assert fsc_resolution(never_below, 16, 2.0).resolution_A == pytest.approx(4.0)  # Nyquist
    nothing = torch.tensor([-1.0, 0.05, 0.0])  # shell 0 (the mean) is not tested
    assert fsc_resolution(nothing, 4, 1.0).shell == 0
    assert math.isinf(fsc_resolution(nothing, 4, 1.0).resolution_A)
    batch = fsc_resolution_A(torch.stack([curve, never_below]), 16, 2.0, method="interpolated")
    assert batch.shape == (2,) and float(batch[1]) == pytest.approx(4.0)
    with pytest.raises(InputError):
        fsc_resolution_A(curve, 16, 2.0, method="closest")


def test_shell_frequencies_are_in_inverse_angstrom():
    f = fsc_shell_frequencies(64, 1.5)
    assert f.shape == (33,)
    assert float(f[32]) == pytest.approx(1 / 3.0)  # Nyquist = 1 / (2 × pixel)
    assert float(f[8]) == pytest.approx(8 / 96)


def test_fsc_against_truth_follows_cref_of_the_half_map_fsc():
    """Full map (average of halves) vs truth: FSC ≈ sqrt(2 F / (1 + F)) with F the half-map FSC."""
    n = 48
    truth = _blob(n, _generator(7), b_factor=40.0)
    noise = 1.5
    a = truth + noise * torch.randn(n, n, n, generator=_generator(8))
    b = truth + noise * torch.randn(n, n, n, generator=_generator(9))
    half = fsc(a, b)
    against_truth = fsc(0.5 * (a + b), truth)
    predicted = fsc_to_truth_from_half(half)
    informative = half > 0.05
    assert torch.all((against_truth - predicted).abs()[informative][1:] < 0.08)
    # 0.143 between half maps is 0.5 against the truth (Rosenthal & Henderson)
    assert float(fsc_to_truth_from_half(torch.tensor(0.143))) == pytest.approx(0.5, abs=1e-3)
    assert float(full_map_fsc_from_half(torch.tensor(1 / 3))) == pytest.approx(0.5)
    assert float(fsc_to_truth_from_half(torch.tensor(-0.2))) == 0.0


def test_bad_inputs_raise_input_error():
    a = torch.zeros(16, 16, 16)
    with pytest.raises(InputError, match="different boxes"):
        fsc(a, torch.zeros(18, 18, 18))
    with pytest.raises(InputError, match="cubic"):
        fsc(torch.zeros(16, 16, 20), torch.zeros(16, 16, 20))
    with pytest.raises(InputError, match="mask"):
        fsc(a, a, mask=torch.ones(8, 8, 8))
    with pytest.raises(InputError):
        fsc(a.to(torch.complex64), a)


# --- mask correction -----------------------------------------------------------------------


def test_phase_randomisation_removes_the_correlation_a_hard_mask_adds():
    """Signal below shell 12 only; beyond it, a hard mask makes the noise correlate, the correction undoes it."""
    n = 48
    g = _generator(10)
    signal = torch.randn(n, n, n, generator=g) * spherical_mask(n, 1.0, 12.0, soft_edge_A=4.0)
    signal = apply_filter(signal, lowpass_filter((n, n, n), 12 / n), ndim=3)
    signal = signal / signal.std()
    a = signal + torch.randn(n, n, n, generator=g)
    b = signal + torch.randn(n, n, n, generator=g)
    hard_mask = spherical_mask(n, 1.0, 14.0)
    result = masked_fsc_corrected(a, b, hard_mask, seed=1)
    start = result.randomize_from_shell
    assert start == randomization_shell(result.unmasked) == 13  # first shell with unmasked FSC < 0.8
    beyond = slice(start + 2, n // 2 + 1)
    assert float(result.unmasked[beyond].abs().mean()) < 0.03  # no signal there
    assert float(result.masked[beyond].mean()) > 0.15  # ... but the mask correlates the noise
    assert float(result.corrected[beyond].abs().mean()) < 0.06  # the correction removes it
    assert torch.equal(result.corrected[: start + 2], result.masked[: start + 2])  # untouched below
    # the resolution: masked FSC overstates it by many shells, the corrected one does not
    masked_shell = fsc_resolution(result.masked, n, 1.0).shell
    corrected_shell = fsc_resolution(result.corrected, n, 1.0).shell
    assert masked_shell >= corrected_shell + 6 and corrected_shell <= 16
    # deterministic for a seed, different for another
    again = masked_fsc_corrected(a, b, hard_mask, seed=1)
    assert torch.equal(again.corrected, result.corrected)
    assert not torch.equal(masked_fsc_corrected(a, b, hard_mask, seed=2).randomized_masked, result.randomized_masked)


def test_masked_correction_agrees_with_relion_postprocess(relion):
    data, a, b, mask = relion
    result = masked_fsc_corrected(a, b, mask, seed=0)
    box, pixel = a.shape[0], float(data["pixel_size_A"])
    assert box * pixel / result.randomize_from_shell == pytest.approx(float(data["masked_randomise_from_A"]), rel=1e-5)
    assert np.abs(result.masked.numpy() - data["masked_rlnFourierShellCorrelationMaskedMaps"]).max() < 1e-4
    # random phases differ from RELION's: the randomised curves agree to their noise
    beyond = slice(result.randomize_from_shell + 2, None)
    assert np.abs(result.corrected.numpy() - data["masked_rlnFourierShellCorrelationCorrected"])[beyond].max() < 0.12
    assert fsc_resolution(result.corrected, box, pixel).resolution_A == pytest.approx(float(data["masked_resolution_A"]), rel=1e-5)


def test_correction_formula():
    t = torch.tensor([1.0, 0.9, 0.8, 0.6, 0.5])
    n = torch.tensor([-1.0, 0.9, 0.5, 0.2, 1.0])
    c = phase_randomization_correction(t, n, 1)
    assert c[0] == 1.0 and c[1] == pytest.approx(0.9) and c[2] == pytest.approx(0.8)  # below shell 1 + 2
    assert c[3] == pytest.approx((0.6 - 0.2) / 0.8)
    assert c[4] == 0.0  # FSC_n = 1: no information left


# --- directional FSC ---------------------------------------------------------------------


def _missing_cone(volume, half_angle_deg):
    n = volume.shape[-1]
    k = fftfreq_grid((n, n, n), rfft=True)
    cos_z = k[..., 2].abs() / torch.linalg.vector_norm(k, dim=-1).clamp_min(1e-12)
    keep = (cos_z < math.cos(math.radians(half_angle_deg))).float()
    keep[0, 0, 0] = 1.0
    return torch.fft.irfftn(torch.fft.rfftn(volume) * keep, s=volume.shape)


def test_directional_fsc_exposes_a_missing_cone():
    n = 40
    truth = _blob(n, _generator(11))
    halves = [truth + torch.randn(n, n, n, generator=_generator(12 + i)) for i in range(2)]
    directions = torch.cat([torch.eye(3), fibonacci_directions(60)])
    isotropic = directional_fsc(*halves, 1.0, directions=directions, half_angle_deg=20)
    cone = directional_fsc(*[_missing_cone(h, 35) for h in halves], 1.0, directions=directions, half_angle_deg=20)
    assert isotropic.curves.shape == (63, 21) and isotropic.sample_counts.shape == (63, 21)
    x, y, z = isotropic.resolution_A[:3]
    assert max(x, y, z) / min(x, y, z) < 1.25  # isotropic: similar along every axis
    assert isotropic.sphericity > 0.95
    cx, cy, cz = cone.resolution_A[:3]
    assert cz > 2 * max(cx, cy)  # along the missing cone the resolution is much worse
    assert abs(float(cx) - float(x)) < 0.5 and abs(float(cy) - float(y)) < 0.5  # across it, unchanged
    assert cone.sphericity < isotropic.sphericity - 0.05


def test_fibonacci_directions_and_sphericity():
    d = fibonacci_directions(200)
    assert d.shape == (200, 3)
    assert torch.allclose(torch.linalg.vector_norm(d, dim=-1), torch.ones(200), atol=1e-6)
    assert float(d.mean(0).abs().max()) < 0.01  # spread evenly
    assert sphericity(d, torch.full((200,), 0.3)) == pytest.approx(1.0)
    prolate = 1.0 / torch.sqrt((d[:, 0] ** 2 + d[:, 1] ** 2) + (d[:, 2] / 3) ** 2)  # 3:1 spheroid
    # Wadell sphericity of a 3:1 prolate spheroid: π^(1/3) (6V)^(2/3) / A = 0.846
    assert sphericity(d, prolate) == pytest.approx(0.846, abs=0.02)
    assert math.isnan(sphericity(d[d[:, 2] > 0], torch.ones(int((d[:, 2] > 0).sum()))))  # a hemisphere


# --- cryolab fsc ---------------------------------------------------------------------------


@pytest.fixture
def half_map_files(tmp_path):
    from cryolab.io import write_mrc

    n = 32
    truth = _blob(n, _generator(20))
    paths = []
    for i in range(2):
        path = tmp_path / f"half{i + 1}.mrc"
        write_mrc(path, truth + 0.8 * torch.randn(n, n, n, generator=_generator(21 + i)), 1.5)
        paths.append(path)
    write_mrc(tmp_path / "mask.mrc", spherical_mask(n, 1.5, 14.0, soft_edge_A=6.0), 1.5)
    write_mrc(tmp_path / "mask_2A.mrc", spherical_mask(n, 2.0, 14.0, soft_edge_A=6.0), 2.0)
    write_mrc(tmp_path / "small.mrc", torch.zeros(24, 24, 24), 1.5)
    return tmp_path, paths


def test_cli_fsc_writes_curve_plot_and_summary(half_map_files):
    from cryolab.cli import main
    from cryolab.io import read_mrc

    folder, (h1, h2) = half_map_files
    out = folder / "out"
    assert main(["fsc", str(h1), str(h2), "-o", str(out)]) == 0
    table = pd.read_csv(out / "fsc.csv")
    assert list(table.columns) == ["shell", "frequency_per_A", "resolution_A", "fsc"]
    expected = fsc(read_mrc(h1).data, read_mrc(h2).data).numpy()
    assert np.allclose(table["fsc"], expected, atol=1e-5)
    assert table["frequency_per_A"].iloc[-1] == pytest.approx(1 / 3.0)
    summary = json.loads((out / "fsc.json").read_text())
    assert summary["pixel_size_A"] == 1.5
    assert summary["resolution"]["resolution_A"] == pytest.approx(fsc_resolution(expected, 32, 1.5).resolution_A, abs=1e-3)
    assert (out / "fsc.png").stat().st_size > 10_000

    masked_out = folder / "masked"
    assert main(["fsc", str(h1), str(h2), "--mask", str(folder / "mask.mrc"), "--cones", "20", "-o", str(masked_out)]) == 0
    table = pd.read_csv(masked_out / "fsc.csv")
    assert {"fsc_masked", "fsc_phase_randomized_masked", "fsc_corrected"} <= set(table.columns)
    summary = json.loads((masked_out / "fsc.json").read_text())
    assert summary["curve"] == "corrected masked FSC" and summary["mask"]["randomize_from_shell"] >= 1
    assert summary["directional"]["n_directions"] == 20
    assert len(pd.read_csv(masked_out / "directional_fsc.csv")) == 20
    assert (masked_out / "directional_fsc.png").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mask", "mask_2A.mrc"], "pixel size"),
        (["--mask", "small.mrc"], "shape"),
        (["--threshold", "1.5"], "threshold"),
        (["--pixel-size", "-1"], "pixel-size"),
    ],
)
def test_cli_fsc_bad_input_is_one_line_exit_2_and_no_output(half_map_files, capsys, extra, message):
    from cryolab.cli import main

    folder, (h1, h2) = half_map_files
    extra = [str(folder / e) if e.endswith(".mrc") else e for e in extra]
    out = folder / "out"
    assert main(["fsc", str(h1), str(h2), *extra, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cryolab fsc: error: ") and message in err
    assert not out.exists()


def test_cli_fsc_rejects_half_maps_of_different_boxes(half_map_files, capsys):
    from cryolab.cli import main

    folder, (h1, _) = half_map_files
    assert main(["fsc", str(h1), str(folder / "small.mrc"), "-o", str(folder / "out")]) == 2
    assert "differ in size" in capsys.readouterr().err
    assert not (folder / "out").exists()


# --- devices -------------------------------------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_results_stay_on_the_input_device_and_match_cpu(device):
    from cryolab.masks import threshold_mask
    from cryolab.postprocess import guinier_plot, postprocess

    n = 24
    truth = _blob(n, _generator(30))
    halves = [truth + 0.5 * torch.randn(n, n, n, generator=_generator(31 + i)) for i in range(2)]
    mask = spherical_mask(n, 1.0, 8.0, soft_edge_A=3.0)

    def run(dev):
        a, b, m = (x.to(dev) for x in (*halves, mask))
        post = postprocess(a, b, 1.0, mask=m, autob_lowres_A=6.0, autob_highres_A=0)
        return {
            "fsc": fsc(a, b),
            "corrected": masked_fsc_corrected(a, b, m, seed=3).corrected,
            "directional": directional_fsc(a, b, 1.0, n_directions=10).curves,
            "guinier": guinier_plot(a, 1.0)[1],
            "post": post.map,
            "threshold_mask": threshold_mask(a, 1.0, 0.5, extend_A=1.0, soft_edge_A=2.0),
            "sphere": spherical_mask(n, 1.0, 8.0, soft_edge_A=3.0, device=dev),
        }

    reference = run("cpu")
    results = run(device)
    for name, value in results.items():
        assert value.device.type == device, name
        assert torch.allclose(value.cpu(), reference[name], atol=1e-4), name
