"""2D classification by ML expectation-maximization (cryolab.classify2d): conventions, the Fourier-space
E-step against a direct computation, the M-step, recovery of known views of ADK, bad inputs."""

import dataclasses
import math

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from cryolab.atoms import atoms_to_potential, builtin_model
from cryolab.classify2d import (Class2DSettings, Class2DState, ParticleBatch, batches_from_tensors, e_step,
                                initial_state, m_step, offset_grid_A, prepare_expectation, rotate_images,
                                run_em)
from cryolab.classify2d.projector import (project_references, project_references_adjoint, reference_spectra,
                                          rotated_sample_coordinates, rotated_sampler)
from cryolab.ctf import CTFParams, ctf_2d
from cryolab.errors import InputError
from cryolab.fourier import irfft_centered, rfft_centered, shell_index
from cryolab.interpolate import sample_grid_2d
from cryolab.projection import apply_shifts_rfft, gridding_correction
from cryolab.simulate import GaussianNoise, ParticleParameters, sample_ctf_params, simulate_images

PIXEL_A = 2.5
BOX = 40
# (rot, tilt) of four views of ADK that differ most at 12 Å (normalised correlation <= 0.84 at any psi)
VIEWS = ((0.0, 90.0), (45.0, 135.0), (180.0, 90.0), (135.0, 45.0))


@pytest.fixture(autouse=True)
def _one_thread():
    """Small problems: threads only add synchronisation (costly on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _smooth_images(k, n, seed=0):
    """``k`` random smooth, asymmetric blobs in an ``n × n`` box."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    out = torch.zeros(k, n, n)
    for i in range(k):
        for _ in range(3):
            cx, cy = (torch.rand(2, generator=g) * n / 3 - n / 6).tolist()
            sx, sy = (1.5 + torch.rand(2, generator=g) * 2.5).tolist()
            out[i] += torch.exp(-((x - cx) ** 2) / (2 * sx**2) - ((y - cy) ** 2) / (2 * sy**2))
    return out


def _state(settings, references, *, noise=None, sigma_A=3.0):
    k, n = references.shape[0], settings.box_size
    shells = n // 2 + 1
    noise = torch.full((shells,), float(n * n)) if noise is None else noise
    power = torch.ones(k, shells)
    return Class2DState(settings=settings, references=references, class_weights=torch.full((k,), 1.0 / k),
                        noise_spectrum=noise, tau2=power, offset_sigma_A=sigma_A, resolution_shell=settings.max_shell)


def _view_particles(n, *, seed, snr=0.05):
    """ADK particles in four discrete views, random psi, shifts and CTF, white noise at ``snr`` over the box."""
    g = torch.Generator().manual_seed(seed)
    volume = atoms_to_potential(builtin_model("adk_open"), BOX, PIXEL_A)
    views = torch.tensor(VIEWS)
    which = torch.randint(len(views), (n,), generator=g)
    psi = torch.rand(n, generator=g) * 360 - 180
    shifts = (torch.rand(n, 2, generator=g) * 2 - 1) * 5.0
    ctf = sample_ctf_params(n, defocus_min_A=10000, defocus_max_A=25000, generator=g)
    particles = ParticleParameters(torch.cat([views[which], psi[:, None]], dim=1), shifts, ctf)
    _, noisy = simulate_images(volume, particles, PIXEL_A, noise=GaussianNoise(snr), seed=seed)
    return noisy, ctf, which, psi


# --------------------------------------------------------------------------------------------
# sampling conventions


def test_offset_grid_is_a_disc_of_grid_points_starting_at_zero():
    grid = offset_grid_A(2.0, 1.0)
    assert grid.shape == (13, 2)  # i² + j² <= 4
    assert torch.equal(grid[0], torch.zeros(2))
    assert float(torch.linalg.vector_norm(grid, dim=1).max()) == pytest.approx(2.0)
    assert offset_grid_A(0.0, 1.0).shape == (1, 2)
    with pytest.raises(InputError):
        offset_grid_A(3.0, 0.0)


def test_rotate_images_follows_relion_inplane_convention():
    """out(x) = image(Rᵀ x), R = [[c, s], [-s, c]]: psi = 90° is numpy's rot90 (odd box: centre exact)."""
    image = torch.rand(2, 15, 15)
    rotated = rotate_images(image, torch.tensor(90.0))
    assert torch.allclose(rotated, torch.rot90(image, 1, dims=(-2, -1)), atol=1e-5)
    # a point at (x, y) = (3, 0) moves to R(3, 0) = (3 cos psi, -3 sin psi): psi = 90° -> (0, -3)
    spot = torch.zeros(15, 15)
    spot[7, 10] = 1.0
    assert rotated.shape == (2, 15, 15)
    moved = rotate_images(spot, torch.tensor([90.0, 180.0]))
    assert moved[0, 7 - 3, 7] == pytest.approx(1.0) and moved[1, 7, 7 - 3] == pytest.approx(1.0)
    # broadcasting: every image at every angle; rotating back recovers the centre of the image
    both = rotate_images(image[:, None], torch.tensor([0.0, 37.0])[None, :])
    assert both.shape == (2, 2, 15, 15) and torch.allclose(both[:, 0], image)
    blob = _smooth_images(1, 32)[0]
    back = rotate_images(rotate_images(blob, torch.tensor(37.0)), torch.tensor(-37.0))
    assert float((back - blob).abs().max()) < 0.02 * float(blob.max())


# --------------------------------------------------------------------------------------------
# the E-step's Fourier-space expansion against a direct computation


def test_e_step_matches_direct_likelihood_and_recovers_angle_and_origin():
    n = 16
    settings = Class2DSettings(n_classes=2, box_size=n, pixel_size_A=2.0, psi_step_deg=90.0, offset_range_A=2.0,
                               offset_step_A=2.0)
    refs = _smooth_images(2, n, seed=1) * 5
    noise = torch.linspace(200.0, 50.0, n // 2 + 1)  # coloured: σ² falls with frequency
    state = _state(settings, refs, noise=noise, sigma_A=2.5)
    # three particles: class 1 at psi 90° with origin (2, 0) Å; class 0 at psi 180°, origin (0, -2) Å
    truth = [(1, 90.0, (2.0, 0.0)), (0, 180.0, (0.0, -2.0)), (0, -90.0, (0.0, 0.0))]
    images = []
    for c, psi, origin in truth:
        rot = rotate_images(refs[c], torch.tensor(psi))
        shifted = apply_shifts_rfft(rfft_centered(rot, 2), torch.tensor(origin), 2.0)  # image(x) = P(x + o)
        images.append(irfft_centered(shifted, (n, n)))
    images = torch.stack(images) + 0.05 * torch.randn(3, n, n, generator=torch.Generator().manual_seed(0))
    ctf = CTFParams(defocus_u_A=torch.tensor([9000.0, 12000.0, 15000.0]), defocus_v_A=torch.tensor([8000.0, 11000.0, 15000.0]),
                    defocus_angle_deg=torch.tensor([10.0, 40.0, 0.0]))
    ctf_images = irfft_centered(rfft_centered(images, 2) * ctf_2d(ctf, (n, n), 2.0), (n, n))
    batch = ParticleBatch(images=ctf_images, ctf=ctf, indices=torch.arange(3), halves=torch.tensor([0, 1, 0]))
    stats = e_step(state, batch)

    # direct: Σ_k h(k) |X − CTF·S_o·RA|² / (2σ²) for every hypothesis, no expansion
    ctx = prepare_expectation(state)
    x = rfft_centered(ctf_images, 2).reshape(3, -1)[:, ctx.index].to(torch.complex128)
    c = ctf_2d(ctf, (n, n), 2.0).reshape(3, -1)[:, ctx.index].double()
    w = ctx.noise_weights.double()
    log_prior_t = ctx.log_offset_prior.double()
    direct = torch.empty(3, len(ctx.offsets_A), 2, 4, dtype=torch.float64)
    rotated = project_references(refs, ctx.sampler).to(torch.complex128)  # (K, R, M): A_k(Rᵀ k)
    for k in range(2):
        for r in range(4):
            ra = rotated[k, r]
            for t in range(len(ctx.offsets_A)):
                model = c * ctx.ramps[t].to(torch.complex128) * ra
                direct[:, t, k, r] = -(w * (x - model).abs() ** 2).sum(-1) + log_prior_t[t] + math.log(0.5) - math.log(4)
    direct_ll = torch.logsumexp(direct.reshape(3, -1), dim=1) + ctx.log_normalisation
    assert torch.allclose(stats.particles.log_likelihood, direct_ll, rtol=1e-5, atol=0.05)
    direct_max = torch.exp(direct.reshape(3, -1).max(dim=1).values + ctx.log_normalisation - direct_ll)
    assert torch.allclose(stats.particles.max_probability.double(), direct_max, atol=1e-3)

    found = stats.particles
    for i, (cls, psi, origin) in enumerate(truth):
        assert int(found.class_index[i]) == cls
        assert float(found.psi_deg[i]) == pytest.approx(psi % 360 if psi % 360 <= 180 else psi % 360 - 360)
        assert found.offsets_A[i].tolist() == pytest.approx(list(origin))
    assert float(stats.class_counts.sum()) == pytest.approx(3.0, rel=1e-5)


def test_projector_matches_interpolation_and_its_adjoint_is_exact():
    n = 20
    g = torch.Generator().manual_seed(0)
    freq = torch.stack(torch.meshgrid(torch.arange(0, 6), torch.arange(-5, 6), indexing="ij"), -1).reshape(-1, 2)
    psi = torch.tensor([0.0, 10.0, 90.0, 123.0])
    sampler = rotated_sampler(freq, psi, n)
    a = torch.randn(2, n, n, generator=g)
    # the sparse operator reads exactly what cryolab.interpolate's bilinear sampler reads
    centred = torch.fft.fftshift(reference_spectra(a), dim=(-2, -1))[:, None].to(torch.complex64)
    expected = sample_grid_2d(centred, rotated_sample_coordinates(freq, psi, n))
    assert torch.allclose(project_references(a, sampler), expected, atol=1e-4)
    v = torch.randn(2, 4, freq.shape[0], dtype=torch.complex64, generator=g)
    lhs = float((project_references(a, sampler).conj() * v).real.sum())
    rhs = float((a * project_references_adjoint(v, sampler)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)
    # psi = 0 reads the padded transform at even points: the transform of the corrected average
    values = project_references(a, sampler)[:, 0]
    corrected = torch.fft.fft2(torch.fft.ifftshift(a / gridding_correction((n, n), 2 * n).float(), dim=(-2, -1)))
    assert torch.allclose(values, corrected[:, freq[:, 1] % n, freq[:, 0]], atol=1e-3)


def _model_particles(refs, classes, psi, ctf, pixel_size_A, noise_sigma, generator):
    """Particles drawn from the E-step's own model: CTF · A_c(Rᵀ k) (projector), plus white noise."""
    n = refs.shape[-1]
    shells = shell_index((n, n), rfft=True).reshape(-1)
    index = torch.nonzero(shells <= n // 2).squeeze(-1)
    width = n // 2 + 1
    row, col = index // width, index % width
    freq = torch.stack([col, torch.where(row < (n + 1) // 2, row, row - n)], dim=-1)
    coords = rotated_sample_coordinates(freq, psi, n)  # one angle per particle: (m, M, 2)
    centred = torch.fft.fftshift(reference_spectra(refs[classes]), dim=(-2, -1)).to(torch.complex64)
    values = sample_grid_2d(centred, coords)
    spectra = torch.zeros(len(classes), n * width, dtype=torch.complex64)
    spectra[:, index] = values * ctf_2d(ctf, (n, n), pixel_size_A).reshape(len(classes), -1)[:, index]
    images = irfft_centered(spectra.reshape(-1, n, width), (n, n))
    return images + noise_sigma * torch.randn(images.shape, generator=generator)


@pytest.mark.parametrize("psi_step", [90.0, 10.0])
def test_m_step_inverts_the_e_step_model(psi_step):
    """One E/M step from the true averages, on particles drawn from the model, gives them back:
    the normal equations (Lᵀ W L + Λ) a = Lᵀ B undo the CTF and the rotations."""
    n = 24
    settings = Class2DSettings(n_classes=2, box_size=n, pixel_size_A=2.0, psi_step_deg=psi_step, offset_range_A=0.0,
                               offset_step_A=2.0, tau2_fudge=1000.0)
    refs = _smooth_images(2, n, seed=7) * 4
    g = torch.Generator().manual_seed(2)
    m = 144
    classes = torch.arange(m) % 2
    grid = torch.arange(0.0, 360.0, psi_step)
    psi = grid[torch.randint(len(grid), (m,), generator=g)]
    ctf = sample_ctf_params(m, defocus_min_A=5000, defocus_max_A=20000, astigmatism_max_A=2000, generator=g)
    images = _model_particles(refs, classes, psi, ctf, 2.0, 0.02, g)
    power = rfft_centered(refs, 2).abs().pow(2).mean(dim=(-2, -1))
    state = dataclasses.replace(_state(settings, refs, noise=torch.full((n // 2 + 1,), 0.02**2 * n * n)),
                                tau2=power[:, None].expand(2, n // 2 + 1).clone())
    stats = None
    for batch in batches_from_tensors(images, ctf=ctf, batch_size=50):
        s = e_step(state, batch)
        stats = s if stats is None else stats + s
    assert torch.equal(stats.particles.class_index, classes)
    found = (stats.particles.psi_deg - psi + 180) % 360 - 180
    assert float(found.abs().max()) < 1e-3
    new = m_step(state, stats)
    for k in range(2):
        error = float((new.references[k] - refs[k]).norm() / refs[k].norm())
        assert error < 0.01
    assert new.class_weights.tolist() == pytest.approx([0.5, 0.5], abs=1e-4)
    # the residual is the added noise alone: σ² = N² · pixel variance for white noise
    assert float(new.noise_spectrum[1:n // 2].mean()) == pytest.approx(0.02**2 * n * n, rel=0.2)
    assert new.iteration == state.iteration + 1


# --------------------------------------------------------------------------------------------
# recovery of known views


@pytest.fixture(scope="module")
def view_data():
    return _view_particles(400, seed=1)


def test_classes_recover_discrete_views_and_inplane_angles(view_data):
    images, ctf, which, psi_true = view_data
    settings = Class2DSettings(n_classes=4, box_size=BOX, pixel_size_A=PIXEL_A, psi_step_deg=10.0, offset_range_A=7.5,
                               offset_step_A=2.5, mask_diameter_A=85.0)
    history = []
    result = run_em(batches_from_tensors(images, ctf=ctf, batch_size=128), settings, n_iterations=15, seed=1,
                    callback=lambda rec: history.append(rec.log_likelihood), show_progress=False)
    found = result.assignments
    ari = adjusted_rand_score(which.numpy(), found.class_index.numpy())
    assert ari >= 0.9, f"ARI {ari:.3f}"
    # each class average has its own arbitrary rotation α_c: psi_true = psi_found + α_c
    delta = torch.deg2rad(psi_true - found.psi_deg).double()
    within = []
    for c in range(4):
        sel = found.class_index == c
        alpha = torch.atan2(torch.sin(delta[sel]).mean(), torch.cos(delta[sel]).mean())
        error = torch.rad2deg(torch.atan2(torch.sin(delta[sel] - alpha), torch.cos(delta[sel] - alpha))).abs()
        within.append(error <= 10.0)
    fraction = float(torch.cat(within).double().mean())
    assert fraction >= 0.8, f"{fraction:.2f} of in-plane angles within one step"
    assert sorted(found.class_index.bincount(minlength=4).tolist())[0] > 50
    assert result.state.resolution_shell <= settings.max_shell and len(result.history) == 15


def test_same_seed_same_result_and_batch_size_does_not_matter(view_data):
    images, ctf, _, _ = view_data
    images, ctf = images[:120], ctf[:120]
    settings = Class2DSettings(n_classes=3, box_size=BOX, pixel_size_A=PIXEL_A, psi_step_deg=20.0, offset_range_A=5.0,
                               offset_step_A=2.5)
    a = run_em(batches_from_tensors(images, ctf=ctf, batch_size=50), settings, n_iterations=3, seed=3, show_progress=False)
    b = run_em(batches_from_tensors(images, ctf=ctf, batch_size=50), settings, n_iterations=3, seed=3, show_progress=False)
    c = run_em(batches_from_tensors(images, ctf=ctf, batch_size=32), settings, n_iterations=3, seed=3, show_progress=False)
    assert torch.equal(a.state.references, b.state.references)
    assert torch.equal(a.assignments.class_index, b.assignments.class_index)
    assert torch.allclose(a.state.references, c.state.references, atol=1e-3 * float(a.state.references.abs().max()))
    assert float((a.assignments.class_index == c.assignments.class_index).double().mean()) > 0.97


def test_initial_state_random_subsets_are_blobs_with_uniform_weights(view_data):
    images, ctf, _, _ = view_data
    settings = Class2DSettings(n_classes=3, box_size=BOX, pixel_size_A=PIXEL_A, mask_diameter_A=85.0)
    state = initial_state(batches_from_tensors(images, ctf=ctf), settings, generator=torch.Generator().manual_seed(0),
                          show_progress=False)
    assert state.iteration == 0 and state.class_weights.tolist() == pytest.approx([1 / 3] * 3)
    assert state.references.shape == (3, BOX, BOX) and torch.isfinite(state.references).all()
    # protein white: the random-rotation averages are positive blobs in the centre
    centre = state.references[:, BOX // 2 - 3:BOX // 2 + 4, BOX // 2 - 3:BOX // 2 + 4].mean(dim=(-2, -1))
    assert (centre > 0).all()
    assert 1 <= state.resolution_shell <= settings.max_shell
    assert state.offset_sigma_A == pytest.approx(settings.initial_offset_sigma_A)


# --------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise_one_line_errors():
    settings = Class2DSettings(n_classes=5, box_size=16, pixel_size_A=2.0)
    few = batches_from_tensors(torch.randn(3, 16, 16))
    with pytest.raises(InputError, match="cannot fill 5 classes") as info:
        run_em(few, dataclasses.replace(settings, use_ctf=False), n_iterations=1, show_progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="square"):
        batches_from_tensors(torch.randn(6, 16, 18))
    bad = torch.randn(8, 16, 16)
    bad[5, 3, 3] = float("nan")
    with pytest.raises(InputError, match="particle 6 .*NaN"):
        run_em(batches_from_tensors(bad), Class2DSettings(n_classes=2, box_size=16, pixel_size_A=2.0, use_ctf=False),
               n_iterations=1, show_progress=False)
    with pytest.raises(InputError, match="CTF"):
        run_em(batches_from_tensors(torch.randn(8, 16, 16)), Class2DSettings(n_classes=2, box_size=16, pixel_size_A=2.0),
               n_iterations=1, show_progress=False)
    for kwargs in ({"n_classes": 0}, {"psi_step_deg": 0.0}, {"tau2_fudge": -1.0}, {"noise_model": "pink"},
                   {"max_resolution_A": 1.0}):
        with pytest.raises(InputError):
            Class2DSettings(**{"n_classes": 2, "box_size": 16, "pixel_size_A": 2.0, **kwargs})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_matches_cpu(view_data):
    images, ctf, _, _ = view_data
    images, ctf = images[:96], ctf[:96]
    settings = Class2DSettings(n_classes=3, box_size=BOX, pixel_size_A=PIXEL_A, psi_step_deg=20.0, offset_range_A=5.0,
                               offset_step_A=2.5, mask_diameter_A=85.0)
    cpu = run_em(batches_from_tensors(images, ctf=ctf, batch_size=48), settings, n_iterations=2, seed=0, show_progress=False)
    gpu = run_em(batches_from_tensors(images, ctf=ctf, batch_size=48), settings, n_iterations=2, seed=0, device="cuda",
                 show_progress=False)
    assert gpu.state.references.device.type == "cuda"
    assert float((gpu.assignments.class_index == cpu.assignments.class_index).double().mean()) > 0.95
    scale = float(cpu.state.references.abs().max())
    assert torch.allclose(gpu.state.references.cpu(), cpu.state.references, atol=1e-2 * scale)
