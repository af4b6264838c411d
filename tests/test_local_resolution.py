"""cryolab.validate.local_resolution, cryolab.postprocess_local.local_lowpass and `cryolab local-res`.

The test maps are dense random fields (a Gaussian blob of random weight at every voxel: white
noise blurred by a B-factor) plus independent white noise in each half map. Their half-map FSC
is known from the B-factor alone, so a region blurred by a larger B is worse resolved by a
predictable amount, and the global FSC of each region's content, computed on its own, is the
reference its local resolution must reproduce.
"""

import json
import math

import numpy as np
import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import apply_filter, bfactor_filter, randomize_phases_beyond, shell_index
from cryolab.masks import spherical_mask
from cryolab.postprocess import lowpass_at_resolution, postprocess
from cryolab.postprocess_local import local_lowpass, local_lowpass_levels_A
from cryolab.validate import fsc, fsc_resolution, fsc_resolution_A, local_resolution, phase_randomization_correction

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

N, PIXEL = 48, 1.0
WINDOW = 16  # voxels
SHARP_B, BLURRED_B = 80.0, 320.0  # Å² at 1 Å/voxel: half-map FSC crosses 0.143 near 2.5 Å and 5 Å


def _field_halves(n, pixel, b_factor, generator, amplitude=10.0):
    """Two half maps: the same blurred random field plus independent unit white noise."""
    truth = amplitude * torch.randn(n, n, n, generator=generator)
    signal = apply_filter(truth, bfactor_filter((n, n, n), b_factor * pixel**2, pixel), ndim=3)
    return signal + torch.randn(n, n, n, generator=generator), signal + torch.randn(n, n, n, generator=generator)


def two_region_halves(n=N, pixel=PIXEL, seed=0):
    """Half maps whose x < n/2 half is sharp and x >= n/2 half blurred, and the two pure pairs."""
    g = torch.Generator().manual_seed(seed)
    sharp = _field_halves(n, pixel, SHARP_B, g)
    blurred = _field_halves(n, pixel, BLURRED_B, g)
    left = (torch.arange(n) < n // 2)[None, None, :]
    halves = tuple(torch.where(left, s, b) for s, b in zip(sharp, blurred))
    return halves, sharp, blurred


@pytest.fixture(scope="module")
def regions():
    return two_region_halves()


def _shell_of(resolution_A, window=WINDOW, pixel=PIXEL):
    return window * pixel / resolution_A


# --- local resolution ---------------------------------------------------------------------------


def test_sharp_region_is_finer_and_each_region_matches_its_own_global_fsc(regions):
    (a, b), sharp, blurred = regions
    result = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=3)
    assert result.resolution_A.shape == (N, N, N) and result.resolution_A.dtype == torch.float32
    assert result.window_voxels == WINDOW and result.window_A == WINDOW * PIXEL and result.threshold == 0.143
    local = result.resolution_A
    # interiors: at least half a window from the boundary between the regions (x = N/2)
    sharp_local = float(local[..., : N // 2 - WINDOW // 2].median())
    blurred_local = float(local[..., N // 2 + WINDOW // 2:].median())
    sharp_global = float(fsc_resolution_A(fsc(*sharp), N, PIXEL, method="interpolated"))
    blurred_global = float(fsc_resolution_A(fsc(*blurred), N, PIXEL, method="interpolated"))
    assert 2.2 < sharp_global < 2.8 and 4.5 < blurred_global < 5.5  # the design of the maps
    assert blurred_local > 1.5 * sharp_local
    # within 1.5 shells of the window of the global FSC of the same content
    assert abs(_shell_of(sharp_local) - _shell_of(sharp_global)) < 1.5
    assert abs(_shell_of(blurred_local) - _shell_of(blurred_global)) < 1.5
    # the boundary is where the local resolution changes: left of it finer than right of it
    profile = local.median(dim=0).values.median(dim=0).values  # median over z and y, per x
    assert bool((profile[: N // 2 - WINDOW // 2] < 0.5 * (sharp_local + blurred_local)).all())
    assert bool((profile[N // 2 + WINDOW // 2:] > 0.5 * (sharp_local + blurred_local)).all())


def test_grid_values_are_windowed_fscs_centred_on_their_points(regions):
    """A grid value is the interpolated 0.143 crossing of the FSC of the two halves seen through
    the soft sphere centred on that voxel (zeros beyond the box), computed here one window at a time."""
    (a, b), _, _ = regions
    step = 5
    result = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=step)
    start = result.grid_start_voxel
    assert start == (N // 2) % step and result.grid_resolution_A.shape == (len(range(start, N, step)),) * 3
    weights = spherical_mask(WINDOW, PIXEL, WINDOW / 4, soft_edge_A=WINDOW / 4)
    padded = torch.nn.functional.pad(torch.stack([a, b]), (WINDOW, WINDOW) * 3)
    for index in [(0, 0, 0), (4, 4, 4), (1, 6, 8), (8, 2, 5), (8, 8, 8)]:
        z, y, x = (start + i * step for i in index)
        lo = [c + WINDOW - WINDOW // 2 for c in (z, y, x)]
        window = padded[:, lo[0]:lo[0] + WINDOW, lo[1]:lo[1] + WINDOW, lo[2]:lo[2] + WINDOW]
        window = (window - (window * weights).sum(dim=(-3, -2, -1), keepdim=True) / weights.sum()) * weights
        curve = fsc(window[0], window[1])
        expected = min(fsc_resolution(curve, WINDOW, PIXEL).interpolated_resolution_A, WINDOW * PIXEL)
        assert float(result.grid_resolution_A[index]) == pytest.approx(expected, rel=1e-4), index
        # and the full map passes through the grid values at the grid points
        assert float(result.resolution_A[z, y, x]) == pytest.approx(expected, rel=1e-4)


def test_identical_halves_give_nyquist_inside_the_mask_and_nan_outside(regions):
    (a, _), _, _ = regions
    mask = spherical_mask(N, PIXEL, 12.0, soft_edge_A=6.0)
    result = local_resolution(a, a.clone(), PIXEL, mask=mask, window_A=12.0, step_voxels=4)
    inside = mask >= 0.5
    assert torch.equal(result.inside, inside)
    assert torch.allclose(result.resolution_A[inside], torch.full((int(inside.sum()),), 2 * PIXEL), atol=1e-5)
    assert bool(torch.isnan(result.resolution_A[~inside]).all())
    # grid points far from the mask were not computed
    assert bool(torch.isnan(result.grid_resolution_A[0, 0, 0]))


def test_independent_noise_gives_the_coarse_end():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(N, N, N, generator=g), torch.randn(N, N, N, generator=g)
    local = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=4).resolution_A
    assert bool(torch.isfinite(local).all()) and float(local.max()) <= WINDOW * PIXEL + 1e-4
    # noise correlates by chance only in the first shells of a window: the coarse end, W to W/2
    assert float(local.median()) > WINDOW * PIXEL / 2
    assert float(local.min()) >= 2 * PIXEL - 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_input_device_in_chunks(regions, device):
    (a, b), _, _ = regions
    reference = local_resolution(a, b, PIXEL, window_A=12.0, step_voxels=4)
    small_chunks = local_resolution(a.to(device), b.to(device), PIXEL, window_A=12.0, step_voxels=4, max_voxels_per_chunk=12**3 * 7)
    assert small_chunks.resolution_A.device.type == device
    assert torch.allclose(small_chunks.resolution_A.cpu(), reference.resolution_A, atol=1e-3)


def test_bad_windows_and_masks_are_input_errors(regions):
    (a, b), _, _ = regions
    with pytest.raises(InputError, match="larger than the box"):
        local_resolution(a, b, PIXEL, window_A=N * PIXEL + 2)
    with pytest.raises(InputError, match="at least 6"):
        local_resolution(a, b, PIXEL, window_A=4.0)
    with pytest.raises(InputError, match="mask has shape"):
        local_resolution(a, b, PIXEL, mask=torch.ones(N - 2, N - 2, N - 2))
    with pytest.raises(InputError, match="no voxel"):
        local_resolution(a, b, PIXEL, mask=torch.zeros(N, N, N))
    with pytest.raises(InputError, match="different boxes"):
        local_resolution(a, b[:-2, :-2, :-2], PIXEL)
    with pytest.raises(InputError, match="crossing must be"):
        local_resolution(a, b, PIXEL, crossing="last_shell")
    for outside in (1.0, 100.0, 0.0, -5.0, math.nan):  # 16-voxel window of 1 Å: 2 .. 16 Å
        with pytest.raises(InputError, match="randomize_at_A must be"):
            local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, randomize_at_A=outside)


# --- crossing rule and phase-randomisation correction ------------------------------------------


def test_last_above_crossing_is_a_whole_window_shell_and_never_finer(regions):
    (a, b), _, _ = regions
    interpolated = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=4)
    last = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=4, crossing="last_above")
    assert last.crossing == "last_above" and interpolated.crossing == "interpolated"
    shells = _shell_of(last.grid_resolution_A)
    assert torch.allclose(shells, shells.round(), atol=1e-4)  # W p / s for a whole shell s
    assert bool((last.grid_resolution_A >= interpolated.grid_resolution_A - 1e-4).all())
    lag = float((_shell_of(interpolated.grid_resolution_A) - shells).mean())
    assert 0.2 < lag < 0.8  # half a shell on average


def test_phase_randomization_correction_works_on_batches_of_curves():
    g = torch.Generator().manual_seed(2)
    t, n = torch.rand(5, 3, 9, generator=g), torch.rand(3, 9, generator=g) * 0.5
    t[0, 0, 0], n[1, 0] = -1.0, -0.5  # shell 0 not positive: set to 1, row by row
    batched = phase_randomization_correction(t, n, 2)
    assert batched.shape == (5, 3, 9)
    for i in range(5):
        for j in range(3):
            assert torch.allclose(batched[i, j], phase_randomization_correction(t[i, j], n[j], 2)), (i, j)


def _window_correlated_halves(n=N, amplitude=30.0, below_shell=5, seed=3):
    """Half maps that share only content below box shell ``below_shell`` (about 10 Å here), strong
    against independent unit noise: all their correlation beyond it is the window's doing."""
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.fft.rfftn(amplitude * torch.randn(n, n, n, generator=g))
    common = torch.fft.irfftn(torch.where(shell_index((n, n, n), rfft=True) < below_shell, spectrum, 0), s=(n, n, n))
    return common + torch.randn(n, n, n, generator=g), common + torch.randn(n, n, n, generator=g)


def test_correction_removes_the_correlation_the_window_creates():
    a, b = _window_correlated_halves()
    plain = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=4)
    corrected = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=4, randomize_at_A=8.0)
    s = corrected.randomize_from_window_shell
    assert s == 2 and corrected.randomize_at_A == 8.0 and plain.randomize_at_A is None
    before, after = _shell_of(plain.grid_resolution_A), _shell_of(corrected.grid_resolution_A)
    # no shared content beyond ~10 Å (window shell 1.6), yet the window makes it look like 3.2 Å
    assert float(before.median()) > 4.5
    # corrected from shell s + 2 = 4: the crossing comes back to the first corrected shells
    assert float(after.median()) < s + 2.2 and float((before - after).median()) > 1.0
    assert bool((after <= before + 1e-4).all())  # coarser or equal, never finer


def test_correction_leaves_unmasked_like_maps_within_a_fraction_of_a_shell(regions):
    """Dense random fields with signal at every resolution: the window adds little to their correlation."""
    (a, b), _, _ = regions
    plain = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=4)
    corrected = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=4, randomize_at_A=8.0)
    change = _shell_of(plain.grid_resolution_A) - _shell_of(corrected.grid_resolution_A)
    assert bool((change >= -1e-4).all())  # never finer
    assert float(change.median()) < 0.3 and float(change.mean()) < 0.4
    left = _shell_of(plain.resolution_A[..., : N // 2].median()) - _shell_of(corrected.resolution_A[..., : N // 2].median())
    right = _shell_of(plain.resolution_A[..., N // 2:].median()) - _shell_of(corrected.resolution_A[..., N // 2:].median())
    assert 0 <= float(left) < 0.3 and 0 <= float(right) < 0.3


def test_corrected_grid_values_are_corrected_windowed_fscs(regions):
    """Each value: the FSC of the window, corrected with the FSC of the same window of the whole
    maps phase-randomised from box shell floor(N p / R) with the seed's phases, from window shell
    round(W p / R) + 2, a negative randomised FSC taken as 0."""
    (a, b), _, _ = regions
    step, randomize_at_A, seed = 5, 7.0, 11
    result = local_resolution(a, b, PIXEL, window_A=WINDOW * PIXEL, step_voxels=step, randomize_at_A=randomize_at_A, seed=seed)
    s = round(WINDOW * PIXEL / randomize_at_A)
    assert result.randomize_from_window_shell == s == 2
    randomized = randomize_phases_beyond(torch.stack([a, b]), int(N * PIXEL / randomize_at_A) - 1, ndim=3,
                                         generator=torch.Generator().manual_seed(seed))
    weights = spherical_mask(WINDOW, PIXEL, WINDOW / 4, soft_edge_A=WINDOW / 4)
    padded = torch.nn.functional.pad(torch.stack([a, b, *randomized]), (WINDOW, WINDOW) * 3)
    for index in [(0, 0, 0), (4, 4, 4), (1, 6, 8), (8, 2, 5)]:
        z, y, x = (result.grid_start_voxel + i * step for i in index)
        lo = [c + WINDOW - WINDOW // 2 for c in (z, y, x)]
        window = padded[:, lo[0]:lo[0] + WINDOW, lo[1]:lo[1] + WINDOW, lo[2]:lo[2] + WINDOW]
        window = (window - (window * weights).sum(dim=(-3, -2, -1), keepdim=True) / weights.sum()) * weights
        curve = phase_randomization_correction(fsc(window[0], window[1]), fsc(window[2], window[3]).clamp(min=0), s)
        expected = min(fsc_resolution(curve, WINDOW, PIXEL).interpolated_resolution_A, WINDOW * PIXEL)
        assert float(result.grid_resolution_A[index]) == pytest.approx(expected, rel=1e-4), index


def test_correction_is_deterministic_for_a_seed(regions):
    (a, b), _, _ = regions
    options = dict(window_A=WINDOW * PIXEL, step_voxels=4, randomize_at_A=8.0)
    first = local_resolution(a, b, PIXEL, seed=3, **options).grid_resolution_A
    assert torch.equal(first, local_resolution(a, b, PIXEL, seed=3, **options).grid_resolution_A)
    assert torch.equal(first, local_resolution(a, b, PIXEL, seed=torch.Generator().manual_seed(3), **options).grid_resolution_A)
    assert not torch.equal(first, local_resolution(a, b, PIXEL, seed=4, **options).grid_resolution_A)
    # the default seed is fixed too, and chunking does not change the phases
    default = local_resolution(a, b, PIXEL, **options).grid_resolution_A
    chunked = local_resolution(a, b, PIXEL, max_voxels_per_chunk=WINDOW**3 * 7, **options).grid_resolution_A
    assert torch.allclose(default, chunked, atol=1e-4, equal_nan=True)


# --- local filtering ----------------------------------------------------------------------------


def test_uniform_local_resolution_is_the_global_lowpass(regions):
    (a, b), _, _ = regions
    volume = 0.5 * (a + b)
    uniform = torch.full_like(volume, 4.0)
    assert torch.allclose(local_lowpass(volume, uniform, PIXEL), lowpass_at_resolution(volume, PIXEL, 4.0), atol=1e-5)


def test_each_voxel_gets_the_map_lowpassed_at_its_local_resolution(regions):
    (a, b), _, _ = regions
    volume = 0.5 * (a + b)
    # local resolution rising along x from Nyquist (2 Å) to 8 Å
    x = torch.arange(N, dtype=torch.float32)
    resolution = (2.0 + 6.0 * x / (N - 1)).expand(N, N, N).contiguous()
    filtered = local_lowpass(volume, resolution, PIXEL, n_levels=10)
    levels = local_lowpass_levels_A(resolution, n_levels=10)
    assert len(levels) == 10 and float(levels[0]) == pytest.approx(8.0) and float(levels[-1]) == pytest.approx(2.0)
    # the ends of the range sit exactly on a level: exactly that filtered map
    assert torch.allclose(filtered[..., 0], lowpass_at_resolution(volume, PIXEL, 2.0)[..., 0], atol=1e-4)
    assert torch.allclose(filtered[..., -1], lowpass_at_resolution(volume, PIXEL, 8.0)[..., -1], atol=1e-4)
    # in between, close to the map filtered at the voxel's own resolution (up to the rounding of
    # each filter to a shell of the box), much closer than to a filter 1.5 times coarser
    scale = float(volume.std())
    own, other = [], []
    for column in (3, 7, 15, 22, 30, 36, 41, 45):
        r = float(resolution[0, 0, column])
        own.append(float((filtered[..., column] - lowpass_at_resolution(volume, PIXEL, r)[..., column]).std()) / scale)
        other.append(float((filtered[..., column] - lowpass_at_resolution(volume, PIXEL, 1.5 * r)[..., column]).std()) / scale)
    assert max(own) < 0.1 and np.mean(own) < 0.25 * np.mean(other), (own, other)


def test_local_lowpass_needs_finite_resolutions(regions):
    (a, _), _, _ = regions
    resolution = torch.full_like(a, 4.0)
    resolution[0, 0, 0] = math.nan
    with pytest.raises(InputError, match="NaN"):
        local_lowpass(a, resolution, PIXEL)


# --- cryolab local-res --------------------------------------------------------------------------

CLI_N, CLI_PIXEL = 40, 2.0


@pytest.fixture
def half_map_files(tmp_path):
    from cryolab.io import write_mrc

    (a, b), _, _ = two_region_halves(CLI_N, CLI_PIXEL, seed=1)
    mask = spherical_mask(CLI_N, CLI_PIXEL, 30.0, soft_edge_A=6.0)
    write_mrc(tmp_path / "half1.mrc", a, CLI_PIXEL)
    write_mrc(tmp_path / "half2.mrc", b, CLI_PIXEL)
    write_mrc(tmp_path / "mask.mrc", mask, CLI_PIXEL)
    write_mrc(tmp_path / "other_pixel.mrc", b, 2.5)
    write_mrc(tmp_path / "other_box.mrc", b[:36, :36, :36], CLI_PIXEL)
    write_mrc(tmp_path / "mask_other_box.mrc", mask[:36, :36, :36], CLI_PIXEL)
    return tmp_path, a, b, mask


def test_cli_local_res_end_to_end(half_map_files):
    from cryolab.cli import main
    from cryolab.io import read_mrc

    folder, a, b, mask = half_map_files
    out = folder / "locres"
    assert main(["local-res", str(folder / "half1.mrc"), str(folder / "half2.mrc"), "--mask", str(folder / "mask.mrc"),
                 "--window-A", "24", "--step-voxels", "3", "-o", str(out)]) == 0
    for name in ("local_resolution.mrc", "local_filtered.mrc", "local_resolution.json", "local_resolution_histogram.png",
                 "local_resolution_slices.png", "index.html", "run.json"):
        assert (out / name).exists(), name
    local = read_mrc(out / "local_resolution.mrc")
    filtered = read_mrc(out / "local_filtered.mrc")
    assert local.pixel_size_A == pytest.approx(CLI_PIXEL) and filtered.pixel_size_A == pytest.approx(CLI_PIXEL)
    assert local.data.shape == filtered.data.shape == (CLI_N,) * 3
    assert np.isfinite(local.data).all() and np.isfinite(filtered.data).all()

    summary = json.loads((out / "local_resolution.json").read_text())
    inside = mask.numpy() >= 0.5
    values = local.data[inside]
    stats = summary["local_resolution_A"]
    assert stats["median"] == pytest.approx(float(np.median(values)), abs=1e-3)
    assert stats["min"] == pytest.approx(float(values.min()), abs=1e-3) and stats["max"] == pytest.approx(float(values.max()), abs=1e-3)
    assert summary["window_A"] == 24.0 and summary["window_voxels"] == 12 and summary["step_voxels"] == 3
    assert summary["threshold"] == 0.143
    expected = postprocess(a, b, CLI_PIXEL, mask=mask, b_factor_A2=0.0, fsc_weighting=False, lowpass_A=None)
    global_A = fsc_resolution(expected.fsc_final, CLI_N, CLI_PIXEL).interpolated_resolution_A
    assert summary["global_resolution_A"] == pytest.approx(global_A, abs=1e-3)
    assert summary["global_fsc_curve"] == "corrected masked FSC"
    assert np.allclose(local.data[~inside], global_A, atol=1e-3)  # outside the mask: the global resolution
    assert summary["bfactor_mode"] == "auto" and summary["bfactor_A2"] < 0
    # the sharp half of the box (x < N/2) is better resolved than the blurred half
    left, right = inside.copy(), inside.copy()
    left[..., CLI_N // 2:] = False
    right[..., : CLI_N // 2] = False
    assert np.median(local.data[left]) < 0.7 * np.median(local.data[right])

    # defaults, no mask, the plain average
    out = folder / "plain"
    assert main(["local-res", str(folder / "half1.mrc"), str(folder / "half2.mrc"), "--bfactor", "0", "-o", str(out)]) == 0
    summary = json.loads((out / "local_resolution.json").read_text())
    assert summary["window_voxels"] == 20 and summary["window_A"] == 40.0 and summary["step_voxels"] == 3
    assert summary["bfactor_mode"] == "given" and summary["bfactor_A2"] == 0.0
    assert summary["local_resolution_A"]["region"] == "whole box" and summary["local_resolution_A"]["n_voxels"] == CLI_N**3
    assert summary["global_fsc_curve"] == "unmasked FSC" and summary["outside_mask_value_A"] is None
    assert summary["crossing"] == "interpolated" and summary["randomize_at_A"] is None and summary["randomization_seed"] is None


def test_cli_local_res_relion_like_options_reach_the_json_and_the_map(half_map_files):
    from cryolab.cli import main
    from cryolab.io import read_mrc

    folder, a, b, mask = half_map_files
    out = folder / "relionlike"
    assert main(["local-res", str(folder / "half1.mrc"), str(folder / "half2.mrc"), "--mask", str(folder / "mask.mrc"),
                 "--window-A", "24", "--randomize-at-A", "8", "--crossing", "last-above", "--bfactor", "0", "-o", str(out)]) == 0
    summary = json.loads((out / "local_resolution.json").read_text())
    assert summary["randomize_at_A"] == 8.0 and summary["randomize_from_window_shell"] == 3
    assert summary["crossing"] == "last_above" and summary["randomization_seed"] == 0
    expected = local_resolution(a, b, CLI_PIXEL, mask=mask, window_A=24.0, randomize_at_A=8.0, crossing="last_above", seed=0)
    inside = expected.inside.numpy()
    assert np.allclose(read_mrc(out / "local_resolution.mrc").data[inside], expected.resolution_A.numpy()[inside], atol=1e-3)


@pytest.mark.parametrize(
    "second, extra, message",
    [
        ("other_box.mrc", [], "differ in size"),
        ("other_pixel.mrc", [], "pixel size"),
        ("half2.mrc", ["--window-A", "100"], "larger than the box"),
        ("half2.mrc", ["--window-A", "8"], "at least 6"),
        ("half2.mrc", ["--mask", "mask_other_box.mrc"], "mask has shape"),
        ("half2.mrc", ["--threshold", "1.5"], "--threshold"),
        ("half2.mrc", ["--randomize-at-A", "1"], "randomize_at_A must be"),
    ],
)
def test_cli_local_res_bad_input_is_one_line_exit_2_and_no_output(half_map_files, capsys, second, extra, message):
    from cryolab.cli import main

    folder = half_map_files[0]
    extra = [str(folder / e) if e.endswith(".mrc") else e for e in extra]
    out = folder / "out"
    assert main(["local-res", str(folder / "half1.mrc"), str(folder / second), *extra, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cryolab local-res: error: ") and message in err, err
    assert not out.exists()
