"""Tests for cryolab.interpolate: grid sampling, its adjoint (insertion) and scattered-data gridding."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryolab.errors import InputError
from cryolab.interpolate import griddata, insert_into_grid_2d, insert_into_grid_3d, sample_grid_2d, sample_grid_3d

F64 = torch.float64
METHODS = ["nearest", "linear", "cubic"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mesh_2d(h, w):
    """Geometric coordinates (x, y) of every pixel, arrays of shape (h, w)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    return x, y


def _mesh_3d(d, h, w):
    z, y, x = torch.meshgrid(
        torch.arange(d, dtype=F64), torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij"
    )
    return x, y, z


def _random_points(n, upper, lower=0.0, seed=0):
    """n points (x, y[, z]) uniform in [lower, upper) per component (upper given in geometric order)."""
    upper = torch.as_tensor(upper, dtype=F64)
    lower = torch.as_tensor(lower, dtype=F64)
    return lower + torch.rand(n, len(upper), generator=_gen(seed), dtype=F64) * (upper - lower)


# ---------------------------------------------------------------- coordinate convention


def test_coordinates_are_xy_column_row_and_xyz():
    image = torch.arange(20, dtype=F64).reshape(4, 5)  # (h, w)
    for method in METHODS:
        assert sample_grid_2d(image, torch.tensor([[2.0, 1.0]], dtype=F64), method=method) == image[1, 2]
    volume = torch.arange(60, dtype=F64).reshape(3, 4, 5)  # (d, h, w)
    for method in METHODS:
        assert sample_grid_3d(volume, torch.tensor([[3.0, 2.0, 1.0]], dtype=F64), method=method) == volume[1, 2, 3]
    # half way between columns 2 and 3 of row 1
    between = sample_grid_2d(image, torch.tensor([[2.5, 1.0]], dtype=F64))
    torch.testing.assert_close(between, (image[1, 2:3] + image[1, 3:4]) / 2)


def test_grid_values_at_integer_points_all_methods():
    volume = torch.randn(5, 6, 7, generator=_gen(1), dtype=F64)
    x, y, z = _mesh_3d(5, 6, 7)
    coords = torch.stack([x, y, z], -1).reshape(-1, 3)
    for method in METHODS:
        got = sample_grid_3d(volume, coords, method=method)
        torch.testing.assert_close(got, volume.reshape(-1), atol=1e-14, rtol=0)


def test_nearest_rounds_to_closest_sample():
    image = torch.randn(6, 7, generator=_gen(2), dtype=F64)
    coords = _random_points(300, [6.0, 5.0], seed=3)  # x in [0, 6), y in [0, 5)
    coords = coords.round() + (torch.rand(300, 2, generator=_gen(4), dtype=F64) - 0.5) * 0.98
    coords = coords.clamp(0, 5)
    expected = image[coords[:, 1].round().long(), coords[:, 0].round().long()]
    torch.testing.assert_close(sample_grid_2d(image, coords, method="nearest"), expected, atol=0, rtol=0)


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_exact_on_linear_functions(method):
    x, y, z = _mesh_3d(8, 9, 10)
    volume = 0.5 + 1.5 * x - 2.0 * y + 0.25 * z
    lower = 1.0 if method == "cubic" else 0.0  # cubic needs its 4 taps inside
    coords = _random_points(500, [10 - 1 - lower, 9 - 1 - lower, 8 - 1 - lower], lower=lower, seed=5)
    expected = 0.5 + 1.5 * coords[:, 0] - 2.0 * coords[:, 1] + 0.25 * coords[:, 2]
    torch.testing.assert_close(sample_grid_3d(volume, coords, method=method), expected, atol=1e-12, rtol=0)
    x2, y2 = _mesh_2d(9, 10)
    image = 3.0 - x2 + 0.5 * y2
    coords2 = coords[:, :2]
    expected2 = 3.0 - coords2[:, 0] + 0.5 * coords2[:, 1]
    torch.testing.assert_close(sample_grid_2d(image, coords2, method=method), expected2, atol=1e-12, rtol=0)


def test_cubic_exact_on_quadratics_linear_is_not():
    x, y = _mesh_2d(12, 11)
    image = 0.3 * x * x - 0.2 * x * y + 0.1 * y * y + x
    coords = _random_points(400, [9.0, 10.0], lower=1.0, seed=6)
    cx, cy = coords.unbind(-1)
    expected = 0.3 * cx * cx - 0.2 * cx * cy + 0.1 * cy * cy + cx
    torch.testing.assert_close(sample_grid_2d(image, coords, method="cubic"), expected, atol=1e-11, rtol=0)
    assert (sample_grid_2d(image, coords, method="linear") - expected).abs().max() > 1e-2
    x3, y3, z3 = _mesh_3d(7, 8, 9)
    volume = x3 * z3 - y3 * y3 + 2 * z3
    coords3 = _random_points(300, [7.0, 6.0, 5.0], lower=1.0, seed=7)
    cx, cy, cz = coords3.unbind(-1)
    expected3 = cx * cz - cy * cy + 2 * cz
    torch.testing.assert_close(sample_grid_3d(volume, coords3, method="cubic"), expected3, atol=1e-11, rtol=0)


def test_error_ordering_on_smooth_function():
    x, y = _mesh_2d(32, 32)

    def f(xx, yy):
        return torch.sin(0.4 * xx) * torch.cos(0.3 * yy)

    coords = _random_points(2000, [28.0, 28.0], lower=2.0, seed=8)
    exact = f(coords[:, 0], coords[:, 1])
    errors = {m: (sample_grid_2d(f(x, y), coords, method=m) - exact).abs().max().item() for m in METHODS}
    assert errors["cubic"] < 0.2 * errors["linear"] < 0.2 * errors["nearest"]


# ---------------------------------------------------------------- agreement with scipy


@pytest.mark.parametrize("fill_value", [0.0, 2.5])
def test_linear_and_nearest_agree_with_scipy_map_coordinates(fill_value):
    volume = torch.randn(6, 7, 8, generator=_gen(9), dtype=F64)
    # include points up to 1.5 samples outside the array on every side
    coords = _random_points(600, [9.5, 8.5, 7.5], lower=-1.5, seed=10)
    scipy_order = coords.numpy()[:, ::-1].T  # (x, y, z) -> rows (z, y, x)
    for method, order in [("linear", 1), ("nearest", 0)]:
        expected = ndimage.map_coordinates(
            volume.numpy(), scipy_order, order=order, mode="grid-constant", cval=fill_value
        )
        got = sample_grid_3d(volume, coords, method=method, fill_value=fill_value)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-13)
    image = volume[0]
    rows_cols = coords.numpy()[:, 1::-1].T  # (x, y) -> rows (y, x)
    expected = ndimage.map_coordinates(image.numpy(), rows_cols, order=1, mode="grid-constant", cval=fill_value)
    got = sample_grid_2d(image, coords[:, :2], fill_value=fill_value)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-13)


def test_far_outside_gives_fill_value():
    image = torch.randn(5, 5, generator=_gen(11))
    coords = torch.tensor([[-2.0, 2.0], [2.0, 7.5], [100.0, -100.0], [-3.1, 1.0]])
    for method in METHODS:
        torch.testing.assert_close(sample_grid_2d(image, coords, method=method), torch.zeros(4))
        filled = sample_grid_2d(image, coords, method=method, fill_value=-1.0)
        torch.testing.assert_close(filled, torch.full((4,), -1.0))


# ---------------------------------------------------------------- complex data, batching, dtypes


@pytest.mark.parametrize("method", METHODS)
def test_complex_equals_real_and_imaginary_parts(method):
    g = _gen(12)
    volume = torch.randn(5, 6, 7, dtype=torch.complex64, generator=g)
    coords = _random_points(200, [7.0, 6.0, 5.0], lower=-0.5, seed=13).float()
    got = sample_grid_3d(volume, coords, method=method)
    assert got.dtype == torch.complex64
    real_part = sample_grid_3d(volume.real, coords, method=method)
    expected = real_part + 1j * sample_grid_3d(volume.imag, coords, method=method)
    torch.testing.assert_close(got, expected)


def test_batched_shapes_broadcast():
    g = _gen(14)
    images = torch.randn(3, 6, 7, generator=g, dtype=F64)
    coords = _random_points(10, [6.0, 5.0], seed=15)
    # batch of images, one set of points
    out = sample_grid_2d(images, coords)
    assert out.shape == (3, 10)
    for b in range(3):
        torch.testing.assert_close(out[b], sample_grid_2d(images[b], coords))
    # one image, batch of point sets
    coord_batch = torch.stack([coords, coords + 0.3, coords - 0.2])
    out = sample_grid_2d(images[0], coord_batch)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out[1], sample_grid_2d(images[0], coords + 0.3))
    # outer-product batching: (3, 1, h, w) with (1, 4, P, 2) -> (3, 4, P)
    more = torch.stack([coords + k * 0.1 for k in range(4)])
    out = sample_grid_2d(images[:, None], more[None])
    assert out.shape == (3, 4, 10)
    torch.testing.assert_close(out[2, 3], sample_grid_2d(images[2], more[3]))
    volumes = torch.randn(2, 4, 5, 6, generator=g)
    assert sample_grid_3d(volumes, torch.rand(2, 7, 3), method="cubic").shape == (2, 7)
    with pytest.raises(InputError):
        sample_grid_2d(images, torch.rand(2, 10, 2))


def test_dtypes_follow_inputs():
    assert sample_grid_2d(np.ones((4, 4)), np.ones((3, 2))).dtype == torch.float32
    assert sample_grid_2d(torch.ones(4, 4, dtype=F64), torch.ones(3, 2, dtype=F64)).dtype == F64
    assert sample_grid_2d(np.ones((4, 4), dtype=np.complex128), np.ones((3, 2))).dtype == torch.complex64
    data, weights = insert_into_grid_2d(torch.ones(3, dtype=torch.complex64), torch.ones(3, 2), (4, 4))
    assert data.dtype == torch.complex64 and weights.dtype == torch.float32
    with pytest.raises(InputError):
        sample_grid_2d(torch.ones(4, 4), torch.ones(3, 3))
    with pytest.raises(InputError):
        sample_grid_3d(torch.ones(4, 4, 4), torch.ones(3, 3), method="quintic")
    with pytest.raises(InputError):
        insert_into_grid_3d(torch.ones(5), torch.ones(4, 3), (4, 4, 4))


# ---------------------------------------------------------------- adjoint


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [F64, torch.complex128])
def test_insert_is_adjoint_of_sample_3d(method, dtype):
    g = _gen(16)
    shape = (6, 7, 8)
    volume = torch.randn(shape, generator=g, dtype=dtype)
    coords = _random_points(4 * 300, [9.0, 8.0, 7.0], lower=-1.5, seed=17).reshape(4, 300, 3)  # some outside
    y = torch.randn(4, 300, generator=g, dtype=dtype)
    lhs = torch.vdot(sample_grid_3d(volume, coords, method=method).reshape(-1), y.reshape(-1))
    inserted, _ = insert_into_grid_3d(y, coords, shape, method=method)  # the 4 batches sum into one grid
    assert inserted.shape == shape
    rhs = torch.vdot(volume.reshape(-1), inserted.reshape(-1))
    torch.testing.assert_close(lhs, rhs, atol=1e-11, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_insert_is_adjoint_of_sample_2d_batched_grid(method, dtype):
    g = _gen(18)
    shape = (3, 9, 10)  # one grid per batch entry
    images = torch.randn(shape, generator=g, dtype=dtype)
    coords = _random_points(3 * 200, [11.0, 10.0], lower=-1.0, seed=19).reshape(3, 200, 2).float()
    y = torch.randn(3, 200, generator=g, dtype=dtype)
    sampled = sample_grid_2d(images, coords, method=method)
    inserted, _ = insert_into_grid_2d(y, coords, shape, method=method)
    assert inserted.shape == shape
    for b in range(3):  # per batch entry: no mixing between grids
        lhs = torch.vdot(sampled[b], y[b])
        rhs = torch.vdot(images[b].reshape(-1), inserted[b].reshape(-1))
        torch.testing.assert_close(lhs, rhs, atol=1e-4, rtol=1e-5)


def test_insert_weights():
    coords = torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.25, 3.5], [-5.0, 0.0]], dtype=F64)
    values = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=F64)
    data, weights = insert_into_grid_2d(values, coords, (5, 5), method="nearest")
    assert weights[1, 1] == 2 and data[1, 1] == 3
    assert weights[4, 2] == 1 and data[4, 2] == 4  # (2.25, 3.5) rounds half up to column 2, row 4
    assert weights.sum() == 3  # the point outside is dropped
    data, weights = insert_into_grid_2d(torch.tensor([4.0], dtype=F64), coords[2:3], (5, 5))
    expected_weights = torch.zeros(5, 5, dtype=F64)
    # x = 2.25: columns 2, 3 with 0.75, 0.25; y = 3.5: rows 3, 4 with 0.5 each
    expected_weights[3:5, 2] = 0.375
    expected_weights[3:5, 3] = 0.125
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(data, 4 * expected_weights)
    # inserting then sampling a constant at inside points: weights sum to one per point
    pts = _random_points(50, [3.0, 3.0], lower=0.0, seed=20)
    _, w = insert_into_grid_3d(torch.ones(50, dtype=F64), torch.cat([pts, pts[:, :1]], -1), (4, 4, 4))
    torch.testing.assert_close(w.sum(), torch.tensor(50.0, dtype=F64))


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_gradcheck_data_and_coordinates(method):
    g = _gen(21)
    image = torch.randn(5, 6, generator=g, dtype=F64, requires_grad=True)
    # keep away from integer coordinates, where the interpolant has kinks
    coords = (torch.tensor([[1.3, 2.6], [3.7, 0.2], [-0.4, 4.45], [4.8, 1.1]], dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, c: sample_grid_2d(v, c, method=method), (image, coords))
    volume = torch.randn(4, 4, 5, generator=g, dtype=torch.complex128, requires_grad=True)
    coords3 = torch.tensor([[1.3, 2.6, 0.7], [3.7, 0.2, 2.2]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, c: sample_grid_3d(v, c, method=method), (volume, coords3))
    values = torch.randn(2, generator=g, dtype=F64, requires_grad=True)

    def insert(y, c):
        return insert_into_grid_3d(y, c, (4, 4, 5), method=method)

    assert torch.autograd.gradcheck(insert, (values, coords3))


def test_gradient_flows_for_nearest_to_data():
    image = torch.zeros(4, 4, requires_grad=True)
    sample_grid_2d(image, torch.tensor([[1.2, 2.9], [1.4, 3.1]]), method="nearest").sum().backward()
    expected = torch.zeros(4, 4)
    expected[3, 1] = 2
    torch.testing.assert_close(image.grad, expected)


# ---------------------------------------------------------------- scattered data


def test_griddata_linear_reproduces_linear_functions_2d_and_3d():
    for dim in (2, 3):
        points = torch.rand(200, dim, generator=_gen(22), dtype=F64) * 10
        slope = torch.arange(1, dim + 1, dtype=F64)
        values = 1.0 + points @ slope
        xi = 3 + torch.rand(5, 7, dim, generator=_gen(23), dtype=F64) * 4  # well inside the hull
        out = griddata(points, values, xi)
        assert out.shape == (5, 7) and out.dtype == F64
        torch.testing.assert_close(out, 1.0 + xi @ slope, atol=1e-10, rtol=0)


def test_griddata_nearest_fill_and_complex():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    values = np.array([1 + 1j, 2.0, 3.0, 4 - 2j])
    out = griddata(points, values, np.array([[0.1, 0.2], [0.9, 0.95], [5.0, 5.0]]), method="nearest")
    assert out.dtype == torch.complex64
    torch.testing.assert_close(out, torch.tensor([1 + 1j, 4 - 2j, 4 - 2j], dtype=torch.complex64))
    outside = griddata(points, values.real, np.array([[2.0, 2.0], [0.5, 0.5]]), fill_value=-7.0)
    assert outside[0] == -7.0
    assert griddata(points, values.real, [[0.5, 0.5]], fill_value=float("nan")).isfinite().all()
    with pytest.raises(InputError):
        griddata(points, values.real, np.ones((3, 3)))


def test_griddata_is_not_bilinear_on_a_grid():
    # on grid data, sample_grid_2d is bilinear (exact for x*y); griddata triangulates and is not
    x, y = _mesh_2d(4, 4)
    image = x * y
    points = torch.stack([x.reshape(-1), y.reshape(-1)], -1)
    centre = torch.tensor([[1.5, 1.5]], dtype=F64)
    assert sample_grid_2d(image, centre) == 2.25
    assert abs(griddata(points, image.reshape(-1), centre).item() - 2.25) > 0.1
