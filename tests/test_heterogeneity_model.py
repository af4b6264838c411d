"""cryolab.heterogeneity.model and .volumes: geometry, rendering, Hermitian decoder, maps from z.

The rendering tests replace the network by the exact Fourier transform of a map of Gaussian
blobs (off-centre, so phases matter): rendering must then reproduce cryolab.projection's
images with CTF and shifts, and generate_volumes must reproduce the map itself.
"""

import math

import numpy as np
import pytest
import torch

from cryolab.ctf import CTFParams
from cryolab.errors import InputError
from cryolab.fourier import fftfreq_magnitude, fourier_pad
from cryolab.heterogeneity import (HetModelConfig, HetVAE, disc_half_plane, generate_volumes, render_images,
                                   slice_coordinates, volume_pixel_size_A, write_volumes)
from cryolab.heterogeneity.model import ResidualMLP, positional_frequencies
from cryolab.io import read_mrc
from cryolab.projection import project_fourier
from cryolab.rotations import random_rotations

# (centre (x, y, z) in voxels, amplitude, sigma in voxels)
BLOBS = [((3.0, -2.0, 1.0), 1.0, 2.0), ((-4.0, 1.0, -2.0), 0.7, 1.6), ((0.0, 4.0, 3.0), 0.5, 1.8)]


def blob_map(n: int) -> torch.Tensor:
    ax = torch.arange(n, dtype=torch.float64) - n // 2
    z, y, x = torch.meshgrid(ax, ax, ax, indexing="ij")
    v = torch.zeros(n, n, n, dtype=torch.float64)
    for (cx, cy, cz), a, s in BLOBS:
        v += a * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s))
    return v.float()


class BlobVAE(HetVAE):
    """A HetVAE whose decoder is the exact transform of blob_map (origin at the centre voxel)."""

    def half_space_field(self, coords, z=None):
        assert bool((coords[..., 0] >= 0).all()), "the network is only asked about kx >= 0"
        k = coords.double()
        f = torch.zeros(k.shape[:-1], dtype=torch.complex128)
        for c, a, s in BLOBS:
            phase = torch.exp(-2j * math.pi * (k @ torch.tensor(c, dtype=torch.float64)))
            f = f + a * (2 * math.pi * s * s) ** 1.5 * torch.exp(-2 * math.pi**2 * s * s * (k * k).sum(-1)) * phase
        f = f / (self.config.train_box_size * float(self.data_scale))  # normalised units
        return f.real.float(), f.imag.float()


def _ctf(b: int) -> CTFParams:
    g = torch.Generator().manual_seed(3)
    u = 8000 + 15000 * torch.rand(b, generator=g)
    return CTFParams(defocus_u_A=u, defocus_v_A=u - 800 * torch.rand(b, generator=g),
                     defocus_angle_deg=180 * torch.rand(b, generator=g))


def test_config_round_trip_and_validation():
    config = HetModelConfig(box_size=64, pixel_size_A=1.6, zdim=4, downsample=32, pe_type="gaussian")
    assert config.train_box_size == 32 and config.train_pixel_size_A == pytest.approx(3.2)
    assert config.pe_dim == 16 and config.enc_mask_radius == 16.0
    assert HetModelConfig.from_dict(config.to_dict()) == config
    assert config.differences(HetModelConfig(64, 1.6, zdim=2, downsample=32, pe_type="gaussian")) == {"zdim": (4, 2)}
    for bad in ({"zdim": -1}, {"pe_type": "sinc"}, {"downsample": 80}, {"domain": "hartley"}, {"decoder_width": 0}):
        with pytest.raises(InputError):
            HetModelConfig(box_size=64, pixel_size_A=1.6, **bad)
    with pytest.raises(InputError, match="unknown"):
        HetModelConfig.from_dict({**config.to_dict(), "colour": "blue"})


@pytest.mark.parametrize("box", [24, 25])
def test_disc_half_plane_weights_count_the_full_disc(box):
    freqs, index, weights = disc_half_plane(box)
    full = fftfreq_magnitude((box, box)) <= (box // 2) / box + 1e-6  # full fft grid
    assert float(weights.sum()) == int(full.sum())
    assert bool((freqs[:, 0] >= 0).all())
    rfft_k = fftfreq_magnitude((box, box), rfft=True).reshape(-1)[index]
    assert torch.allclose(torch.linalg.vector_norm(freqs, dim=-1), rfft_k)


def test_slice_coordinates_are_rows_of_a():
    rot = random_rotations(5, generator=torch.Generator().manual_seed(0))
    k2 = torch.tensor([[0.1, 0.0], [0.0, 0.2], [0.3, -0.1]])
    k3 = slice_coordinates(rot, k2)
    expected = torch.einsum("bji,mj->bmi", rot[:, :2, :], k2)  # Aᵀ (kx, ky, 0)
    assert torch.allclose(k3, expected, atol=1e-6)


@pytest.mark.parametrize("box", [24, 25])
def test_rendering_reproduces_fourier_projection_with_ctf_and_shifts(box):
    """Decoder = exact map transform → rendered images equal project_fourier's (cubic) images."""
    px = 2.0
    model = BlobVAE(HetModelConfig(box, px, zdim=0))
    model.data_scale.fill_(3.0)  # the scale must cancel
    rot = random_rotations(6, generator=torch.Generator().manual_seed(1))
    shifts = torch.randn(6, 2, generator=torch.Generator().manual_seed(2)) * 3
    ctf = _ctf(6)
    reference = project_fourier(blob_map(box), rot, ctf=ctf, shifts_A=shifts, pixel_size_A=px, interpolation="cubic")
    rendered = render_images(model, None, rot, ctf=ctf, shifts_A=shifts)
    for a, b in zip(reference, rendered):
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99995
        assert float(b.norm() / a.norm()) == pytest.approx(1.0, abs=0.005)


def test_generate_volumes_reproduces_the_map_and_its_upsampling(tmp_path):
    box, px = 24, 2.0
    model = BlobVAE(HetModelConfig(box, px, zdim=0))
    model.data_scale.fill_(0.5)
    truth = blob_map(box)
    vol = generate_volumes(model)
    assert vol.shape == (1, box, box, box)
    assert float((vol[0] - truth).norm() / truth.norm()) < 1e-3
    big = generate_volumes(model, box_size=32)[0]
    assert float((big - fourier_pad(truth, 32, ndim=3)).norm() / big.norm()) < 1e-3
    assert volume_pixel_size_A(model, 32) == pytest.approx(px * box / 32)
    paths = write_volumes(torch.stack([vol[0], vol[0]]), tmp_path, px)
    assert [p.name for p in paths] == ["vol_000.mrc", "vol_001.mrc"]
    mrc = read_mrc(paths[1])
    assert mrc.pixel_size_A == pytest.approx(px) and np.allclose(mrc.data, vol[0].numpy())


def test_downsampled_model_volume_box_and_pixel_size():
    model = HetVAE(HetModelConfig(32, 1.5, zdim=2, downsample=16, decoder_width=16, decoder_layers=1,
                                  encoder_width=16, encoder_layers=1))
    assert generate_volumes(model, torch.zeros(3, 2)).shape == (3, 16, 16, 16)
    assert volume_pixel_size_A(model) == pytest.approx(3.0)
    assert volume_pixel_size_A(model, 32) == pytest.approx(1.5)


def test_decoder_is_hermitian_and_maps_are_real():
    torch.manual_seed(0)
    model = HetVAE(HetModelConfig(16, 2.0, zdim=3, decoder_width=32, decoder_layers=2, encoder_width=16, encoder_layers=1))
    k = torch.rand(2, 50, 3) - 0.5
    z = torch.randn(2, 3)
    plus, minus = model.decode_points(k, z), model.decode_points(-k, z)
    assert torch.allclose(plus, minus.conj())
    # the generated map's transform is the decoder, except on the kx = 0 plane and at Nyquist,
    # where a real map keeps only the Hermitian part
    vol = generate_volumes(model, z[:1])[0]
    from cryolab.fourier import fftfreq_grid, rfft_centered

    spectrum = rfft_centered(vol, 3).reshape(-1)
    grid = fftfreq_grid((16, 16, 16), rfft=True).reshape(-1, 3)
    inside = (torch.linalg.vector_norm(grid, dim=-1) <= 0.5) & (grid[:, 0] > 0) & (grid[:, 0] < 0.5)
    with torch.no_grad():
        expected = model.decode_points(grid[inside][None], z[:1])[0] * 16 * float(model.data_scale)
    assert torch.allclose(spectrum[inside], expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("out_dim", [2, 6])
def test_residual_mlp_backward_matches_autograd(out_dim):
    torch.manual_seed(0)
    mlp = ResidualMLP(7, 12, 2, out_dim).double()
    x = torch.randn(3 * 5, 7, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, o: mlp(a, o), (x, offset))
    out, ref = mlp(x, offset), mlp.reference_forward(x, offset)
    assert torch.allclose(out, ref)
    grads = torch.autograd.grad(out.square().sum(), list(mlp.parameters()))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(mlp.parameters()))
    assert all(torch.allclose(a, b) for a, b in zip(grads, ref_grads))


@pytest.mark.parametrize("chunk_rows", [2, 4, 7, 100])
def test_residual_mlp_in_row_chunks_matches_autograd(monkeypatch, chunk_rows):
    """Chunks of whole images (7, 100 rows), of parts of one image (2, 4) and ragged ones give the same values."""
    import cryolab.heterogeneity.model as model_module

    monkeypatch.setattr(model_module, "CHUNK_ROWS", chunk_rows)
    torch.manual_seed(1)
    mlp = ResidualMLP(5, 9, 2, 2).double()
    x = torch.randn(4 * 5, 5, dtype=torch.float64, requires_grad=True)  # 4 images of 5 rows
    offset = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    out, ref = mlp(x, offset), mlp.reference_forward(x, offset)
    assert torch.allclose(out, ref)
    weights = torch.randn(out.shape, dtype=torch.float64)
    inputs = [x, offset, *mlp.parameters()]
    grads = torch.autograd.grad((out * weights).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * weights).sum(), inputs)
    assert all(torch.allclose(a, b) for a, b in zip(grads, ref_grads))
    plain = torch.randn(13, 5, dtype=torch.float64)  # no offset: chunks of rows, the last one short
    assert torch.allclose(mlp(plain), mlp.reference_forward(plain))


def test_encode_shapes_and_reparameterization_trick():
    torch.manual_seed(0)
    model = HetVAE(HetModelConfig(16, 2.0, zdim=2, encoder_width=16, encoder_layers=1, decoder_width=8, decoder_layers=0))
    mu, logvar = model.encode(torch.randn(5, 16, 16))
    assert mu.shape == logvar.shape == (5, 2)
    with pytest.raises(InputError):
        model.encode(torch.randn(5, 12, 12))
    m = torch.tensor([[1.0, -2.0]], requires_grad=True)
    lv = torch.tensor([[0.0, math.log(0.25)]], requires_grad=True)
    z = HetVAE.reparameterize(m.expand(20000, 2), lv.expand(20000, 2), torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), m[0].detach(), atol=0.03)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 0.5]), atol=0.02)
    z.sum().backward()  # gradients reach mu and logvar: the point of the trick
    assert m.grad is not None and lv.grad is not None and float(lv.grad.abs().sum()) > 0
    again = HetVAE.reparameterize(m.expand(20000, 2), lv.expand(20000, 2), torch.Generator().manual_seed(0))
    assert torch.equal(z, again)


def test_positional_frequencies_geometric_ranges():
    lowf = positional_frequencies(HetModelConfig(32, 1.0, pe_type="geom_lowf"))
    full = positional_frequencies(HetModelConfig(32, 1.0, pe_type="geom_full"))
    assert lowf.shape == full.shape == (3, 48)
    assert float(lowf.max()) == pytest.approx(16.0) and float(lowf[lowf > 0].min()) == pytest.approx(1.0)
    assert float(full.max()) == pytest.approx(math.pi * 32)
    gauss = positional_frequencies(HetModelConfig(32, 1.0, pe_type="gaussian"), generator=torch.Generator().manual_seed(0))
    assert gauss.shape == (3, 48) and 4 < float(gauss.std()) < 12  # σ = 0.5 · 16


def test_generate_volumes_checks_z():
    model = HetVAE(HetModelConfig(16, 2.0, zdim=2, encoder_width=8, encoder_layers=0, decoder_width=8, decoder_layers=0))
    with pytest.raises(InputError, match="shape"):
        generate_volumes(model, torch.zeros(3, 4))
    with pytest.raises(InputError, match="latent"):
        generate_volumes(model, None)
