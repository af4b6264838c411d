"""Tests for cryolab.rotations: RELION Euler convention, representations, sampling and grids."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.transform import Rotation

from cryolab.errors import InputError
from cryolab.rotations import (
    axis_angle_to_matrix,
    canonical_quaternion_sign,
    geodesic_distance_deg,
    healpix_order_for_step,
    inplane_angles,
    inplane_rotation_matrix,
    inplane_rotations,
    matrix_to_quaternion,
    matrix_to_relion_euler,
    matrix_to_rotvec,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_rotate_points,
    quaternion_to_matrix,
    random_quaternions,
    random_relion_euler,
    random_rotations,
    relion_euler_to_matrix,
    rotate_points,
    rotvec_to_matrix,
    so3_grid,
    so3_grid_euler,
    viewing_direction,
)

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _euler_samples(n=500, seed=0):
    """Random angles plus the special values a convention bug would show at."""
    special = torch.tensor(
        [[0, 0, 0], [90, 0, 0], [0, 90, 0], [0, 0, 90], [30, 60, 45], [-150, 120, 170],
         [180, 90, -90], [45, 180, 10], [10, 0, 20], [0, 45, 180]],
        dtype=F64,
    )
    return torch.cat([special, random_relion_euler(n, generator=_gen(seed), dtype=F64)])


def _elementary_rz(t):
    c, s = math.cos(math.radians(t)), math.sin(math.radians(t))
    return torch.tensor([[c, s, 0], [-s, c, 0], [0, 0, 1]], dtype=F64)


def _elementary_ry(t):
    c, s = math.cos(math.radians(t)), math.sin(math.radians(t))
    return torch.tensor([[c, 0, -s], [0, 1, 0], [s, 0, c]], dtype=F64)


def _assert_rotation_matrices(m, atol):
    eye = torch.eye(3, dtype=m.dtype).expand_as(m)
    torch.testing.assert_close(m @ m.transpose(-1, -2), eye, atol=atol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(m.shape[:-2], dtype=m.dtype), atol=atol, rtol=0)


# ---------------------------------------------------------------- Euler convention


def test_euler_matrix_is_product_of_relion_elementary_rotations():
    for rot, tilt, psi in [(10.0, 20.0, 30.0), (-120.0, 150.0, 75.0), (200.0, -30.0, 400.0)]:
        expected = _elementary_rz(psi) @ _elementary_ry(tilt) @ _elementary_rz(rot)
        got = relion_euler_to_matrix(torch.tensor([rot, tilt, psi], dtype=F64))
        torch.testing.assert_close(got, expected, atol=1e-14, rtol=0)


def test_euler_matrix_equals_scipy_zyz_transposed():
    angles = _euler_samples()
    expected = Rotation.from_euler("ZYZ", angles.numpy(), degrees=True).as_matrix().transpose(0, 2, 1)
    got = relion_euler_to_matrix(angles)
    assert got.dtype == F64
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-14)


def test_viewing_direction_is_transpose_times_ez():
    angles = _euler_samples()
    a = relion_euler_to_matrix(angles)
    rot, tilt = torch.deg2rad(angles[:, 0]), torch.deg2rad(angles[:, 1])
    expected = torch.stack([torch.cos(rot) * torch.sin(tilt), torch.sin(rot) * torch.sin(tilt), torch.cos(tilt)], -1)
    torch.testing.assert_close(a.transpose(-1, -2)[..., :, 2], expected, atol=1e-14, rtol=0)
    torch.testing.assert_close(viewing_direction(angles), expected, atol=1e-14, rtol=0)
    # psi does not change the viewing direction
    torch.testing.assert_close(viewing_direction(angles[:, :2]), expected, atol=1e-14, rtol=0)


def test_euler_round_trip_random_angles_float64_and_float32():
    angles = random_relion_euler(2000, generator=_gen(1), dtype=F64)
    back = matrix_to_relion_euler(relion_euler_to_matrix(angles))
    torch.testing.assert_close(back, angles, atol=1e-9, rtol=0)
    a32 = relion_euler_to_matrix(angles.float())
    assert a32.dtype == torch.float32
    back32 = matrix_to_relion_euler(a32)
    assert back32.dtype == torch.float32
    # float32 angles are ill conditioned only near gimbal lock; compare the rotations
    assert geodesic_distance_deg(relion_euler_to_matrix(back32.double()), a32.double()).max() < 1e-3


def test_euler_ranges_after_conversion():
    angles = torch.tensor([[370.0, -30.0, -190.0], [-180.0, 200.0, 180.0], [540.0, 90.0, -540.0]], dtype=F64)
    back = matrix_to_relion_euler(relion_euler_to_matrix(angles))
    assert ((back[:, 1] >= 0) & (back[:, 1] <= 180)).all()
    assert ((back[:, [0, 2]] > -180) & (back[:, [0, 2]] <= 180)).all()
    torch.testing.assert_close(relion_euler_to_matrix(back), relion_euler_to_matrix(angles), atol=1e-14, rtol=0)
    # a negative tilt is the same rotation as (rot + 180, -tilt, psi + 180)
    torch.testing.assert_close(back[0], torch.tensor([-170.0, 30.0, -10.0], dtype=F64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gimbal_lock_tilt_0_puts_in_plane_angle_in_psi(dtype):
    rot = torch.tensor([10.0, -100.0, 170.0, 0.0, 135.0], dtype=dtype)
    psi = torch.tensor([20.0, 30.0, 50.0, -60.0, 45.0], dtype=dtype)
    angles = torch.stack([rot, torch.zeros_like(rot), psi], -1)
    back = matrix_to_relion_euler(relion_euler_to_matrix(angles))
    atol = 1e-4 if dtype == torch.float32 else 1e-10
    assert (back[:, 0] == 0).all() and (back[:, 1] == 0).all()
    expected_psi = torch.tensor([30.0, -70.0, -140.0, -60.0, 180.0], dtype=dtype)
    torch.testing.assert_close(back[:, 2], expected_psi, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gimbal_lock_tilt_180_puts_psi_minus_rot_in_psi(dtype):
    rot = torch.tensor([10.0, -100.0, 170.0, 0.0], dtype=dtype)
    psi = torch.tensor([20.0, 30.0, -50.0, -60.0], dtype=dtype)
    angles = torch.stack([rot, torch.full_like(rot, 180.0), psi], -1)
    a = relion_euler_to_matrix(angles)
    back = matrix_to_relion_euler(a)
    atol = 1e-4 if dtype == torch.float32 else 1e-10
    assert (back[:, 0] == 0).all()
    torch.testing.assert_close(back[:, 1], torch.full_like(rot, 180.0), atol=0, rtol=0)
    torch.testing.assert_close(back[:, 2], torch.tensor([10.0, 130.0, 140.0, -60.0], dtype=dtype), atol=atol, rtol=0)
    torch.testing.assert_close(relion_euler_to_matrix(back), a, atol=10 * atol, rtol=0)


@pytest.mark.parametrize("tilt", [1e-5, 1e-3, 0.1, 179.9, 179.999])
def test_near_gimbal_lock_round_trip_is_accurate(tilt):
    angles = random_relion_euler(300, generator=_gen(2), dtype=F64)
    angles[:, 1] = tilt
    a = relion_euler_to_matrix(angles)
    back = matrix_to_relion_euler(a)
    torch.testing.assert_close(relion_euler_to_matrix(back), a, atol=1e-13, rtol=0)
    a32 = a.float()
    back32 = relion_euler_to_matrix(matrix_to_relion_euler(a32))
    assert (back32 - a32).abs().max() < 5e-6


# ---------------------------------------------------------------- quaternions


def test_quaternion_round_trip_and_canonical_sign():
    a = relion_euler_to_matrix(_euler_samples())
    q = matrix_to_quaternion(a)
    assert q.shape == (a.shape[0], 4)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(torch.linalg.vector_norm(q, dim=-1), torch.ones(len(q), dtype=F64))
    torch.testing.assert_close(quaternion_to_matrix(q), a, atol=1e-14, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(-q), a, atol=1e-14, rtol=0)


def test_quaternion_agrees_with_scipy_scalar_last():
    a = relion_euler_to_matrix(_euler_samples(300, seed=3))
    scipy_q = Rotation.from_matrix(a.numpy()).as_quat(canonical=True)[:, [3, 0, 1, 2]]  # was (x, y, z, w)
    q = matrix_to_quaternion(a).numpy()
    # identical, except that for half turns (w = 0 up to rounding) the sign may differ
    half_turn = np.abs(scipy_q[:, 0]) < 1e-12
    assert half_turn.sum() <= 2  # the special angles contain a few
    np.testing.assert_allclose(q[~half_turn], scipy_q[~half_turn], atol=1e-14)
    np.testing.assert_allclose(np.abs(q[half_turn]), np.abs(scipy_q[half_turn]), atol=1e-14)
    q = random_quaternions(200, generator=_gen(4), dtype=F64)
    expected = Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy()).as_matrix()
    np.testing.assert_allclose(quaternion_to_matrix(q).numpy(), expected, atol=1e-14)


def test_quaternion_of_half_turns_is_stable():
    # 180° rotations: w = 0, where trace-based formulas divide by zero
    axes = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -2, 3], [0, -1, 1]], dtype=F64)
    axes = axes / torch.linalg.vector_norm(axes, dim=-1, keepdim=True)
    m = axis_angle_to_matrix(axes, torch.full((len(axes),), 180.0, dtype=F64))
    q = matrix_to_quaternion(m)
    torch.testing.assert_close(q[:, 0], torch.zeros(len(axes), dtype=F64), atol=1e-15, rtol=0)
    sign = torch.sign(axes[torch.arange(len(axes)), (axes != 0).int().argmax(-1)])
    torch.testing.assert_close(q[:, 1:], axes * sign[:, None], atol=1e-15, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(q), m, atol=1e-15, rtol=0)


def test_quaternion_product_is_matrix_product():
    q1 = random_quaternions(300, generator=_gen(5), dtype=F64)
    q2 = random_quaternions(300, generator=_gen(6), dtype=F64)
    product = quaternion_multiply(q1, q2)
    torch.testing.assert_close(
        quaternion_to_matrix(product), quaternion_to_matrix(q1) @ quaternion_to_matrix(q2), atol=1e-14, rtol=0
    )
    # conjugate is the inverse; identity quaternion is neutral; broadcasting
    identity = torch.tensor([1.0, 0, 0, 0], dtype=F64)
    torch.testing.assert_close(
        quaternion_multiply(q1, quaternion_conjugate(q1)), identity.expand(300, 4), atol=1e-15, rtol=0
    )
    torch.testing.assert_close(quaternion_multiply(identity, q2), q2)
    inverse = quaternion_to_matrix(q1).transpose(-1, -2)
    torch.testing.assert_close(quaternion_to_matrix(quaternion_conjugate(q1)), inverse)
    assert quaternion_multiply(q1[:4, None], q2[None, :5]).shape == (4, 5, 4)


def test_canonical_sign():
    q = torch.tensor(
        [[-0.5, 0.5, 0.5, 0.5], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0], [0.6, -0.8, 0, 0]], dtype=F64
    )
    expected = torch.tensor(
        [[0.5, -0.5, -0.5, -0.5], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.6, -0.8, 0, 0]], dtype=F64
    )
    torch.testing.assert_close(canonical_quaternion_sign(q), expected)


# ---------------------------------------------------------------- rotation vectors


def test_rotvec_agrees_with_scipy_including_large_and_tiny_angles():
    g = _gen(7)
    directions = torch.randn(400, 3, generator=g, dtype=F64)
    directions /= torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
    large = torch.rand(300, generator=g, dtype=F64) * 2 * math.pi
    angles = torch.cat([large, torch.logspace(-12, -2, 100, dtype=F64)])
    rotvec = directions * angles[:, None]
    expected = Rotation.from_rotvec(rotvec.numpy()).as_matrix()
    np.testing.assert_allclose(rotvec_to_matrix(rotvec).numpy(), expected, atol=1e-14)
    torch.testing.assert_close(rotvec_to_matrix(torch.zeros(3, dtype=F64)), torch.eye(3, dtype=F64))


def test_matrix_to_rotvec_agrees_with_scipy_and_round_trips():
    a = relion_euler_to_matrix(_euler_samples(400, seed=8))
    v = matrix_to_rotvec(a)
    assert (torch.linalg.vector_norm(v, dim=-1) <= math.pi + 1e-12).all()
    scipy_v = Rotation.from_matrix(a.numpy()).as_rotvec()
    half_turn = np.abs(np.linalg.norm(scipy_v, axis=-1) - np.pi) < 1e-9  # v and -v are the same rotation
    np.testing.assert_allclose(v.numpy()[~half_turn], scipy_v[~half_turn], atol=1e-12)
    np.testing.assert_allclose(np.abs(v.numpy()[half_turn]), np.abs(scipy_v[half_turn]), atol=1e-12)
    torch.testing.assert_close(rotvec_to_matrix(v), a, atol=1e-14, rtol=0)


def test_rotvec_small_angles_keep_relative_precision():
    v = torch.tensor([[1e-9, -2e-9, 3e-9], [1e-5, 0, 0], [0, 0, -1e-3]], dtype=F64)
    back = matrix_to_rotvec(rotvec_to_matrix(v))
    torch.testing.assert_close(back, v, atol=1e-22, rtol=1e-6)
    torch.testing.assert_close(matrix_to_rotvec(torch.eye(3, dtype=F64)), torch.zeros(3, dtype=F64))


def test_rotvec_at_angle_pi_round_trips_up_to_sign():
    g = _gen(9)
    axes = torch.randn(50, 3, generator=g, dtype=F64)
    axes /= torch.linalg.vector_norm(axes, dim=-1, keepdim=True)
    for angle in (math.pi, math.pi - 1e-7):
        v = axes * angle
        m = rotvec_to_matrix(v)
        back = matrix_to_rotvec(m)
        torch.testing.assert_close(rotvec_to_matrix(back), m, atol=1e-13, rtol=0)
        same = (back - v).abs().amax(-1) < 1e-6
        flipped = (back + v).abs().amax(-1) < 1e-6
        assert (same | flipped).all()
        if angle == math.pi:  # the representative has its first non-zero component positive
            assert (back[:, 0] > 0).all()
        else:
            assert same.all()


def test_rotvec_gradient_is_finite_at_zero():
    v = torch.zeros(3, dtype=F64, requires_grad=True)
    rotvec_to_matrix(v).sum().backward()
    assert torch.isfinite(v.grad).all()
    # d/dv of exp([v]x) at 0 is the generator: sum over entries of [e_i]x is 0 for each i
    torch.testing.assert_close(v.grad, torch.zeros(3, dtype=F64))


def test_axis_angle_right_hand_rule_and_relion_rz():
    rz90 = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 2.0], dtype=F64), torch.tensor(90.0, dtype=F64))
    torch.testing.assert_close(rz90 @ torch.tensor([1.0, 0, 0], dtype=F64), torch.tensor([0.0, 1.0, 0], dtype=F64))
    # RELION's elementary rotations are passive: Rz(t) = axis_angle(e_z, -t)
    rz = axis_angle_to_matrix([0.0, 0.0, 1.0], 30.0).double()
    ry = axis_angle_to_matrix([0.0, 1.0, 0.0], 30.0).double()
    torch.testing.assert_close(rz, _elementary_rz(-30.0), atol=1e-7, rtol=0)
    torch.testing.assert_close(ry, _elementary_ry(-30.0), atol=1e-7, rtol=0)
    # broadcasting of axis and angle
    m = axis_angle_to_matrix(torch.tensor([[1.0, 0, 0], [0, 1, 0]]), torch.tensor([[10.0], [20.0], [30.0]]))
    assert m.shape == (3, 2, 3, 3)
    with pytest.raises(InputError):
        axis_angle_to_matrix([0.0, 0.0, 0.0], 10.0)


# ---------------------------------------------------------------- applying rotations and distances


def test_rotate_points_and_quaternion_rotate_points_agree():
    g = _gen(10)
    q = random_quaternions(6, generator=g, dtype=F64)
    points = torch.randn(6, 20, 3, generator=g, dtype=F64)
    m = quaternion_to_matrix(q)
    expected = torch.einsum("bij,bnj->bni", m, points)
    torch.testing.assert_close(rotate_points(points, m), expected)
    torch.testing.assert_close(quaternion_rotate_points(points, q), expected)
    # one rotation for many point sets, and many rotations of one point set
    assert rotate_points(points, m[0]).shape == (6, 20, 3)
    assert quaternion_rotate_points(points[0], q).shape == (6, 20, 3)
    torch.testing.assert_close(quaternion_rotate_points(points[0], q)[3], points[0] @ m[3].T)
    with pytest.raises(InputError):
        quaternion_rotate_points(q, points)  # arguments swapped: q has last dim 4


def test_all_constructed_matrices_are_rotations():
    _assert_rotation_matrices(relion_euler_to_matrix(_euler_samples()), 1e-13)
    _assert_rotation_matrices(random_rotations(500, generator=_gen(11)), 1e-5)
    _assert_rotation_matrices(rotvec_to_matrix(torch.randn(100, 3, generator=_gen(12)) * 3), 1e-5)
    _assert_rotation_matrices(so3_grid(30.0, method="hopf"), 1e-5)
    m2 = inplane_rotations(10.0, dtype=F64)
    torch.testing.assert_close(m2 @ m2.transpose(-1, -2), torch.eye(2, dtype=F64).expand_as(m2))


def test_geodesic_distance_known_angles_and_symmetry():
    g = _gen(13)
    a = random_rotations(100, generator=g, dtype=F64)
    axes = torch.randn(100, 3, generator=g, dtype=F64)
    special = torch.tensor([0.0, 1e-6, 1e-3, 90.0, 179.999, 180.0], dtype=F64)
    angles = torch.cat([special, torch.rand(94, generator=g, dtype=F64) * 180])
    b = a @ axis_angle_to_matrix(axes, angles)
    d = geodesic_distance_deg(a, b)
    torch.testing.assert_close(d, angles, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(geodesic_distance_deg(b, a), d)
    # aᵀb and abᵀ have the same angle
    d_transposed = geodesic_distance_deg(a.transpose(-1, -2), b.transpose(-1, -2))
    torch.testing.assert_close(d_transposed, d, atol=1e-9, rtol=1e-7)
    assert geodesic_distance_deg(a[:3, None], a[None, :4]).shape == (3, 4)


# ---------------------------------------------------------------- random rotations


def test_random_rotations_are_reproducible():
    torch.testing.assert_close(random_rotations(10, generator=_gen(42)), random_rotations(10, generator=_gen(42)))
    assert not torch.equal(random_rotations(10, generator=_gen(42)), random_rotations(10, generator=_gen(43)))
    torch.testing.assert_close(random_relion_euler(10, generator=_gen(1)), random_relion_euler(10, generator=_gen(1)))
    assert random_rotations(4).dtype == torch.float32
    assert random_rotations(4, dtype=F64).dtype == F64


def _rotation_angle_cdf(theta):
    # Haar measure on SO(3): density (1 - cos θ) / π on [0, π]
    return (theta - np.sin(theta)) / np.pi


@pytest.mark.parametrize("sampler", ["quaternions", "euler"])
def test_random_rotations_are_uniform(sampler):
    n = 20000
    if sampler == "quaternions":
        m = random_rotations(n, generator=_gen(0), dtype=F64)
    else:
        m = relion_euler_to_matrix(random_relion_euler(n, generator=_gen(0), dtype=F64))
    theta = torch.deg2rad(geodesic_distance_deg(torch.eye(3, dtype=F64), m)).numpy()
    assert stats.kstest(theta, _rotation_angle_cdf).pvalue > 0.01
    # rotated unit vectors are uniform on the sphere: mean ~ 0, each component uniform on [-1, 1]
    for column in range(3):
        v = m[:, :, column]
        assert torch.linalg.vector_norm(v.mean(0)) < 4 / math.sqrt(n)
        assert stats.kstest(v[:, 2].numpy(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 0.01
    # a uniform distribution is invariant: left-multiplying by a fixed rotation keeps the KS test happy
    fixed = relion_euler_to_matrix(torch.tensor([30.0, 70.0, -20.0], dtype=F64))
    theta_shifted = torch.deg2rad(geodesic_distance_deg(torch.eye(3, dtype=F64), fixed @ m)).numpy()
    assert stats.kstest(theta_shifted, _rotation_angle_cdf).pvalue > 0.01


def test_random_relion_euler_ranges_and_tilt_distribution():
    angles = random_relion_euler(20000, generator=_gen(14), dtype=F64)
    assert ((angles[:, [0, 2]] > -180) & (angles[:, [0, 2]] <= 180)).all()
    assert ((angles[:, 1] >= 0) & (angles[:, 1] <= 180)).all()
    cos_tilt = torch.cos(torch.deg2rad(angles[:, 1])).numpy()
    assert stats.kstest(cos_tilt, stats.uniform(loc=-1, scale=2).cdf).pvalue > 0.01


# ---------------------------------------------------------------- grids


def test_healpix_order_follows_relion_sampling_menu():
    menu = {60: 0, 30: 1, 15: 2, 7.5: 3, 3.7: 4, 1.8: 5, 0.9: 6, 0.5: 7, 0.2: 8, 0.1: 9, 90: 0}
    for step, order in menu.items():
        assert healpix_order_for_step(step) == order
    with pytest.raises(InputError):
        healpix_order_for_step(0)


@pytest.mark.parametrize("method", ["healpix", "hopf"])
def test_grid_sizes_and_consistency(method):
    for step, order in [(60, 0), (30, 1), (15, 2)]:
        euler = so3_grid_euler(step, method=method, dtype=F64)
        assert euler.shape == (72 * 8**order, 3)
        assert ((euler[:, [0, 2]] > -180) & (euler[:, [0, 2]] <= 180)).all()
    euler = so3_grid_euler(30, method=method, dtype=F64)
    torch.testing.assert_close(so3_grid(30, method=method, dtype=F64), relion_euler_to_matrix(euler))
    assert so3_grid(30, method=method).dtype == torch.float32
    with pytest.raises(InputError):
        so3_grid(30, method="fibonacci")


def test_healpix_grid_is_relions():
    import healpy

    euler = so3_grid_euler(15.0, method="healpix", dtype=F64)  # order 2: nside 4, 24 psi
    theta, phi = healpy.pix2ang(4, np.arange(192), nest=True)
    directions = euler.reshape(192, 24, 3)
    rot_expected = torch.from_numpy(np.degrees(phi))
    rot_expected = torch.where(rot_expected > 180, rot_expected - 360, rot_expected)
    torch.testing.assert_close(directions[:, 0, 0], rot_expected)
    torch.testing.assert_close(directions[:, 0, 1], torch.from_numpy(np.degrees(theta)))
    psi = torch.arange(24, dtype=F64) * 15.0
    torch.testing.assert_close(directions[0, :, 2], torch.where(psi > 180, psi - 360, psi))


def test_hopf_grid_is_yershova_grid():
    import healpy

    nside = 2  # order 1
    theta, phi = healpy.pix2ang(nside, np.arange(12 * nside**2), nest=True)
    psi = (np.arange(6 * nside) + 0.5) * 2 * np.pi / (6 * nside)
    theta, phi, psi = (np.repeat(theta, len(psi)), np.repeat(phi, len(psi)), np.tile(psi, len(theta)))
    x1 = np.cos(theta / 2) * np.cos(psi / 2)
    x2 = np.cos(theta / 2) * np.sin(psi / 2)
    x3 = np.sin(theta / 2) * np.cos(phi + psi / 2)
    x4 = np.sin(theta / 2) * np.sin(phi + psi / 2)
    yershova = quaternion_to_matrix(torch.from_numpy(np.stack([x1, x4, x3, x2], -1)))  # read as (w, z, y, x)
    grid_t = so3_grid(30.0, method="hopf", dtype=F64).transpose(-1, -2)
    # same set: every grid point has an exact partner and vice versa (576 points each)
    cos_sim = grid_t.reshape(-1, 9) @ yershova.reshape(-1, 9).T  # trace(GᵀY) = 1 + 2 cos θ
    assert len(yershova) == len(grid_t) == 576
    assert (cos_sim.max(1).values > 3 - 1e-10).all() and (cos_sim.max(0).values > 3 - 1e-10).all()


def _nearest_grid_distance_deg(rotations, grid):
    traces = rotations.reshape(-1, 9) @ grid.reshape(-1, 9).T
    best = traces.max(dim=1).values
    return torch.rad2deg(torch.arccos(((best - 1) / 2).clamp(-1, 1)))


@pytest.mark.parametrize("method", ["healpix", "hopf"])
@pytest.mark.parametrize("step", [30.0, 15.0])
def test_grid_covers_so3_within_one_step(method, step):
    grid = so3_grid(step, method=method, dtype=F64)
    distance = _nearest_grid_distance_deg(random_rotations(4000, generator=_gen(15), dtype=F64), grid)
    assert distance.max() < step
    assert distance.mean() < 0.6 * step
    # points of the grid are distinct
    assert _nearest_grid_distance_deg(grid[:200], grid).max() < 1e-5
    self_traces = grid[:200].reshape(-1, 9) @ grid.reshape(-1, 9).T
    self_traces[torch.arange(200), torch.arange(200)] = -1
    assert torch.rad2deg(torch.arccos(((self_traces.max(1).values - 1) / 2).clamp(-1, 1))).min() > 0.2 * step


def test_inplane_angles_and_rotations():
    angles = inplane_angles(10.0, dtype=F64)
    assert angles.shape == (36,)
    torch.testing.assert_close(angles[:3], torch.tensor([0.0, 10.0, 20.0], dtype=F64))
    assert angles.max() == 180 and angles.min() == -170
    assert inplane_angles(7.0).shape == (52,)  # ceil(360 / 7): never coarser than asked
    m = inplane_rotations(10.0, dtype=F64)
    full = relion_euler_to_matrix(torch.stack([torch.zeros(36, dtype=F64), torch.zeros(36, dtype=F64), angles], -1))
    torch.testing.assert_close(m, full[:, :2, :2])
    torch.testing.assert_close(inplane_rotation_matrix(angles), m)


# ---------------------------------------------------------------- inputs


def test_input_types_and_errors():
    assert relion_euler_to_matrix(np.array([10.0, 20.0, 30.0])).dtype == torch.float32
    assert relion_euler_to_matrix([[10, 20, 30]]).shape == (1, 3, 3)
    with pytest.raises(InputError):
        relion_euler_to_matrix(torch.zeros(4))
    with pytest.raises(InputError):
        matrix_to_relion_euler(torch.zeros(3, 4))
    with pytest.raises(InputError):
        quaternion_to_matrix(torch.zeros(3))
    with pytest.raises(InputError):
        random_rotations(-1)
