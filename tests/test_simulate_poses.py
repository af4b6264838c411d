"""cryolab.simulate.poses and .states: SO(3) uniformity, preferred views, tilted stage, shifts, states."""

import math

import pytest
import torch

from cryolab.errors import InputError
from cryolab.rotations import relion_euler_to_matrix, viewing_direction
from cryolab.simulate import (direction_to_rot_tilt, kappa_from_spread_deg,
                              preferred_orientation_poses, rot_tilt_to_direction, sample_discrete_states,
                              sample_latent, sample_micrograph_positions, sample_shifts, sample_von_mises_fisher,
                              stage_tilt_matrix, tilted_stage_poses, trajectory_assignment, uniform_poses)


def gen(k=0):
    return torch.Generator().manual_seed(k)


def test_uniform_poses_are_uniform_on_so3():
    n = 20000
    euler = uniform_poses(n, generator=gen(1))
    assert euler.shape == (n, 3)
    a = relion_euler_to_matrix(euler.double())
    # every column and row of a Haar-random rotation has mean 0 and second moment I/3
    assert float(a.mean(0).abs().max()) < 0.02
    d = viewing_direction(euler.double())
    assert float(torch.linalg.vector_norm(d.mean(0))) < 0.02
    second = (d[:, :, None] * d[:, None, :]).mean(0)
    assert torch.allclose(second, torch.eye(3, dtype=torch.float64) / 3, atol=0.01)
    # tilt = arccos(U(-1, 1)): cos(tilt) uniform; psi uniform
    cos_tilt = torch.cos(torch.deg2rad(euler[:, 1].double()))
    assert float(cos_tilt.mean()) == pytest.approx(0.0, abs=0.02)
    assert float((cos_tilt**2).mean()) == pytest.approx(1 / 3, abs=0.01)
    assert float(euler[:, 2].double().mean()) == pytest.approx(0.0, abs=3.0)
    assert float(euler[:, [0, 2]].abs().max()) <= 180.0


def test_direction_rot_tilt_round_trip():
    rt = torch.tensor([[30.0, 60.0], [-120.0, 150.0], [0.0, 90.0]])
    d = rot_tilt_to_direction(rt)
    assert torch.allclose(d, viewing_direction(rt), atol=1e-6)
    assert torch.allclose(direction_to_rot_tilt(d), rt, atol=1e-4)


def test_von_mises_fisher_mean_resultant_length():
    # E[cos angle to the mean] = coth κ − 1/κ on S² (Fisher, Lewis & Embleton 1987, eq. 4.11)
    mu = torch.tensor([[1.0, 2.0, -0.5]]).expand(20000, 3)
    for kappa in (0.0, 2.0, 20.0):
        d = sample_von_mises_fisher(mu, kappa, generator=gen(2))
        assert torch.allclose(torch.linalg.vector_norm(d, dim=-1), torch.ones(20000), atol=1e-5)
        w = (d.double() @ (mu[0] / mu[0].norm()).double())
        expected = 0.0 if kappa == 0 else 1 / math.tanh(kappa) - 1 / kappa
        assert float(w.mean()) == pytest.approx(expected, abs=0.015)


def test_preferred_orientation_is_concentrated_about_the_view():
    n, spread = 20000, 5.0
    euler = preferred_orientation_poses(n, [[30.0, 60.0]], spread_deg=spread, generator=gen(3))
    d = viewing_direction(euler.double())
    mu = rot_tilt_to_direction(torch.tensor([30.0, 60.0])).double()
    angle = torch.rad2deg(torch.acos(torch.clamp(d @ mu, -1, 1)))
    # small-spread limit: the angle is Rayleigh(σ): mean σ√(π/2), RMS σ√2
    assert float(angle.mean()) == pytest.approx(spread * math.sqrt(math.pi / 2), rel=0.03)
    assert float(angle.pow(2).mean().sqrt()) == pytest.approx(spread * math.sqrt(2), rel=0.03)
    # psi stays uniform
    assert float(torch.cos(torch.deg2rad(euler[:, 2].double())).mean()) == pytest.approx(0.0, abs=0.02)
    assert kappa_from_spread_deg(spread) == pytest.approx(1 / math.radians(spread) ** 2)


def test_preferred_orientation_with_two_weighted_views():
    n = 10000
    views = [[0.0, 0.0], [0.0, 90.0]]  # top view (+z) and side view (+x)
    euler = preferred_orientation_poses(n, views, kappa=500.0, weights=[3, 1], generator=gen(4))
    d = viewing_direction(euler.double())
    top = d[:, 2] > 0.9
    side = d[:, 0] > 0.9
    assert bool((top | side).all())
    assert float(top.double().mean()) == pytest.approx(0.75, abs=0.02)
    with pytest.raises(InputError):
        preferred_orientation_poses(10, views, kappa=5.0, spread_deg=3.0)
    with pytest.raises(InputError):
        preferred_orientation_poses(10, views, kappa=5.0, weights=[1.0])


def test_tilted_stage_geometry():
    alpha, phi = 30.0, 20.0
    r = stage_tilt_matrix(alpha, phi).double()
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    u = torch.tensor([math.cos(math.radians(phi)), math.sin(math.radians(phi)), 0.0], dtype=torch.float64)
    assert torch.allclose(r @ u, u, atol=1e-12)  # the tilt axis stays put
    # specimen-plane points: their projected position gives the defocus offset = their height
    specimen = torch.cat([torch.rand(50, 2, generator=gen(5), dtype=torch.float64) * 4000 - 2000,
                          torch.zeros(50, 1, dtype=torch.float64)], dim=1)
    view = specimen @ r.T
    euler = torch.zeros(50, 3)
    _, offset = tilted_stage_poses(euler, view[:, :2], stage_tilt_deg=alpha, tilt_axis_deg=phi)
    assert torch.allclose(offset.double(), view[:, 2], rtol=1e-5, atol=1e-2)
    on_axis = torch.tensor([[1000 * u[0].item(), 1000 * u[1].item()]])
    assert abs(float(tilted_stage_poses(torch.zeros(1, 3), on_axis, stage_tilt_deg=alpha, tilt_axis_deg=phi)[1])) < 1e-3


def test_tilted_stage_spreads_a_top_view_onto_a_cone():
    n, alpha = 2000, 40.0
    top = preferred_orientation_poses(n, [[0.0, 0.0]], kappa=1e7, generator=gen(6))  # tilt ≈ 0, psi uniform
    pos = sample_micrograph_positions(n, micrograph_size_A=3000.0, generator=gen(7))
    assert float(pos.abs().max()) <= 1500.0
    euler, _ = tilted_stage_poses(top, pos, stage_tilt_deg=alpha, tilt_axis_deg=0.0)
    assert torch.allclose(euler[:, 1], torch.full((n,), alpha), atol=0.1)  # every view is tilted by α
    a = relion_euler_to_matrix(euler.double())
    expected = stage_tilt_matrix(alpha) @ relion_euler_to_matrix(top.double())
    assert torch.allclose(a, expected, atol=1e-5)
    with pytest.raises(InputError):
        tilted_stage_poses(top, pos, stage_tilt_deg=95.0)


def test_shifts():
    s = sample_shifts(20000, sigma_A=3.0, generator=gen(8))
    assert s.shape == (20000, 2)
    assert float(s.std()) == pytest.approx(3.0, rel=0.02) and float(s.mean()) == pytest.approx(0.0, abs=0.05)
    u = sample_shifts(20000, max_A=5.0, generator=gen(9))
    assert float(u.abs().max()) <= 5.0 and float(u.var()) == pytest.approx(25 / 3, rel=0.03)
    assert torch.all(sample_shifts(4) == 0)
    with pytest.raises(InputError):
        sample_shifts(4, sigma_A=1.0, max_A=1.0)
    with pytest.raises(InputError):
        sample_shifts(0, sigma_A=1.0)


def test_discrete_states_follow_the_weights():
    a = sample_discrete_states(20000, [1.0, 3.0], generator=gen(10))
    assert float((a.state == 1).double().mean()) == pytest.approx(0.75, abs=0.015)
    assert torch.equal(a.map_indices[:, 0], a.state) and torch.all(a.map_weights[:, 0] == 1)
    with pytest.raises(InputError):
        sample_discrete_states(10, [1.0, -1.0])


def test_latent_clusters_and_trajectory_assignment():
    z = sample_latent(20000, means=[0.25, 0.75], sigmas=[0.05, 0.05], weights=[1, 1], generator=gen(11))
    assert float(z.min()) >= 0 and float(z.max()) <= 1
    low = z < 0.5
    assert float(low.double().mean()) == pytest.approx(0.5, abs=0.015)
    assert float(z[low].mean()) == pytest.approx(0.25, abs=0.005)
    assert float(z[low].std()) == pytest.approx(0.05, rel=0.05)
    edge = sample_latent(5000, means=[0.0], sigmas=[0.2], generator=gen(12))  # truncated, not clipped
    assert float((edge == 0).double().mean()) < 0.01 and float(edge.min()) >= 0

    lat = torch.tensor([0.0, 0.3, 0.5, 0.74, 1.0])
    near = trajectory_assignment(lat, 3)
    assert near.state.tolist() == [0, 1, 1, 1, 2]
    lin = trajectory_assignment(lat, 3, interpolation="linear")
    assert torch.allclose(lin.map_weights.sum(-1), torch.ones(5))
    assert lin.map_indices.tolist() == [[0, 1], [0, 1], [1, 2], [1, 2], [1, 2]]
    assert torch.allclose(lin.map_weights[:, 1], torch.tensor([0.0, 0.6, 0.0, 0.48, 1.0]), atol=1e-6)
    with pytest.raises(InputError):
        trajectory_assignment(lat, 1)
