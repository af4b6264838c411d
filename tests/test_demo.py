"""`cryolab demo`: the whole story on built-in data (simulate → reconstruct → FSC → sharpen → 2D classes).

Run at a tiny size (few particles, small box, coarse pixels) so that the test stays fast; the
default size is exercised by `make demo`.
"""

import json
import math
import re

import mrcfile
import numpy as np
import pytest

import cryolab.cli as cli

PIXEL_SIZE = 3.5
SMALL = ["-n", "200", "--box", "32", "--pixel-size", str(PIXEL_SIZE), "--classes", "3", "--defocus", "1", "2"]
OUTPUTS = ["index.html", "run.json", "demo.json", "ctf_profiles.png", "ctf_2d.png", "images.png", "fourier.png",
           "particles.star", "particles_00001.mrcs", "simulation.json", "montage.png", "reconstruction.mrc", "half1.mrc",
           "half2.mrc", "mask.mrc", "postprocess.mrc", "postprocess_masked.mrc", "fsc.csv", "fsc.png", "guinier.png",
           "map_sections.png", "class_averages.mrcs", "classes.png"]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """Output folders, both seed 1: a at the default SNR 0.1 (too few particles for a Guinier fit:
    about 12 Å), c at SNR 5, whose map reaches 7–8 Å, enough to fit the B-factor."""
    root = tmp_path_factory.mktemp("demo")
    runs = {}
    for name, extra in (("a", ["--seed", "1"]), ("c", ["--seed", "1", "--snr", "5"])):
        runs[name] = root / name
        assert cli.main(["demo", *SMALL, *extra, "-o", str(runs[name])]) == 0
    return runs


def test_writes_every_output_and_the_report_shows_every_figure(demo_runs):
    out = demo_runs["a"]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    index = (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 9
    shown = set(re.findall(r"<img src='([^']+)'", index))
    assert shown == set(pngs)
    for name in ("particles.star", "reconstruction.mrc", "postprocess.mrc", "class_averages.mrcs"):
        assert f"href='{name}'" in index


def test_maps_and_stacks_carry_the_pixel_size(demo_runs):
    out = demo_runs["a"]
    for name in ("reconstruction.mrc", "half1.mrc", "half2.mrc", "mask.mrc", "postprocess.mrc", "class_averages.mrcs",
                 "particles_00001.mrcs"):
        with mrcfile.open(out / name, permissive=False) as mrc:
            assert float(mrc.voxel_size.x) == pytest.approx(PIXEL_SIZE, rel=1e-5), name
            assert mrc.data.shape[-1] == 32
    with mrcfile.open(out / "reconstruction.mrc") as mrc:
        assert mrc.data.shape == (32, 32, 32)
    with mrcfile.open(out / "particles_00001.mrcs") as mrc:
        assert mrc.data.shape == (200, 32, 32)


def test_reported_half_map_resolution_is_the_fsc_of_the_written_half_maps(demo_runs):
    from cryolab.io import read_mrc
    from cryolab.validate import fsc, fsc_resolution

    out = demo_runs["a"]
    numbers = json.loads((out / "demo.json").read_text())
    reported = numbers["resolution_A_fsc_0.143_unmasked"]
    assert reported is not None and math.isfinite(reported)
    # between Nyquist and a blob: 200 particles at SNR 0.1 resolve well beyond 40 Å
    assert 2 * PIXEL_SIZE <= reported <= 40
    masked = numbers["resolution_A_fsc_0.143_masked"]
    assert masked is not None and 2 * PIXEL_SIZE <= masked <= 40
    half1, half2 = read_mrc(out / "half1.mrc").data, read_mrc(out / "half2.mrc").data
    recomputed = fsc_resolution(fsc(half1, half2), 32, PIXEL_SIZE, 0.143).resolution_A
    assert reported == pytest.approx(recomputed, abs=1e-3)
    table = np.genfromtxt(out / "fsc.csv", delimiter=",", names=True)
    assert {"fsc", "fsc_corrected", "fsc_map_vs_truth"} <= set(table.dtype.names)
    assert table["fsc"][1] > 0.5  # the lowest shell is well determined


def test_sharpening_fits_a_b_factor_only_when_the_resolution_allows(demo_runs):
    low = json.loads((demo_runs["a"] / "demo.json").read_text())
    assert low["resolution_A_fsc_0.143_masked"] > 10
    assert low["bfactor_A2"] is None and low["bfactor_fit_range_A"] is None
    assert "No B-factor was fitted" in (demo_runs["a"] / "index.html").read_text()
    high = json.loads((demo_runs["c"] / "demo.json").read_text())
    assert high["resolution_A_fsc_0.143_masked"] < 10
    assert high["bfactor_A2"] < 0  # sharpening restores the damped high frequencies
    lowres, highres = high["bfactor_fit_range_A"]
    assert lowres == 10 and highres == pytest.approx(high["resolution_A_fsc_0.143_masked"], abs=1e-3)


def test_class_populations_add_up_and_are_sorted(demo_runs):
    numbers = json.loads((demo_runs["a"] / "demo.json").read_text())
    counts = [c["particles"] for c in numbers["classes"]]
    assert len(counts) == 3 and sum(counts) == numbers["class2d_particles"] == 200
    assert counts == sorted(counts, reverse=True)
    with mrcfile.open(demo_runs["a"] / "class_averages.mrcs") as mrc:
        assert mrc.data.shape == (3, 32, 32) and np.isfinite(mrc.data).all() and mrc.data.std() > 0


def test_the_seed_alone_sets_the_particle_table(demo_runs):
    """Same seed, same STAR file (the SNR changes the images only); its poses are seed 1's draws."""
    import starfile

    from cryolab.simulate import generator_for, uniform_poses

    a, c = demo_runs["a"], demo_runs["c"]
    assert (a / "particles.star").read_bytes() == (c / "particles.star").read_bytes()
    assert (a / "particles_00001.mrcs").read_bytes() != (c / "particles_00001.mrcs").read_bytes()
    table = starfile.read(a / "particles.star")["particles"]
    euler = table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(np.float32)
    drawn = uniform_poses(200, generator=generator_for(1, "poses")).float().numpy()
    np.testing.assert_allclose(euler, drawn, atol=1e-3)
    assert not np.allclose(euler, uniform_poses(200, generator=generator_for(0, "poses")).float().numpy(), atol=1)


@pytest.mark.parametrize("bad", [["-n", "10"], ["--snr", "0"], ["--box", "8"], ["--box", "16", "--pixel-size", "2"],
                                 ["--pixel-size", "-1"], ["--voltage", "0"], ["-n", "100", "--classes", "11"]])
def test_bad_options_are_one_line_errors(tmp_path, capsys, bad):
    out = tmp_path / "out"
    assert cli.main(["demo", *bad, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cryolab demo: error: ") and err.count("\n") == 1
    assert not out.exists()
