"""`cryolab class2d` end to end on a tiny simulated STAR data set, and its one-line errors."""

import json

import mrcfile
import numpy as np
import pytest
import torch

from cryolab.atoms import atoms_to_potential, builtin_model
from cryolab.cli import main
from cryolab.io import read_star, write_mrc
from cryolab.simulate import GaussianNoise, ParticleParameters, sample_ctf_params, write_dataset

PIXEL_A = 2.5
BOX = 32


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_star(tmp_path_factory):
    """60 ADK particles in two views (random psi, shifts, CTF, SNR 0.05), RELION 3.1 STAR + MRCS."""
    folder = tmp_path_factory.mktemp("class2d_data")
    g = torch.Generator().manual_seed(0)
    n = 60
    views = torch.tensor([[0.0, 90.0], [135.0, 45.0]])
    which = torch.arange(n) % 2
    psi = torch.rand(n, generator=g) * 360 - 180
    shifts = (torch.rand(n, 2, generator=g) * 2 - 1) * 2.5
    ctf = sample_ctf_params(n, defocus_min_A=10000, defocus_max_A=20000, generator=g)
    particles = ParticleParameters(torch.cat([views[which], psi[:, None]], 1), shifts, ctf)
    volume = atoms_to_potential(builtin_model("adk_open"), BOX, PIXEL_A)
    result = write_dataset(volume, particles, folder, PIXEL_A, noise=GaussianNoise(0.05), seed=0, show_progress=False)
    return result.star_path


def test_class2d_writes_relion_files_gallery_and_convergence(tiny_star, tmp_path):
    out = tmp_path / "c2d"
    rc = main(["class2d", str(tiny_star), "--classes", "2", "--iterations", "2", "--psi-step", "30",
               "--offset-range-A", "2.5", "--offset-step-A", "2.5", "--particle-diameter-A", "75",
               "--batch-size", "16", "--threads", "1", "--seed", "1", "--project-dir", str(tiny_star.parent), "-o", str(out)])
    assert rc == 0
    for it in (1, 2):
        with mrcfile.open(out / f"it{it:03d}_classes.mrcs") as mrc:
            assert mrc.data.shape == (2, BOX, BOX)
            assert float(mrc.voxel_size.x) == pytest.approx(PIXEL_A)
            assert np.isfinite(mrc.data).all() and mrc.data.std() > 0
    table = read_star(out / "particles.star")
    source = read_star(tiny_star)
    assert len(table) == 60
    assert set(table["rlnClassNumber"].unique()) <= {1, 2}
    assert table["rlnAnglePsi"].between(-180, 180).all()
    assert (np.hypot(table["rlnOriginXAngst"], table["rlnOriginYAngst"]) <= 2.5 + 1e-6).all()
    assert table["rlnMaxValueProbDistribution"].between(0, 1).all()
    assert np.isfinite(table["rlnLogLikeliContribution"]).all()
    # the input columns survive (image names, CTF, optics)
    assert list(table["rlnImageName"]) == list(source["rlnImageName"])
    assert np.allclose(table["rlnDefocusU"], source["rlnDefocusU"])
    assert float(table["rlnImagePixelSize"].iloc[0]) == pytest.approx(PIXEL_A)
    text = (out / "particles.star").read_text()
    assert "# version 30001" in text and "data_optics" in text
    history = json.loads((out / "history.json").read_text())
    assert [h["iteration"] for h in history["iterations"]] == [1, 2]
    for name in ("classes.png", "convergence.png", "index.html", "run.json"):
        assert (out / name).stat().st_size > 0


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_class2d_bad_inputs_exit_2_with_one_line(tiny_star, tmp_path, capsys):
    rc = main(["class2d", str(tiny_star), "--classes", "100", "--project-dir", str(tiny_star.parent), "-o", str(tmp_path / "a")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "cannot fill 100 classes" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()

    wide = tmp_path / "wide.mrcs"
    write_mrc(wide, np.zeros((4, 16, 18), dtype=np.float32), 2.0)
    assert main(["class2d", str(wide), "--classes", "2", "--no-ctf", "-o", str(tmp_path / "b")]) == 2
    assert "square" in capsys.readouterr().err

    bad = np.random.default_rng(0).normal(size=(6, 16, 16)).astype(np.float32)
    bad[3, 2, 2] = np.nan
    stack = tmp_path / "nan.mrcs"
    write_mrc(stack, bad, 2.0)
    assert main(["class2d", str(stack), "--classes", "2", "--no-ctf", "--iterations", "1", "-o", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "particle 4" in err and "NaN" in err and len(err.splitlines()) == 1

    assert main(["class2d", str(stack), "--classes", "2", "-o", str(tmp_path / "d")]) == 2  # no CTF in a bare stack
    assert "CTF" in capsys.readouterr().err

    assert main(["class2d", str(tiny_star), "--classes", "2", "--threads", "0", "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--threads" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e").exists()
