"""cryolab.atoms: reading models, Peng scattering factors, 3D potential and 2D projections.

Physical checks: the integral of a single atom's potential equals h²/(2π m0 e) · f_e(0); the atom
sits on voxel N//2 for even and odd N; voxel values equal the analytic Gaussian sum (sampled) or
its numerical voxel average (integrated); projections equal sums of the 3D map along the
RELION viewing axis; and the map agrees with gemmi's DensityCalculatorE (same Peng / ITC
Table 4.3.2.2 coefficients, gemmi's unit is Å⁻² = our volts / 47.878).
"""

import dataclasses
import gzip
import time

import gemmi
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryolab.atoms import (POTENTIAL_PER_SCATTERING_V_A2, AtomicModel, atoms_to_potential,
                           builtin_model, center_of_mass, choose_box, infer_element,
                           peng_coefficients, project_atoms, read_atoms)
from cryolab.errors import InputError

from cryolab.rotations import relion_euler_to_matrix


def _single_atom(element="C", xyz=(0.0, 0.0, 0.0), b=0.0, occ=1.0):
    return AtomicModel(coords_A=np.array([xyz], dtype=float), elements=[element],
                       bfactors_A2=[b], occupancies=[occ], atom_names=[element],
                       residue_names=["UNK"], residue_ids=[1], chain_ids=["A"])


def _analytic_potential(element, b_total, r2):
    """Peng potential (V) at squared distances r2 (Å²), float64."""
    a, b = peng_coefficients([element])
    bb = b[0] + b_total
    return POTENTIAL_PER_SCATTERING_V_A2 * np.sum(
        a[0] * (4 * np.pi / bb) ** 1.5 * np.exp(-4 * np.pi**2 * r2[..., None] / bb), axis=-1)


@pytest.fixture(scope="module")
def adk():
    return builtin_model("adk_open")


@pytest.fixture(scope="module")
def structures(shared_data):
    return shared_data / "structures"


# ---------------------------------------------------------------- reading


def test_elements_inferred_for_charmm_names(structures):
    m = read_atoms(structures / "adk_open.pdb")
    assert len(m) == 3341
    kinds, counts = np.unique(m.elements, return_counts=True)
    assert dict(zip(kinds, counts)) == {"C": 1040, "H": 1685, "N": 289, "O": 320, "S": 7}
    by_name = dict(zip(m.atom_names, m.elements))
    # the left-aligned names gemmi would read as Ca, Hg, Cd, Ne, Og, Sg
    for name, element in [("CA", "C"), ("HG1", "H"), ("CD", "C"), ("NE", "N"), ("OG", "O"),
                          ("SG", "S"), ("SD", "S"), ("OT1", "O"), ("HT1", "H"), ("NZ", "N")]:
        assert by_name[name] == element, name
    # selections by element see the inferred elements
    sulfur = read_atoms(structures / "adk_open.pdb", selection="[S]")
    assert len(sulfur) == 7 and set(sulfur.atom_names) == {"SD", "SG"}
    assert infer_element("ZN", "ZN") == "Zn" and infer_element("SOD", "SOD") == "Na"
    assert infer_element("1HB", "ALA") == "H" and infer_element("SE", "MSE") == "Se"


def _count_records(path):
    with open(path) as fh:
        return sum(line.startswith(("ATOM", "HETATM")) for line in fh)


def test_pdb_and_mmcif_atom_counts(structures):
    pdb = read_atoms(structures / "pdb1ake.pdb")
    assert len(pdb) == _count_records(structures / "pdb1ake.pdb") == 1661
    assert set(pdb.elements) == {"C", "N", "O", "S"}
    assert set(pdb.chain_ids) == {"A"}
    cif_path = structures / "mmcif_4ake_scipion.cif"
    cif = read_atoms(cif_path)
    assert len(cif) == _count_records(cif_path) == 3459
    assert set(cif.chain_ids) == {"A", "B"}
    dry = read_atoms(cif_path, waters=False)
    assert len(dry) == 3312 and "HOH" not in set(dry.residue_names)
    chain_a = read_atoms(cif_path, selection="/1/A", waters=False)
    assert len(chain_a) == 1656 and set(chain_a.chain_ids) == {"A"}
    # 4AKE chain A heavy atoms = the heavy atoms of the MDAnalysis adk_open model
    heavy = read_atoms(structures / "adk_open.pdb", hydrogens=False)
    assert len(heavy) == 1656 and "H" not in set(heavy.elements)
    assert np.all(chain_a.bfactors_A2 > 0)
    assert np.all((chain_a.occupancies > 0) & (chain_a.occupancies <= 1))
    assert chain_a.residue_ids.min() == 1 and chain_a.residue_ids.max() == 214


def test_no_atoms_is_input_error(tmp_path, structures):
    empty = tmp_path / "empty.pdb"
    empty.write_text("REMARK nothing here\nEND\n")
    with pytest.raises(InputError, match="no atoms"):
        read_atoms(empty)
    with pytest.raises(InputError, match="no atoms"):
        read_atoms(structures / "pdb1ake.pdb", selection="/1/Z")
    with pytest.raises(InputError, match="not found"):
        read_atoms(tmp_path / "missing.pdb")
    with pytest.raises(InputError, match="unknown element"):
        atoms_to_potential(_single_atom("Xx"), 16, 1.0)
    with pytest.raises(InputError, match="B-factor"):
        atoms_to_potential(_single_atom("C", b=-10.0), 16, 1.0)


def test_builtin_models_match_their_source(adk, structures):
    closed = builtin_model("adk_closed")
    assert len(adk) == len(closed) == 3341
    assert np.array_equal(adk.atom_names, closed.atom_names)
    assert np.array_equal(adk.elements, closed.elements)
    rmsd = np.sqrt(((adk.coords_A - center_of_mass(adk).numpy())
                    - (closed.coords_A - center_of_mass(closed).numpy())) ** 2).sum(1).mean()
    assert rmsd > 3.0  # two different conformations
    with gzip.open(adk.source, "rt") as fh:
        header = fh.read(2000)
    assert "4AKE" in header and "CC0" in header and "MDAnalysis" in header
    for model, name in [(adk, "adk_open.pdb"), (closed, "adk_closed.pdb")]:
        src = read_atoms(structures / name)
        np.testing.assert_allclose(model.coords_A, src.coords_A, atol=6e-4)
        np.testing.assert_allclose(model.bfactors_A2, src.bfactors_A2, atol=6e-3)
        assert np.array_equal(model.elements, src.elements)
    with pytest.raises(InputError, match="unknown built-in"):
        builtin_model("ribosome")


def test_peng_coefficients_are_the_published_table():
    # Peng et al. (1996) Table 1, elastic, 0 <= s <= 2 1/Å: carbon and hydrogen.
    a, b = peng_coefficients(["C", "H", "zn"])
    np.testing.assert_allclose(a[0], [0.0893, 0.2563, 0.7570, 1.0487, 0.3575], atol=1e-4)
    np.testing.assert_allclose(b[0], [0.2465, 1.7100, 6.4094, 18.6113, 50.2523], atol=1e-4)
    np.testing.assert_allclose(a[1], [0.0349, 0.1201, 0.1970, 0.0573, 0.1195], atol=1e-4)
    np.testing.assert_allclose(b[1], [0.5347, 3.5867, 12.3471, 18.9525, 38.6269], atol=1e-4)
    assert a[2].sum() > 5.5  # zinc
    assert abs(POTENTIAL_PER_SCATTERING_V_A2 - 47.878) < 1e-3


# ---------------------------------------------------------------- 3D potential


@pytest.mark.parametrize("n", [32, 33])
@pytest.mark.parametrize("method", ["integrated", "sampled"])
def test_single_atom_total_and_centre(n, method):
    px, b = 0.8, 20.0
    atom = _single_atom("S", b=b, occ=0.5)
    v = atoms_to_potential(atom, n, px, method=method).double()
    a, _ = peng_coefficients(["S"])
    total = POTENTIAL_PER_SCATTERING_V_A2 * a.sum() * 0.5  # V·Å³
    # sampling at voxel centres is a Riemann sum, exact to ~exp(-2π²σ²/px²) for the sharpest term
    rel = 2e-4 if method == "integrated" else 1e-3
    assert v.sum().item() * px**3 == pytest.approx(total, rel=rel)
    idx = torch.arange(n, dtype=torch.float64)
    mass = v.sum()
    for axis in range(3):
        profile = v.sum(dim=tuple(d for d in range(3) if d != axis))
        assert (profile * idx).sum().item() / mass.item() == pytest.approx(n // 2, abs=1e-4)
    assert tuple(np.unravel_index(int(v.argmax()), v.shape)) == (n // 2,) * 3
    # a shifted centre: the atom at (x, y, z) = (2, -3, 1) voxels from the middle
    shifted = atoms_to_potential(atom, n, px, center=np.array([-2, 3, -1]) * px, method=method)
    assert torch.allclose(shifted, torch.roll(v.float(), (1, -3, 2), dims=(0, 1, 2)), atol=1e-6)


def test_single_atom_matches_analytic_gaussians():
    n, px, b = 24, 0.9, 15.0
    xyz = np.array([0.31, -0.22, 0.47])  # off-grid
    atom = _single_atom("C", xyz=xyz, b=b)
    grid = (np.arange(n) - n // 2) * px  # voxel centres, Å
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    r2 = (x - xyz[0]) ** 2 + (y - xyz[1]) ** 2 + (z - xyz[2]) ** 2
    expected = _analytic_potential("C", b, r2)
    sampled = atoms_to_potential(atom, n, px, center=False, method="sampled").double().numpy()
    np.testing.assert_allclose(sampled, expected, rtol=1e-4, atol=1e-4 * expected.max())
    # voxel average by 9-point-per-axis Gauss-Legendre quadrature of the analytic potential
    nodes, weights = np.polynomial.legendre.leggauss(9)
    nodes, weights = nodes * px / 2, weights / 2
    avg = np.zeros_like(expected)
    for dz, wz in zip(nodes, weights):
        for dy, wy in zip(nodes, weights):
            dx = nodes[:, None, None, None]
            rr = (x - xyz[0] + dx) ** 2 + (y - xyz[1] + dy) ** 2 + (z - xyz[2] + dz) ** 2
            avg += wz * wy * np.tensordot(weights, _analytic_potential("C", b, rr), axes=1)
    integrated = atoms_to_potential(atom, n, px, center=False).double().numpy()
    np.testing.assert_allclose(integrated, avg, rtol=1e-4, atol=1e-4 * avg.max())
    assert integrated.max() < sampled.max()  # averaging lowers the peak


def test_adk_potential_total_speed_and_box(adk):
    a, _ = peng_coefficients(adk.elements)
    total = POTENTIAL_PER_SCATTERING_V_A2 * (a.sum(1) * adk.occupancies).sum()
    px = 1.5
    n = choose_box(adk, px, padding_A=5.0)
    assert n % 2 == 0
    radius = np.sqrt(((adk.coords_A - center_of_mass(adk).numpy()) ** 2).sum(1)).max()
    assert (n // 2 - 1) * px >= radius + 5.0 > (n // 2 - 2) * px
    start = time.perf_counter()
    v = atoms_to_potential(adk, 64, px)
    elapsed = time.perf_counter() - start
    assert v.shape == (64, 64, 64) and v.dtype == torch.float32
    assert v.min() >= 0
    assert v.double().sum().item() * px**3 == pytest.approx(total, rel=1e-4)
    assert elapsed < 5.0  # typically 0.05 s on one core
    # extra global B-factor spreads the map but keeps its integral
    blurred = atoms_to_potential(adk, 64, px, bfactor_A2=50.0)
    assert blurred.max() < v.max()
    assert blurred.double().sum().item() * px**3 == pytest.approx(total, rel=1e-4)
    # file B-factors are used: zero them and the map sharpens
    sharp = atoms_to_potential(dataclasses.replace(adk, bfactors_A2=np.zeros(len(adk))), 64, px)
    assert sharp.max() > v.max()


# ---------------------------------------------------------------- projections


def test_projection_identity_is_z_sum(adk):
    px = 2.0
    n = choose_box(adk, px, padding_A=6.0)
    vol = atoms_to_potential(adk, n, px)
    proj = project_atoms(adk, torch.eye(3), n, px)
    expected = px * vol.sum(0)
    assert proj.shape == (n, n)
    assert torch.allclose(proj, expected, atol=2e-4 * expected.max().item())
    # sampled: the Riemann sum along z approximates the analytic integral (blur so σ ≳ px/2)
    vol_s = atoms_to_potential(adk, n, px, method="sampled", bfactor_A2=150.0)
    proj_s = project_atoms(adk, torch.eye(3), n, px, method="sampled", bfactor_A2=150.0)
    assert torch.allclose(proj_s, px * vol_s.sum(0), atol=2e-3 * proj_s.max().item())


def test_projection_tilt_90_is_x_sum(adk):
    """RELION: A(0, 90, 0) = Ry(90°): x_view = -z_map, y_view = y_map; the beam runs along x."""
    px = 2.0
    n = choose_box(adk, px, padding_A=6.0)
    c = n // 2
    A = relion_euler_to_matrix(torch.tensor([0.0, 90.0, 0.0]))
    np.testing.assert_allclose(np.asarray(A, dtype=float),
                               [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-6)
    proj = project_atoms(adk, A, n, px).numpy()
    s = px * atoms_to_potential(adk, n, px).sum(2).numpy()  # (z, y): integral along x
    expected = np.zeros((n, n), dtype=np.float32)
    j = np.arange(1, n)
    expected[:, j] = s[2 * c - j, :].T  # image column j <-> x_view = j - c <-> z = c - (j - c)
    np.testing.assert_allclose(proj, expected, atol=2e-4 * expected.max())


def test_projection_general_rotation_and_shift(adk):
    px, n = 2.0, 48
    angles = torch.tensor([[30.0, 60.0, -45.0], [-120.0, 150.0, 10.0]])
    A = relion_euler_to_matrix(angles).double()
    imgs = project_atoms(adk, A, n, px)
    assert imgs.shape == (2, n, n)
    com = center_of_mass(adk).numpy()
    for k in range(2):
        # rotate the atoms into the view frame by hand, then project along z
        rotated = dataclasses.replace(adk, coords_A=(adk.coords_A - com) @ A[k].numpy().T)
        ref = px * atoms_to_potential(rotated, n, px, center=False).sum(0)
        assert torch.allclose(imgs[k], ref, atol=2e-4 * ref.max().item())
    # rlnOriginX/YAngst: image(x) = P(x + origin) -> content moves by -origin
    shifted = project_atoms(adk, A, n, px, shifts_A=torch.tensor([3 * px, -2 * px]))
    assert torch.allclose(shifted, torch.roll(imgs, shifts=(2, -3), dims=(-2, -1)), atol=1e-5)
    # broadcasting of batch shapes
    out = project_atoms(adk, A[:, None], n, px, shifts_A=torch.zeros(3, 2))
    assert out.shape == (2, 3, n, n)
    assert torch.allclose(out[:, 1], imgs, atol=1e-6)


@pytest.mark.parametrize("n", [20, 21])
def test_centred_atom_stays_centred_in_every_projection(n):
    atom = _single_atom("O", xyz=(5.0, -3.0, 2.0), b=30.0)
    rots = torch.tensor(Rotation.random(5, random_state=1).as_matrix())
    imgs = project_atoms(atom, rots, n, 1.0).double()
    idx = torch.arange(n, dtype=torch.float64)
    total = imgs.sum((-2, -1))
    a, _ = peng_coefficients(["O"])
    assert torch.allclose(total, torch.full_like(total, POTENTIAL_PER_SCATTERING_V_A2 * a.sum()),
                          rtol=2e-4)  # V·Å³ per Å² pixel area -> sum = ∫∫ P / px²
    middle = torch.full((5,), n // 2, dtype=torch.float64)
    assert torch.allclose((imgs.sum(-1) * idx).sum(-1) / total, middle, atol=1e-4)  # y
    assert torch.allclose((imgs.sum(-2) * idx).sum(-1) / total, middle, atol=1e-4)  # x


# ---------------------------------------------------------------- agreement with gemmi


def _gemmi_density(model, n, px, blur=0.0):
    """gemmi DensityCalculatorE on an n³ P1 cell of edge n·px, model centre of mass at N//2.

    gemmi samples Σ_i a_i (4π/(b_i+B))^{3/2} exp(-4π² r²/(b_i+B)) at grid points (Å⁻²) with
    the same ITC Table 4.3.2.2 (Peng 1996) coefficients: our volts = 47.878 × gemmi's value.
    Returned in (z, y, x) order, grid point i at (i - N//2)·px from the centre.
    """
    xyz = model.coords_A - center_of_mass(model).numpy() + (n // 2) * px
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(n * px, n * px, n * px, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    gm, ch, res = gemmi.Model(1), gemmi.Chain("A"), gemmi.Residue()
    res.name, res.seqid = "UNK", gemmi.SeqId(1, " ")
    for i in range(len(model)):
        atom = gemmi.Atom()
        atom.name, atom.element = str(model.atom_names[i]), gemmi.Element(str(model.elements[i]))
        atom.pos = gemmi.Position(*xyz[i])
        atom.b_iso, atom.occ = float(model.bfactors_A2[i]), float(model.occupancies[i])
        res.add_atom(atom)
    ch.add_residue(res)
    gm.add_chain(ch)
    st.add_model(gm)
    dc = gemmi.DensityCalculatorE()
    dc.blur = blur
    dc.set_grid_cell_and_spacegroup(st)
    dc.grid.set_size(n, n, n)
    dc.put_model_density_on_grid(st[0])
    return np.array(dc.grid, copy=True).transpose(2, 1, 0)


def _cc(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_agrees_with_gemmi(adk):
    n, px = 64, 1.5
    g = _gemmi_density(adk, n, px)
    # point sampling is the same computation: identical up to truncation and float32
    v = atoms_to_potential(adk, n, px, method="sampled").double().numpy()
    assert _cc(v, g) > 0.99999
    assert (v * g).sum() / (g * g).sum() == pytest.approx(POTENTIAL_PER_SCATTERING_V_A2, rel=2e-4)
    # voxel averages equal gemmi's 3x finer sampling averaged over 3³ blocks (midpoint rule)
    f, blur = 3, 10.0
    fine = _gemmi_density(adk, n * f, px / f, blur=blur)
    fine = np.roll(fine, (f // 2,) * 3, axis=(0, 1, 2)).reshape(n, f, n, f, n, f).mean((1, 3, 5))
    vi = atoms_to_potential(adk, n, px, bfactor_A2=blur).double().numpy()
    assert _cc(vi, fine) > 0.9999
    # and at ~1.5 Å the voxel average and point samples of a blurred map correlate > 0.99
    assert _cc(atoms_to_potential(adk, n, px, bfactor_A2=20.0).numpy(),
               _gemmi_density(adk, n, px, blur=20.0)) > 0.99
