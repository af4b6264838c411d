"""Normal mode analysis: agreement with ProDy, sparse = dense, the 4AKE → 1AKE change, deformation, bad input."""

import numpy as np
import pytest
import torch

from cryolab.atoms import read_atoms
from cryolab.errors import InputError
from cryolab.nma import (DEFAULT_SELECTION, anm_hessian, anm_modes, bin_amplitudes, check_network, collectivity,
                         conformation_assignment, conformation_maps, conformational_change, cumulative_overlap,
                         displace_along_modes, gnm_kirchhoff, gnm_modes, match_atoms, mode_overlap, mode_trajectory,
                         network_components, node_of_atom, overlap_matrix, project_conformations, replicate_on_lattice,
                         rmsd, sample_mode_amplitudes, smallest_connecting_cutoff, square_fluctuations, superpose,
                         write_multimodel_pdb)

prody = pytest.importorskip("prody")
prody.confProDy(verbosity="none")


@pytest.fixture(scope="module")
def adk(shared_data):
    """Full 4AKE / 1AKE models (same 3341 atoms) and their Cα."""
    path_open = shared_data / "structures" / "adk_open.pdb"
    path_closed = shared_data / "structures" / "adk_closed.pdb"
    return {
        "full": read_atoms(path_open),
        "ca": read_atoms(path_open, selection=DEFAULT_SELECTION),
        "ca_closed": read_atoms(path_closed, selection=DEFAULT_SELECTION),
        "path": path_open,
    }


@pytest.fixture(scope="module")
def prody_anm(adk):
    anm = prody.ANM("4AKE")
    anm.buildHessian(adk["ca"].coords_A, cutoff=15.0, gamma=1.0)
    anm.calcModes(20)
    return anm


@pytest.fixture(scope="module")
def sparse_modes(adk):
    return anm_modes(adk["ca"].coords_A, n_modes=20, method="sparse")


# --------------------------------------------------------------------------------------------
# Agreement with ProDy (4AKE Cα, 214 nodes)


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_anm_matches_prody(adk, prody_anm, method):
    modes = anm_modes(adk["ca"].coords_A, n_modes=20, method=method)
    ref_values = prody_anm.getEigvals()
    assert modes.n_modes == 20 and modes.n_zero_modes == 6
    rel = np.abs(modes.eigenvalues.numpy() - ref_values) / ref_values
    assert rel.max() < 1e-6
    overlaps = overlap_matrix(modes.eigenvectors, prody_anm.getEigvecs()).diagonal()
    assert overlaps.min() >= 0.99


def test_hessian_equals_prody(adk, prody_anm):
    ours = anm_hessian(adk["ca"].coords_A).toarray()
    np.testing.assert_allclose(ours, prody_anm.getHessian(), atol=1e-12)


def test_gnm_matches_prody(adk):
    gnm = prody.GNM("4AKE")
    gnm.buildKirchhoff(adk["ca"].coords_A, cutoff=10.0, gamma=1.0)
    gnm.calcModes(20)
    np.testing.assert_allclose(gnm_kirchhoff(adk["ca"].coords_A).toarray(), gnm.getKirchhoff(), atol=1e-12)
    modes = gnm_modes(adk["ca"].coords_A, n_modes=20)
    assert modes.n_zero_modes == 1
    np.testing.assert_allclose(modes.eigenvalues.numpy(), gnm.getEigvals(), rtol=1e-6)
    assert overlap_matrix(modes.eigenvectors, gnm.getEigvecs()).diagonal().min() >= 0.99
    np.testing.assert_allclose(square_fluctuations(modes).numpy(), prody.calcSqFlucts(gnm), rtol=1e-6)


def test_fluctuations_and_collectivity_match_prody(sparse_modes, prody_anm):
    np.testing.assert_allclose(square_fluctuations(sparse_modes).numpy(), prody.calcSqFlucts(prody_anm), rtol=1e-6)
    np.testing.assert_allclose(collectivity(sparse_modes).numpy(), prody.calcCollectivity(prody_anm), rtol=1e-6)


def test_prody_engine_gives_the_same_modes(adk, sparse_modes):
    modes = anm_modes(adk["ca"].coords_A, n_modes=20, method="prody")
    np.testing.assert_allclose(modes.eigenvalues.numpy(), sparse_modes.eigenvalues.numpy(), rtol=1e-9)
    np.testing.assert_allclose(modes.eigenvectors.numpy(), sparse_modes.eigenvectors.numpy(), atol=1e-7)  # signs fixed


# --------------------------------------------------------------------------------------------
# Sparse path = dense path; network invariants


def test_sparse_equals_dense_on_a_two_copy_assembly(adk):
    # two copies of the first 120 residues (240 nodes): an assembly, small enough for dense eigh
    coords = replicate_on_lattice(adk["ca"].coords_A[:120], 2, gap_A=3.0)
    assert network_components(coords, 15.0)[0] == 1
    sparse = anm_modes(coords, n_modes=12, method="sparse")
    dense = anm_modes(coords, n_modes=12, method="dense")
    assert sparse.n_zero_modes == dense.n_zero_modes == 6
    np.testing.assert_allclose(sparse.eigenvalues.numpy(), dense.eigenvalues.numpy(), rtol=1e-9)
    np.testing.assert_allclose(sparse.eigenvectors.numpy(), dense.eigenvectors.numpy(), atol=1e-7)


def test_hessian_null_space_is_rigid_body_motion(adk):
    x = adk["ca"].coords_A
    h = anm_hessian(x)
    c = x - x.mean(0)
    for axis in np.eye(3):
        translation = np.tile(axis, len(x))
        rotation = np.cross(axis, c).reshape(-1)  # infinitesimal rotation about the centroid
        assert np.abs(h @ translation).max() < 1e-10
        assert np.abs(h @ rotation).max() < 1e-9
    assert abs(h - h.T).max() == 0


def test_two_springs_analytic():
    # three nodes on x, 1 Å apart, cutoff 1.5 Å: two collinear springs. Only stretching along x
    # costs energy: the path-graph Laplacian [[1,-1,0],[-1,2,-1],[0,-1,1]] · γ, eigenvalues γ, 3γ.
    x = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    w = np.linalg.eigvalsh(anm_hessian(x, cutoff_A=1.5, gamma=2.0).toarray())
    np.testing.assert_allclose(np.sort(w)[-2:], [1 * 2.0, 3 * 2.0], atol=1e-12)
    np.testing.assert_allclose(np.sort(w)[:-2], 0, atol=1e-12)


def test_smallest_connecting_cutoff_is_the_longest_mst_edge():
    from scipy.sparse.csgraph import minimum_spanning_tree
    from scipy.spatial.distance import cdist

    x = np.random.default_rng(3).uniform(0, 60, size=(80, 3))
    expected = minimum_spanning_tree(cdist(x, x)).data.max()
    assert smallest_connecting_cutoff(x, start_A=2.0) == pytest.approx(expected)
    assert network_components(x, expected)[0] == 1
    assert network_components(x, expected - 1e-6)[0] > 1


# --------------------------------------------------------------------------------------------
# The observed change 4AKE → 1AKE


def test_superpose_recovers_a_rigid_motion():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)) * 10
    q = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, 0.8, 0.4], dtype=torch.float64), dim=0)
    from cryolab.rotations import quaternion_to_matrix

    r = quaternion_to_matrix(q).to(torch.float64).numpy()
    y = x @ r.T + np.array([1.0, -2.0, 5.0])
    moved, rot, t = superpose(x, y)
    np.testing.assert_allclose(moved.numpy(), y, atol=1e-9)
    np.testing.assert_allclose(rot.numpy(), r, atol=1e-6)


def test_slowest_mode_describes_the_open_to_closed_change(adk, sparse_modes):
    change = conformational_change(adk["ca"].coords_A, adk["ca_closed"].coords_A)
    assert float(rmsd(change, torch.zeros_like(change))) == pytest.approx(6.9, abs=0.1)  # Cα RMSD 4AKE/1AKE
    overlap = mode_overlap(sparse_modes, change).abs()
    cumulative = cumulative_overlap(overlap)
    # ProDy gives 0.786 for mode 1 on this pair (tutorial picture: one hinge mode closes the lid)
    assert 0.75 <= float(overlap[0]) <= 0.82
    assert int(torch.argmax(overlap)) == 0
    assert float(cumulative[-1]) > 0.95
    assert torch.all(cumulative[1:] >= cumulative[:-1])


# --------------------------------------------------------------------------------------------
# Deformation of the full atomic model


def test_every_atom_moves_with_its_residue_and_rmsd_is_the_amplitude(adk, sparse_modes):
    full, ca = adk["full"], adk["ca"]
    nodes = match_atoms(full, ca)
    assert np.array_equal(full.atom_names[nodes], ca.atom_names)
    index = node_of_atom(full, nodes)
    for amplitude in (0.5, 3.0):
        moved = displace_along_modes(full.coords_A, sparse_modes, [amplitude], node_of_atom_index=index,
                                     mode_indices=[0])
        disp = moved.numpy() - full.coords_A
        ca_disp = disp[nodes]
        residue_of_atom = full.residue_ids
        for r in (1, 57, 150, 214):
            atoms = np.flatnonzero(residue_of_atom == r)
            np.testing.assert_allclose(disp[atoms], np.broadcast_to(ca_disp[ca.residue_ids == r], disp[atoms].shape),
                                       atol=1e-12)
        assert float(rmsd(moved, full.coords_A)) == pytest.approx(amplitude, rel=1e-12)
        # the Cα move along the mode's own direction
        direction = sparse_modes.vectors_xyz()[0].numpy()
        cos = (ca_disp * direction).sum() / np.linalg.norm(ca_disp) / np.linalg.norm(direction)
        assert cos == pytest.approx(1.0, abs=1e-12)


def test_trajectory_frames_and_pdb_round_trip(adk, sparse_modes, tmp_path):
    full, ca = adk["full"], adk["ca"]
    index = node_of_atom(full, match_atoms(full, ca))
    frames = mode_trajectory(full.coords_A, sparse_modes, 1, node_of_atom_index=index, amplitude_A=2.0, n_frames=5)
    assert frames.shape == (5, len(full), 3)
    np.testing.assert_allclose(rmsd(frames, full.coords_A).numpy(), [2, 1, 0, 1, 2], atol=1e-12)
    path = write_multimodel_pdb(full, frames, tmp_path / "mode_02.pdb")
    import gemmi

    st = gemmi.read_structure(str(path))
    assert len(st) == 5
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in st[4][0] for a in r])
    np.testing.assert_allclose(xyz, frames[4].numpy(), atol=1e-3)
    names = [a.name for r in st[0][0] for a in r]
    assert names == full.atom_names.tolist()


def test_atoms_without_a_node_follow_the_nearest(adk):
    full = adk["full"]
    ca = np.flatnonzero((full.atom_names == "CA") & (full.residue_ids <= 100))
    index = node_of_atom(full, ca)
    outside = full.residue_ids > 100
    d = ((full.coords_A[outside, None] - full.coords_A[ca][None]) ** 2).sum(-1)
    assert np.array_equal(index[outside], d.argmin(1))


# --------------------------------------------------------------------------------------------
# Ensembles


def test_latent_draws_are_seeded_and_follow_the_distribution():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    a = sample_mode_amplitudes(4000, 2, sigma_A=[1.0, 3.0], generator=g())
    assert torch.equal(a, sample_mode_amplitudes(4000, 2, sigma_A=[1.0, 3.0], generator=g()))
    np.testing.assert_allclose(a.std(0).numpy(), [1.0, 3.0], rtol=0.06)
    m = sample_mode_amplitudes(4000, 1, distribution="mixture", means_A=[-3.0, 3.0], sigma_A=0.5,
                               weights=[1, 3], generator=g())
    assert float((m > 0).double().mean()) == pytest.approx(0.75, abs=0.03)
    with pytest.raises(InputError):
        sample_mode_amplitudes(10, 1, distribution="mixture")


def test_binning_error_is_at_most_half_a_bin():
    a = sample_mode_amplitudes(500, 1, sigma_A=2.0, generator=torch.Generator().manual_seed(1))
    centres, labels = bin_amplitudes(a, 9)
    width = float(a.max() - a.min()) / 9
    assert float((a[:, 0] - centres[labels, 0]).abs().max()) <= width / 2 + 1e-12
    c2, l2 = bin_amplitudes(sample_mode_amplitudes(300, 2, generator=torch.Generator().manual_seed(2)), 5)
    assert c2.shape == (5, 2) and l2.max() == 4


def test_binned_maps_and_per_particle_projection_agree(adk, sparse_modes):
    full, ca = adk["full"], adk["ca"]
    index = node_of_atom(full, match_atoms(full, ca))
    centres = torch.tensor([[-3.0], [3.0]], dtype=torch.float64)
    conf = displace_along_modes(full.coords_A, sparse_modes, centres, node_of_atom_index=index, mode_indices=[0])
    maps = conformation_maps(full, conf, 32, 3.0)
    assert maps.shape == (2, 32, 32, 32)
    # identity view: the projection of each map equals pixel_size * the sum along z (conventions)
    images = project_conformations(full, conf, torch.eye(3).expand(2, 3, 3), 32, 3.0)
    np.testing.assert_allclose(images.numpy(), 3.0 * maps.sum(1).numpy(), rtol=1e-3, atol=1e-3 * float(images.max()))
    # the two ends of mode 1 differ: the lid moves
    assert float((maps[0] - maps[1]).abs().max()) > 0.1 * float(maps.max())
    a = conformation_assignment(torch.tensor([0, 1, 1]))
    assert a.map_indices.tolist() == [[0, 0], [1, 1], [1, 1]] and a.state.tolist() == [0, 1, 1]


# --------------------------------------------------------------------------------------------
# Bad input


def test_fewer_than_three_atoms():
    with pytest.raises(InputError, match="at least 3 atoms"):
        anm_modes(np.zeros((2, 3)) + np.arange(2)[:, None])


def test_disconnected_network_names_the_cutoff_that_connects_it(adk):
    x = replicate_on_lattice(adk["ca"].coords_A, 2, gap_A=20.0)
    need = smallest_connecting_cutoff(x)
    assert need > 15
    with pytest.raises(InputError, match=r"2 disconnected pieces .* smallest cutoff that connects it is (\d+\.\d) Å") as err:
        anm_modes(x, n_modes=5)
    suggested = float(str(err.value).rsplit("is ", 1)[1].split(" Å")[0])
    assert need <= suggested < need + 0.1 + 1e-9
    check_network(x, suggested)  # connects


def test_coincident_atoms_are_rejected():
    x = np.array([[0.0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(InputError, match="identical coordinates"):
        anm_modes(x)


def test_gnm_modes_have_no_direction(adk):
    modes = gnm_modes(adk["ca"].coords_A, n_modes=3)
    with pytest.raises(InputError, match="ANM"):
        modes.vectors_xyz()
