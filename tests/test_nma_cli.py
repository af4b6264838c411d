"""`cryolab nma`: files written, modes match the library, particle ensembles, one-line errors with exit 2."""

import gemmi
import numpy as np
import pytest

from cryolab.cli import main
from cryolab.io import read_star


@pytest.fixture(scope="module")
def adk_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("nma") / "out"
    rc = main(["nma", str(shared_data / "structures" / "adk_open.pdb"), "--second-state",
               str(shared_data / "structures" / "adk_closed.pdb"), "--modes", "10", "--trajectory-modes", "1", "3",
               "--frames", "5", "--amplitude-A", "2", "-o", str(out)])
    assert rc == 0
    return out


def test_outputs(adk_run):
    for name in ("modes.npz", "modes.csv", "fluctuations.png", "overlap.png", "mode_01.pdb", "mode_03.pdb",
                 "index.html", "run.json"):
        assert (adk_run / name).is_file(), name
    assert not (adk_run / "mode_02.pdb").exists()
    with np.load(adk_run / "modes.npz", allow_pickle=False) as z:
        assert z["eigenvalues"].shape == (10,) and z["eigenvectors"].shape == (642, 10)
        assert z["atom_indices"].shape == (214,) and z["coordinates"].shape == (214, 3)
        assert str(z["model"]) == "anm" and float(z["cutoff_A"]) == 15.0
        np.testing.assert_allclose(z["eigenvalues"][:2], [0.0322227, 0.0763283], rtol=1e-5)  # ProDy's values
        assert 0.75 < abs(z["overlap"][0]) < 0.82
        np.testing.assert_allclose(z["cumulative_overlap"], np.sqrt(np.cumsum(z["overlap"] ** 2)))


def test_trajectory_pdb_has_one_model_per_frame(adk_run):
    st = gemmi.read_structure(str(adk_run / "mode_01.pdb"))
    assert len(st) == 5
    assert st[0].count_atom_sites() == 3341


def test_gnm(tmp_path, shared_data):
    out = tmp_path / "gnm"
    assert main(["nma", str(shared_data / "structures" / "adk_open.pdb"), "--model", "gnm", "--modes", "5",
                 "-o", str(out)]) == 0
    with np.load(out / "modes.npz") as z:
        assert z["eigenvectors"].shape == (214, 5) and float(z["cutoff_A"]) == 10.0
    assert not list(out.glob("mode_*.pdb"))


def test_particle_ensemble_is_reproducible(tmp_path):
    args = ["nma", "adk_open", "--modes", "3", "--trajectory-modes", "--simulate-n", "40", "--latent", "mixture",
            "--latent-means-A", "-3", "3", "--latent-sigma-A", "0.5", "--conformations", "4", "--box", "32",
            "--pixel-size", "3", "--snr", "0.5", "--seed", "5"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*args, "-o", str(a)]) == 0
    assert main([*args, "-o", str(b)]) == 0
    table = read_star(a / "particles.star")
    assert len(table) == 40
    amp = table["cryolabMode1AmplitudeAngst"].to_numpy()
    assert (amp < 0).any() and (amp > 0).any() and np.abs(amp).mean() > 2  # two clusters at ±3 Å
    states = table["cryolabState"].to_numpy()
    assert set(states) <= {1, 2, 3, 4}
    # particles of the lowest conformation have the most negative amplitudes
    assert amp[states == states.min()].max() < amp[states == states.max()].min()
    assert len(list((a / "conformations").glob("conformation_*.mrc"))) == len(set(states))  # one map per used bin
    assert (a / "particles_00001.mrcs").read_bytes() == (b / "particles_00001.mrcs").read_bytes()
    assert (a / "particles.star").read_text() == (b / "particles.star").read_text()


def _truncated_pdb(src, dst, n_residues):
    lines = [ln for ln in src.read_text().splitlines() if not ln.startswith("ATOM") or int(ln[22:26]) <= n_residues]
    dst.write_text("\n".join(lines) + "\n")
    return dst


@pytest.mark.parametrize("case", ["mismatch", "disconnected", "too_few", "gnm_second_state"])
def test_bad_input_is_one_line_exit_2_and_no_output(case, tmp_path, shared_data, capsys):
    model = str(shared_data / "structures" / "adk_open.pdb")
    extra = {
        "mismatch": ["--second-state", str(_truncated_pdb(shared_data / "structures" / "adk_closed.pdb",
                                                           tmp_path / "short.pdb", 200))],
        "disconnected": ["--cutoff-A", "3.5"],
        "too_few": ["--selection", "//*/1-2/CA[C]"],
        "gnm_second_state": ["--model", "gnm", "--second-state", model],
    }[case]
    out = tmp_path / "out"
    assert main(["nma", model, *extra, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cryolab nma: error: ")
    assert not out.exists()
    if case == "disconnected":
        assert "smallest cutoff that connects it is 4.0 Å" in err
    if case == "mismatch":
        assert "200 selected atoms vs 214" in err
