"""`cryolab simulate` end to end: built-in model, maps, states, CTF from a file, bad input."""

import json
import subprocess
import sys

import mrcfile
import numpy as np
import pandas as pd
import pytest

import cryolab.cli as cli
from cryolab.io import read_star, write_mrc, write_star
from test_simulate_noise import blob_volume


def run(args):
    return cli.main(["simulate", *map(str, args)])


def test_builtin_model_end_to_end(tmp_path):
    out = tmp_path / "sim"
    assert run(["adk_open", "--box", 64, "--pixel-size", 1.5, "-n", 200, "--seed", 4, "--snr", 0.05,
                "--shift-sigma-A", 2, "--astigmatism-max-A", 500, "-o", out]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["index.html", "montage.png", "particles.star", "particles_00001.mrcs", "run.json", "simulation.json"]
    with mrcfile.open(out / "particles_00001.mrcs") as m:
        assert m.data.shape == (200, 64, 64) and m.voxel_size.x == pytest.approx(1.5)
        assert float(m.data.std()) == pytest.approx(1.0, rel=0.05)  # SNR 0.05: nearly all noise, std 1
    table = read_star(out / "particles.star")
    assert len(table) == 200 and table["rlnImagePixelSize"].iloc[0] == 1.5 and table["rlnImageSize"].iloc[0] == 64
    assert table["rlnOriginXAngst"].std() == pytest.approx(2.0, rel=0.2)
    assert table["rlnDefocusU"].between(10000, 25250).all()
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["noise"]["snr"] == 0.05 and meta["noise"]["signal_mask"] == "box"
    assert meta["recipe"]["poses"]["kind"] == "uniform on SO(3)"
    assert json.loads((out / "run.json").read_text())["arguments"]["n_particles"] == 200
    assert (out / "montage.png").stat().st_size > 1000


@pytest.fixture
def two_maps(tmp_path):
    a = write_mrc(tmp_path / "a.mrc", blob_volume(), 2.0)
    b = write_mrc(tmp_path / "b.mrc", blob_volume(offsets=((0, 0, 0), (-6, 2, 0))), 2.0)
    return a, b


def test_maps_with_states_ctf_from_star_preferred_views_and_tilted_stage(tmp_path, two_maps):
    source = pd.DataFrame({"rlnImageName": ["000001@x.mrcs", "000002@x.mrcs"], "rlnDefocusU": [12000.0, 21000.0],
                           "rlnDefocusV": [11500.0, 20800.0], "rlnDefocusAngle": [10.0, 80.0], "rlnVoltage": [200.0, 200.0],
                           "rlnSphericalAberration": [2.7, 2.7], "rlnAmplitudeContrast": [0.07, 0.07],
                           "rlnImagePixelSize": [1.0, 1.0], "rlnImageSize": [100, 100]})
    write_star(tmp_path / "ctf.star", source)
    out = tmp_path / "sim"
    assert run(["--states", *two_maps, "--state-weights", 1, 3, "-n", 80, "--ctf-from", tmp_path / "ctf.star",
                "--preferred-views", "0,0", "0,90", "--view-spread-deg", 5, "--stage-tilt-deg", 30,
                "--dose", 40, "--mtf", "sinc", "--write-clean", "--batch-size", 32, "-o", out]) == 0
    assert (out / "clean_00001.mrcs").exists()
    table = read_star(out / "particles.star")
    assert set(table["cryolabState"]) == {1, 2} and (table["cryolabState"] == 2).mean() > 0.6
    offset = table["cryolabDefocusOffsetAngst"].to_numpy()
    base = table["rlnDefocusU"].to_numpy() - offset
    assert np.all(np.isclose(base[:, None], [12000.0, 21000.0], atol=0.01).any(axis=1))  # resampled rows
    assert np.allclose(offset, table["cryolabMicrographYAngst"] * np.tan(np.radians(30)), atol=0.05)  # tilt axis x
    assert (table["rlnVoltage"] == 200).all() and table["rlnAmplitudeContrast"].iloc[0] == pytest.approx(0.07)
    # views: about a top or a side view, all tilted by the stage: tilts cluster near 30° and 90° ± 30°
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["noise"]["model"] == "poisson" and meta["recipe"]["stage"]["tilt_deg"] == 30


def test_trajectory_and_no_noise(tmp_path, two_maps):
    out = tmp_path / "traj"
    assert run(["--states", *two_maps, two_maps[0], "--trajectory", "--latent-means", 0.2, 0.8, "--latent-sigmas", 0.05,
                "--interpolation", "linear", "--no-noise", "--no-ctf", "-n", 40, "-o", out]) == 0
    table = read_star(out / "particles.star")
    assert table["cryolabLatent"].between(0, 1).all() and "rlnDefocusU" not in table.columns
    assert json.loads((out / "simulation.json").read_text())["noise"]["model"] == "none"


def test_same_seed_same_files(tmp_path, two_maps):
    for name, batch in (("x", 32), ("y", 96)):
        assert run([two_maps[0], "-n", 50, "--seed", 9, "--batch-size", batch, "--stack-size", 30, "-o", tmp_path / name]) == 0
    for name in ("particles_00001.mrcs", "particles_00002.mrcs", "particles.star", "simulation.json"):
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes()


def _bad_inputs(tmp_path):
    write_mrc(tmp_path / "flat.mrc", np.zeros((16, 32, 32), np.float32), 1.0)
    with mrcfile.new(tmp_path / "nopx.mrc") as m:  # header voxel size 0
        m.set_data(np.zeros((16, 16, 16), np.float32))
    write_mrc(tmp_path / "ok.mrc", blob_volume(16, 2.0), 1.0)
    (tmp_path / "empty.pdb").write_text("HEADER    NOTHING HERE\nEND\n")
    write_star(tmp_path / "noctf.star", pd.DataFrame({"rlnImageName": ["000001@x.mrcs"], "rlnAngleRot": [1.0],
                                                      "rlnImagePixelSize": [1.0]}))
    return {
        "map not cubic": [tmp_path / "flat.mrc", "-n", 5],
        "pdb without atoms": [tmp_path / "empty.pdb", "-n", 5],
        "pixel size zero": [tmp_path / "ok.mrc", "-n", 5, "--pixel-size", 0],
        "pixel size negative": [tmp_path / "ok.mrc", "-n", 5, "--pixel-size", -1.5],
        "header voxel size 0": [tmp_path / "nopx.mrc", "-n", 5],
        "ctf-from without CTF": [tmp_path / "ok.mrc", "-n", 5, "--ctf-from", tmp_path / "noctf.star"],
        "n zero": [tmp_path / "ok.mrc", "-n", 0],
        "n negative": [tmp_path / "ok.mrc", "-n", -3],
        "missing map": [tmp_path / "nothere.mrc", "-n", 5],
        "weights without states": [tmp_path / "ok.mrc", "-n", 5, "--state-weights", 1, 2],
    }


def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys):
    for what, args in _bad_inputs(tmp_path).items():
        out = tmp_path / "out"
        assert run([*args, "-o", out]) == 2, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("cryolab simulate: error: "), (what, err)
        assert not out.exists(), what
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_help_states_units():
    result = subprocess.run([sys.executable, "-m", "cryolab.cli", "simulate", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    text = result.stdout
    for needle in ("e/Å²", "--pixel-size Å", "--defocus-min-A Å", "--shift-sigma-A Å", "--stage-tilt-deg °", "ROT,TILT"):
        assert needle in text, needle
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["simulate"]
    assert all(a.help for a in sub._actions), [a.dest for a in sub._actions if not a.help]


def test_real_map_and_cryosparc_ctf(tmp_path, shared_data):
    """The 70S ribosome map (65³, odd box, voxel size 0 in its header) with CTFs from cryoSPARC T20S particles."""
    ribosome = shared_data / "maps" / "clean70SRibosome_vol_65p.mrc"
    cs = shared_data / "cryosparc" / "t20s_cryosparc_P9_J209_000_particles.cs"
    if not ribosome.exists() or not cs.exists():
        pytest.skip("shared data files missing")
    out = tmp_path / "ribo"
    assert run([ribosome, "--pixel-size", 5.0, "-n", 40, "--ctf-from", cs, "--snr", 0.1, "--snr-mask-radius-A", 120,
                "-o", out]) == 0
    table = read_star(out / "particles.star")
    assert table["rlnImageSize"].iloc[0] == 65 and table["rlnDefocusU"].between(5000, 40000).all()
    with mrcfile.open(out / "particles_00001.mrcs") as m:
        assert m.data.shape == (40, 65, 65)
