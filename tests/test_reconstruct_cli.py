"""`cryolab reconstruct` end to end on a tiny simulated data set, other input formats, bad input."""

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch

import cryolab.cli as cli
from cryolab.atoms import atoms_to_potential, builtin_model
from cryolab.io import (matrix_to_cryosparc_rotvec, read_star, table_to_cryodrgn_ctf, table_to_cryodrgn_poses, write_cryodrgn_ctf,
                        write_cryodrgn_poses, write_mrc, write_star)
from cryolab.simulate import (GaussianNoise, ParticleParameters, sample_ctf_params, sample_shifts, uniform_poses,
                              write_dataset)
from cryolab.rotations import relion_euler_to_matrix
from cryolab.validate import fsc

BOX, PIXEL_A, N = 24, 4.0, 400


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """400 particles of adenylate kinase, 24² at 4 Å/px, CTF, shifts, SNR 0.5; the truth beside."""
    folder = tmp_path_factory.mktemp("sim")
    truth = atoms_to_potential(builtin_model("adk_open"), BOX, PIXEL_A)
    g = torch.Generator().manual_seed(11)
    particles = ParticleParameters(uniform_poses(N, generator=g), sample_shifts(N, max_A=8.0, generator=g),
                                   sample_ctf_params(N, defocus_min_A=6000, defocus_max_A=15000, generator=g))
    result = write_dataset(truth, particles, folder, PIXEL_A, noise=GaussianNoise(snr=0.5), seed=3, show_progress=False)
    return result.star_path, truth


def run(*args):
    return cli.main(["reconstruct", *map(str, args)])


def test_star_end_to_end(dataset, tmp_path, capsys):
    star, truth = dataset
    out = tmp_path / "rec"
    assert run(star, "-o", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["fsc.csv", "fsc.png", "half1.mrc", "half2.mrc",
                                                     "reconstruction.json", "reconstruction.mrc", "run.json"]
    maps = {}
    for name in ("reconstruction", "half1", "half2"):
        with mrcfile.open(out / f"{name}.mrc") as m:
            assert m.data.shape == (BOX,) * 3 and m.voxel_size.x == pytest.approx(PIXEL_A)
            maps[name] = torch.from_numpy(m.data.copy())
    assert fsc(maps["reconstruction"], truth)[: BOX // 4].min() > 0.9
    table = pd.read_csv(out / "fsc.csv")
    assert list(table.columns[:4]) == ["shell", "frequency_per_A", "resolution_A", "fsc"]
    assert len(table) == BOX // 2 + 1
    assert np.allclose(table["fsc"], fsc(maps["half1"], maps["half2"]).numpy(), atol=1e-4)
    summary = json.loads((out / "reconstruction.json").read_text())
    assert summary["particles"]["half1"] == summary["particles"]["half2"] == N // 2
    assert summary["regularisation"] == "ssnr-from-halves" and summary["ctf_corrected"]
    assert 2 * PIXEL_A <= summary["resolution_A_fsc_0.143"] < 20
    assert "half-map FSC" in capsys.readouterr().out


@pytest.mark.parametrize("options", [["--wiener-constant", 0.01, "--symmetry", "C2", "--chunk-size", 37],
                                     ["--relion-gridding", "--interpolation", "nearest"]])
def test_options(dataset, tmp_path, options):
    star, truth = dataset
    out = tmp_path / "rec"
    assert run(star, *options, "-o", out) == 0
    with mrcfile.open(out / "reconstruction.mrc") as m:
        volume = torch.from_numpy(m.data.copy())
    assert fsc(volume, truth)[1 : BOX // 6].min() > 0.5  # C2 is wrong for this map: low shells only
    assert json.loads((out / "run.json").read_text())["command"] == "cryolab reconstruct"


def test_chunk_size_and_workers_do_not_change_the_map(dataset, tmp_path):
    """One thread or several (blocks of the half sets in their own grids, maps finalised side by
    side, the full map's grids from the half maps' or a third pair), any chunk size: the same maps."""
    star, _ = dataset
    maps = []
    for chunk, workers in ((400, 1), (33, 2), (50, 3)):
        out = tmp_path / f"c{chunk}"
        assert run(star, "--chunk-size", chunk, "--workers", workers, "-o", out) == 0
        with mrcfile.open(out / "reconstruction.mrc") as m, mrcfile.open(out / "half2.mrc") as h:
            maps.append((m.data.copy(), h.data.copy()))
    for volume, half2 in maps[1:]:
        assert np.allclose(volume, maps[0][0], atol=1e-4 * np.abs(maps[0][0]).max())
        assert np.allclose(half2, maps[0][1], atol=1e-4 * np.abs(maps[0][1]).max())


def test_mask_and_cryodrgn_pickles(dataset, tmp_path):
    """An .mrcs stack with cryoDRGN pose and CTF pickles gives the STAR file's map; a mask is applied to the FSC."""
    star, truth = dataset
    table = read_star(star)
    rot, trans = table_to_cryodrgn_poses(table)
    poses = write_cryodrgn_poses(tmp_path / "poses.pkl", rot, trans)
    ctf = write_cryodrgn_ctf(tmp_path / "ctf.pkl", table_to_cryodrgn_ctf(table))
    stack = star.parent / "particles_00001.mrcs"
    r = (np.indices((BOX,) * 3) - BOX // 2)
    mask = write_mrc(tmp_path / "mask.mrc", (np.sqrt((r**2).sum(0)) < BOX * 0.4).astype(np.float32), PIXEL_A)
    for name, args in {"star": [star], "pkl": [stack, "--poses", poses, "--ctf", ctf]}.items():
        assert run(*args, "--wiener-constant", 0.01, "--mask", mask, "-o", tmp_path / name) == 0
    maps = [mrcfile.read(tmp_path / name / "reconstruction.mrc") for name in ("star", "pkl")]
    assert np.allclose(maps[0], maps[1], atol=1e-3 * np.abs(maps[0]).max())
    table = pd.read_csv(tmp_path / "pkl" / "fsc.csv")
    assert {"fsc_masked", "fsc_corrected"} <= set(table.columns)
    assert json.loads((tmp_path / "pkl" / "reconstruction.json").read_text())["fsc_curve"] == "corrected masked FSC"


def _write_cryosparc(table, path, image_path):
    """The particles of a RELION table as a cryoSPARC .cs file (the fields read_cryosparc maps)."""
    n = len(table)
    A = relion_euler_to_matrix(torch.tensor(table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()))
    fields = [("blob/path", "S200"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"),
              ("alignments3D/pose", "<f4", (3,)), ("alignments3D/shift", "<f4", (2,)), ("alignments3D/split", "<u4"),
              ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"), ("ctf/accel_kv", "<f4"),
              ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"), ("ctf/phase_shift_rad", "<f4")]
    data = np.zeros(n, dtype=fields)
    data["blob/path"] = f">{image_path}".encode()  # ">" marks an imported file in cryoSPARC
    data["blob/idx"] = [int(name.split("@")[0]) - 1 for name in table["rlnImageName"]]
    data["blob/shape"] = BOX
    data["blob/psize_A"] = PIXEL_A
    data["alignments3D/pose"] = matrix_to_cryosparc_rotvec(A).numpy()
    data["alignments3D/shift"] = table[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy() / PIXEL_A
    data["alignments3D/split"] = table["rlnRandomSubset"].to_numpy() - 1
    data["ctf/df1_A"], data["ctf/df2_A"] = table["rlnDefocusU"], table["rlnDefocusV"]
    data["ctf/df_angle_rad"] = np.radians(table["rlnDefocusAngle"])
    data["ctf/accel_kv"], data["ctf/cs_mm"] = table["rlnVoltage"], table["rlnSphericalAberration"]
    data["ctf/amp_contrast"] = table["rlnAmplitudeContrast"]
    data["ctf/phase_shift_rad"] = np.radians(table["rlnPhaseShift"])
    with open(path, "wb") as f:  # cryoSPARC writes .cs with np.save
        np.save(f, data)
    return path


def test_cryosparc_cs_input_gives_the_star_files_map(dataset, tmp_path):
    star, _ = dataset
    cs = _write_cryosparc(read_star(star), tmp_path / "particles.cs", star.parent / "particles_00001.mrcs")
    for name, source in {"star": star, "cs": cs}.items():
        assert run(source, "-o", tmp_path / name) == 0
    maps = [mrcfile.read(tmp_path / name / "reconstruction.mrc") for name in ("star", "cs")]
    assert np.allclose(maps[0], maps[1], atol=1e-4 * np.abs(maps[0]).max())
    summaries = [json.loads((tmp_path / name / "reconstruction.json").read_text()) for name in ("star", "cs")]
    for half in ("half1", "half2"):
        assert summaries[0]["particles"][half] == summaries[1]["particles"][half] == N // 2
    assert summaries[1]["particles"]["source"].endswith("particles.cs")


def _edit_star(dataset, tmp_path, edit):
    star, _ = dataset
    table = read_star(star)
    table = edit(table)
    path = star.parent / f"edited_{len(list(star.parent.glob('edited_*')))}.star"
    write_star(path, table)
    return path


def _extra_row(table):
    row = table.iloc[[0]].copy()
    row["rlnImageName"] = f"{N + 1:06d}@particles_00001.mrcs"
    return pd.concat([table, row], ignore_index=True)


@pytest.mark.parametrize("case,make,match", [
    ("more particles than images", lambda t: _extra_row(t), "requested"),
    ("box disagrees", lambda t: t.assign(rlnImageSize=BOX + 2), "rlnImageSize"),
    ("no poses", lambda t: t.drop(columns=["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]), "rlnAngle"),
    ("bad half sets", lambda t: t.assign(rlnRandomSubset=3), "rlnRandomSubset"),
])
def test_bad_star_files_fail_in_one_line(dataset, tmp_path, capsys, case, make, match):
    path = _edit_star(dataset, tmp_path, make)
    out = tmp_path / "rec"
    assert run(path, "-o", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cryolab reconstruct: error: ") and match in err
    assert not out.exists()


def test_bad_options_fail_in_one_line(dataset, tmp_path, capsys):
    star, _ = dataset
    wrong_box = write_mrc(tmp_path / "mask.mrc", np.ones((BOX + 2,) * 3, np.float32), PIXEL_A)
    wrong_pixel = write_mrc(tmp_path / "mask2.mrc", np.ones((BOX,) * 3, np.float32), PIXEL_A * 2)
    for args, match in [(["--mask", wrong_box], "shape"), (["--mask", wrong_pixel], "pixel size"),
                        (["--symmetry", "C2v"], "mirror"), (["--symmetry", "Q7"], "unknown symmetry"),
                        (["--chunk-size", 0], "chunk"), (["--pad-factor", 0.5], "pad")]:
        out = tmp_path / "rec"
        assert run(star, *args, "-o", out) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and match in err, (args, err)
        assert not out.exists()
