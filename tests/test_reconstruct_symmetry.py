"""Point-group operators (RELION's axes) and symmetric reconstruction from one asymmetric unit of views."""

import math

import pytest
import torch

from cryolab.errors import InputError
from cryolab.projection import project_fourier
from cryolab.reconstruct import backproject_chunk, finalize, symmetry_operators, symmetry_order
from cryolab.rotations import relion_euler_to_matrix
from cryolab.validate import fsc

GROUPS = {**{f"C{n}": n for n in range(1, 8)}, **{f"D{n}": 2 * n for n in range(2, 8)},
          "T": 12, "O": 24, "I": 60, "I1": 60, "I2": 60, "I3": 60, "I4": 60}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("group,order", GROUPS.items())
def test_groups_have_their_order_and_are_closed(group, order):
    ops = symmetry_operators(group, dtype=torch.float64)
    assert ops.shape == (order, 3, 3) and symmetry_order(group) == order
    assert torch.allclose(ops[0], torch.eye(3, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand_as(ops)
    assert torch.allclose(ops @ ops.transpose(-1, -2), eye, atol=1e-9)
    assert torch.allclose(torch.linalg.det(ops), torch.ones(order, dtype=torch.float64))
    products = (ops[:, None] @ ops[None]).reshape(-1, 9)
    distance = torch.cdist(products, ops.reshape(-1, 9)).min(dim=1).values
    assert float(distance.max()) < 1e-6  # every product is in the group
    inverse = torch.cdist(ops.transpose(-1, -2).reshape(-1, 9), ops.reshape(-1, 9)).min(dim=1).values
    assert float(inverse.max()) < 1e-6
    assert float(torch.cdist(ops.reshape(-1, 9), ops.reshape(-1, 9)).add(torch.eye(order) * 9).min()) > 0.1  # distinct


def _has_axis(ops, axis, fold):
    """Whether the group holds the rotation by 360°/fold about ``axis`` (either sense)."""
    u = torch.tensor(axis, dtype=torch.float64)
    u = u / u.norm()
    angle = 2 * math.pi / fold
    k = torch.tensor([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]], dtype=torch.float64)
    r = torch.eye(3, dtype=torch.float64) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    return float((ops - r).abs().amax(dim=(-1, -2)).min()) < 1e-6


@pytest.mark.parametrize("group,axis,fold", [
    ("C4", (0, 0, 1), 4), ("C7", (0, 0, 1), 7), ("D5", (0, 0, 1), 5), ("D5", (1, 0, 0), 2),
    ("T", (0, 0, 1), 3), ("T", (0, 0.816496, 0.577350), 2),
    ("O", (1, 1, 1), 3), ("O", (0, 0, 1), 4), ("O", (1, 0, 0), 4),
    ("I", (0, 0, 1), 2), ("I", (0.525731114, 0, 0.850650807), 5), ("I", (0, 0.356822076, 0.934172364), 3),
    ("I", (1, 0, 0), 2), ("I1", (1, 0, 0), 2), ("I1", (0.85065080702670, 0, -0.5257311142635), 5),
    ("I3", (0, 0, 1), 5), ("I4", (0.8944271932547096, 0, 0.4472135909903704), 5),
])
def test_relion_axis_conventions(group, axis, fold):
    """The generating axes of RELION's src/symmetries.cpp."""
    assert _has_axis(symmetry_operators(group, dtype=torch.float64), axis, fold)


def test_icosahedral_settings_differ():
    """I (= I2) and I1 share the 2-fold axes along x, y, z but not their 5-fold axes."""
    assert not _has_axis(symmetry_operators("I1", dtype=torch.float64), (0.525731114, 0, 0.850650807), 5)
    assert not _has_axis(symmetry_operators("I", dtype=torch.float64), (0.85065080702670, 0, -0.5257311142635), 5)


@pytest.mark.parametrize("bad", ["C0", "C2v", "D3h", "Oh", "I5", "X", "Ci", ""])
def test_unknown_or_improper_groups_raise(bad):
    with pytest.raises(InputError):
        symmetry_operators(bad)


def _c4_volume(n: int, seed: int) -> torch.Tensor:
    """Gaussian blobs at random places and their copies rotated by 90°, 180°, 270° about z."""
    gen = torch.Generator().manual_seed(seed)
    centres = (torch.rand(6, 3, generator=gen) - 0.5) * n * 0.45
    widths = 1.0 + torch.rand(6, generator=gen)
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) - n // 2] * 3, indexing="ij"), -1)
    xyz = coords.flip(-1)  # (z, y, x) index order -> (x, y, z) vectors
    volume = torch.zeros(n, n, n)
    for r in symmetry_operators("C4"):
        for c, w in zip(centres @ r.T, widths):
            volume += torch.exp(-((xyz - c) ** 2).sum(-1) / (2 * w**2))
    return volume


def test_c4_map_from_a_quarter_of_the_views():
    """A C4-symmetric map, views with rot in [0°, 90°) only: reconstructed with C4 it matches."""
    n = 25  # odd: torch.rot90 turns about the centre voxel n // 2
    volume = _c4_volume(n, seed=0)
    assert torch.allclose(volume, torch.rot90(volume, 1, dims=(-1, -2)), atol=1e-4)
    gen = torch.Generator().manual_seed(1)
    m = 300
    euler = torch.stack([90 * torch.rand(m, generator=gen), torch.rad2deg(torch.acos(2 * torch.rand(m, generator=gen) - 1)),
                         360 * torch.rand(m, generator=gen) - 180], dim=-1)
    rot = relion_euler_to_matrix(euler)
    images = project_fourier(volume, rot)
    with_c4 = backproject_chunk(images, rot, symmetry="C4")
    assert fsc(finalize(with_c4), volume)[: n // 3 + 1].min() > 0.99
    # every image went in four times
    plain = backproject_chunk(images, rot)
    assert math.isclose(float(with_c4.weight.sum()), 4 * float(plain.weight.sum()), rel_tol=1e-5)
    # the operators on the wrong side of the pose (R A instead of A R) give a wrong map
    wrong = None
    for r in symmetry_operators("D2"):
        wrong = backproject_chunk(images, r @ rot, out=wrong)
    assert fsc(finalize(wrong), volume)[: n // 3 + 1].min() < 0.9


def test_symmetric_insertion_symmetrises_an_asymmetric_map():
    """Inserting with C4 turns the data of an asymmetric map into its C4 average."""
    n = 21
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) - n // 2] * 3, indexing="ij"), -1)
    blob = torch.exp(-((coords - torch.tensor([2.0, -1.0, 4.0])) ** 2).sum(-1) / 3.0)  # at (z, y, x) = (2, -1, 4)
    from cryolab.rotations import random_rotations

    rot = random_rotations(400, generator=torch.Generator().manual_seed(2))
    sym = finalize(backproject_chunk(project_fourier(blob, rot), rot, symmetry="C4"))
    average = sum(torch.rot90(blob, k, dims=(-1, -2)) for k in range(4)) / 4
    assert fsc(sym, average)[: n // 3].min() > 0.98
    assert fsc(sym, blob)[2 : n // 3].max() < 0.8
