"""cryolab.simulate.dataset: the forward model against the projector, padded CTF, streaming, seeds, STAR."""

import filecmp
import json
import os
import shutil
import subprocess

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from cryolab.ctf import CTFParams
from cryolab.io import read_star
from cryolab.projection import project_fourier
from cryolab.rotations import relion_euler_to_matrix
from cryolab.simulate import (GaussianNoise, ParticleParameters, PoissonNoise, apply_ctf_padded, clean_images,
                              generator_for, particle_seeds, particle_table, prepare_maps, sample_ctf_params,
                              sample_discrete_states, sample_shifts, simulate_images, trajectory_assignment,
                              uniform_poses, write_dataset)
from test_simulate_noise import blob_volume


def make_particles(n, seed=0, *, ctf=True, shift_sigma_A=3.0, maps=None, **ctf_kwargs):
    return ParticleParameters(
        uniform_poses(n, generator=generator_for(seed, "poses")),
        sample_shifts(n, sigma_A=shift_sigma_A, generator=generator_for(seed, "shifts")),
        sample_ctf_params(n, astigmatism_max_A=800, generator=generator_for(seed, "ctf"), **ctf_kwargs) if ctf else None,
        maps,
    )


def test_clean_image_equals_project_fourier_with_the_ctf():
    vol, px = blob_volume(), 2.0
    particles = make_particles(12)
    ours = clean_images(prepare_maps(vol), particles, 32, px, ctf_pad_factor=1)
    reference = project_fourier(vol, relion_euler_to_matrix(particles.euler_deg), shifts_A=particles.shifts_A,
                                pixel_size_A=px, ctf=particles.ctf)
    scale = float(reference.abs().max())
    assert float((ours - reference).abs().max()) < 1e-5 * scale
    # without shift and CTF, the plain projection
    plain = clean_images(prepare_maps(vol), make_particles(12, ctf=False, shift_sigma_A=None), 32, px)
    assert torch.allclose(plain, project_fourier(vol, relion_euler_to_matrix(particles.euler_deg)), atol=1e-5 * scale)


def test_ctf_on_padded_canvas_differs_at_high_defocus_and_not_for_a_flat_ctf():
    vol, px = blob_volume(), 2.0
    particles = make_particles(6, ctf=False, shift_sigma_A=None)
    images = clean_images(prepare_maps(vol), particles, 32, px)
    far = CTFParams(defocus_u_A=torch.full((6,), 50000.0), defocus_v_A=torch.full((6,), 50000.0), defocus_angle_deg=0.0)
    unpadded = apply_ctf_padded(images, far, px, pad_factor=1)
    padded = apply_ctf_padded(images, far, px, pad_factor=2)
    rel = float((padded - unpadded).norm() / unpadded.norm())
    assert rel > 0.1  # 5 µm delocalises by ~250 Å ≫ the 64 Å box: wrapped signal is not the same
    # a flat CTF (Q0 = 1, no defocus, no Cs: CTF ≡ sin(π/2) = 1) leaves the padding invisible
    flat = CTFParams(defocus_u_A=0.0, defocus_v_A=0.0, defocus_angle_deg=0.0, cs_mm=0.0, amplitude_contrast=1.0)
    for pad in (1, 2, 3):
        out = apply_ctf_padded(images, flat, px, pad_factor=pad)
        assert torch.allclose(out, images, atol=1e-5 * float(images.abs().max()))


@pytest.mark.parametrize("n, pad", [(32, 2), (33, 2), (32, 1.5), (31, 3), (32, 1)])
def test_padded_ctf_is_the_canvas_recipe(n, pad):
    """apply_ctf_padded (image in the canvas' corner, no centring shifts: they commute with the
    filter) equals its documented recipe crop_N(irfft_centered(CTF_M · ramp · rfft_centered(pad_M)))."""
    from cryolab.ctf import ctf_2d
    from cryolab.fourier import crop_center, irfft_centered, pad_center, rfft_centered
    from cryolab.projection import apply_shifts_rfft

    gen = torch.Generator().manual_seed(n)
    images = torch.randn(5, n, n, generator=gen)
    ctf = sample_ctf_params(5, astigmatism_max_A=500, generator=gen)
    shifts = torch.randn(5, 2, generator=gen) * 3
    m = max(n, int(round(pad * n)))
    spectrum = rfft_centered(pad_center(images, (m, m)), 2)
    spectrum = apply_shifts_rfft(spectrum, shifts, 1.3) * ctf_2d(ctf, (m, m), 1.3)
    expected = crop_center(irfft_centered(spectrum, (m, m)), (n, n))
    ours = apply_ctf_padded(images, ctf, 1.3, pad_factor=pad, shifts_A=shifts)
    assert ours.shape == (5, n, n)
    assert float((ours - expected).abs().max()) < 1e-5 * float(expected.abs().max())


def _write(tmp_path, name, *, batch_size, seed=3, noise=GaussianNoise(0.2, mask_radius_A=24.0), n=45, **kw):
    particles = make_particles(n, seed=1)
    return write_dataset(blob_volume(), particles, tmp_path / name, 2.0, noise=noise, seed=seed, batch_size=batch_size,
                         stack_size=20, show_progress=False, **kw)


def test_same_seed_gives_bit_identical_files_whatever_the_batch_size_and_workers(tmp_path, monkeypatch):
    import cryolab.simulate.dataset as dataset

    monkeypatch.setattr(dataset, "BLOCK_PIXELS", 8 * 32 * 32)  # blocks of 8 images: several batches
    assert dataset.block_size(32) == 8
    a = _write(tmp_path, "a", batch_size=16, workers=1, write_clean=True)
    _write(tmp_path, "b", batch_size=8, workers=3, write_clean=True)  # 6 batches on 3 threads
    _write(tmp_path, "c", batch_size=500, write_clean=True)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["clean_00001.mrcs", "clean_00002.mrcs", "clean_00003.mrcs", "particles.star",
                     "particles_00001.mrcs", "particles_00002.mrcs", "particles_00003.mrcs", "simulation.json"]
    for name in names:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "c" / name, shallow=False), name
    d = _write(tmp_path, "d", batch_size=64, seed=4)
    assert not filecmp.cmp(a.stack_paths[0], d.stack_paths[0], shallow=False)
    # the in-memory simulation gives the same images
    _, noisy = simulate_images(blob_volume(), make_particles(45, seed=1), 2.0, noise=GaussianNoise(0.2, 24.0), seed=3)
    with mrcfile.open(a.stack_paths[0]) as m:
        assert np.array_equal(m.data, noisy[:20].numpy())
    assert len(set(particle_seeds(3, np.arange(1000)).tolist())) == 1000


@pytest.mark.parametrize("pad", [1, 2])
def test_compiled_kernels_match_the_torch_path(tmp_path, monkeypatch, pad):
    """The numba kernels (CTF sine, ramp × CTF product, stack statistics) and the torch code they
    replace (CRYOLAB_NUMBA=0) give the same images and headers, to float32 rounding."""
    pytest.importorskip("numba")
    from cryolab.ctf import ctf_2d
    from cryolab.simulate._compiled import compiled_enabled

    particles = make_particles(20, seed=5, defocus_min_A=5000, defocus_max_A=40000)
    runs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("CRYOLAB_NUMBA", flag)
        assert compiled_enabled() == (flag == "1")
        ctf = ctf_2d(particles.ctf, (48, 48), 0.9)
        result = write_dataset(blob_volume(), particles, tmp_path / flag, 2.0, noise=None, ctf_pad_factor=pad,
                               workers=2, batch_size=8, show_progress=False)
        with mrcfile.open(result.stack_paths[0]) as m:
            runs[flag] = (ctf, m.data.copy(), m.header.copy())
    reference_ctf = ctf_2d(particles.ctf.to(torch.float64), (48, 48), 0.9)
    for ctf in (runs["1"][0], runs["0"][0]):
        assert ctf.dtype == torch.float32 and float((ctf.double() - reference_ctf).abs().max()) < 2e-7
    fast, slow = runs["1"][1], runs["0"][1]
    assert np.abs(fast - slow).max() < 1e-5 * np.abs(slow).max()
    for key in ("dmin", "dmax", "dmean", "rms"):
        assert float(runs["1"][2][key]) == pytest.approx(float(runs["0"][2][key]), rel=1e-5, abs=1e-6 * float(np.abs(slow).max()))


def _takes_direct_writes(folder) -> bool:
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        os.close(os.open(folder / "probe", os.O_RDWR | os.O_CREAT | os.O_DIRECT))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("noise", [None, GaussianNoise(0.5), PoissonNoise(30.0, 0.002)])
def test_direct_writes_give_the_same_files(tmp_path, monkeypatch, noise):
    """Frames written to the disk directly (O_DIRECT, where the file system takes it) and through
    the page cache (CRYOLAB_DIRECT_IO=0) make the same files, header page included."""
    import cryolab.simulate.dataset as dataset

    used = []
    original = dataset._StackWriter._write_frames

    def spy(self, fd, direct_fd, block, offset):
        original(self, fd, direct_fd, block, offset)
        used.append(self.direct and direct_fd is not None)

    monkeypatch.setattr(dataset._StackWriter, "_write_frames", spy)
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("CRYOLAB_DIRECT_IO", flag)
        used.clear()
        results[flag] = _write(tmp_path, f"d{flag}", batch_size=16, workers=2, noise=noise, write_clean=True)
        if flag == "0":
            assert not any(used)
        elif _takes_direct_writes(tmp_path) and noise is None:
            assert all(used)  # (the comparison below is not the page cache against itself)
    for a, b in zip(results["1"].stack_paths + results["1"].clean_stack_paths,
                    results["0"].stack_paths + results["0"].clean_stack_paths):
        assert filecmp.cmp(a, b, shallow=False), a.name
        assert mrcfile.validate(str(a), print_file=open(os.devnull, "w"))


def test_streamed_stacks_have_correct_headers(tmp_path):
    result = _write(tmp_path, "s", batch_size=32, noise=PoissonNoise(30.0, 0.002, mtf="sinc"))
    data = []
    for path, count in zip(result.stack_paths, (20, 20, 5)):
        assert mrcfile.validate(str(path), print_file=open(os.devnull, "w"))
        with mrcfile.open(path) as m:
            assert m.data.shape == (count, 32, 32) and m.is_image_stack()
            assert m.voxel_size.x == pytest.approx(2.0)
            d = m.data.astype(np.float64)
            assert m.header.dmin == pytest.approx(d.min()) and m.header.dmax == pytest.approx(d.max())
            assert m.header.dmean == pytest.approx(d.mean(), abs=1e-6)
            assert m.header.rms == pytest.approx(d.std(), rel=1e-5)
            data.append(d)
    noisy = np.concatenate(data)
    assert noisy.std() == pytest.approx(1.0, rel=0.05)  # normalised counting noise
    assert result.metadata["noise"]["model"] == "poisson" and result.metadata["noise"]["mtf"] == "sinc"
    assert not list((tmp_path / "s").glob(".*"))  # no temporary files left


def test_star_file_opens_with_starfile_and_has_the_columns(tmp_path):
    result = _write(tmp_path, "t", batch_size=32)
    blocks = starfile.read(result.star_path, always_dict=True)
    optics, particles = blocks["optics"], blocks["particles"]
    assert optics["rlnImagePixelSize"].tolist() == [2.0] and optics["rlnImageSize"].tolist() == [32]
    for column in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnOpticsGroup"):
        assert column in optics.columns
    for column in ("rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
                   "rlnOriginYAngst", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnRandomSubset"):
        assert column in particles.columns
    assert len(particles) == 45
    assert particles["rlnImageName"].iloc[0] == "000001@particles_00001.mrcs"
    assert particles["rlnImageName"].iloc[44] == "000005@particles_00003.mrcs"
    assert sorted(set(particles["rlnRandomSubset"])) == [1, 2]
    assert "# version 30001" in result.star_path.read_text()
    table = read_star(result.star_path)
    truth = make_particles(45, seed=1)
    assert np.allclose(table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(), truth.euler_deg.numpy(), atol=1e-4)
    assert np.allclose(table["rlnDefocusU"].to_numpy(), truth.ctf.defocus_u_A.numpy(), rtol=1e-6)
    assert (table["rlnDefocusU"] >= table["rlnDefocusV"]).all()
    meta = json.loads((tmp_path / "t" / "simulation.json").read_text())
    assert meta["noise"]["signal_mask"] == "circle radius 24 A about the box centre"
    assert meta["noise"]["snr"] == 0.2 and meta["seed"] == 3


def test_discrete_states_and_trajectory_images(tmp_path):
    maps = [blob_volume(), blob_volume(offsets=((0, 0, 0), (-6, 2, 0))), blob_volume(offsets=((3, 3, 3),))]
    n, px = 40, 2.0
    tables = prepare_maps(maps)
    states = sample_discrete_states(n, [1, 1, 2], generator=generator_for(0, "states"))
    clean = clean_images(tables, make_particles(n, maps=states), 32, px)
    # the same poses, shifts and CTFs, every particle from map k
    per_map = torch.stack([clean_images(tables[k:k + 1], make_particles(n), 32, px) for k in range(3)])
    scale = float(per_map.abs().max())
    assert torch.allclose(clean, per_map[states.state, torch.arange(n)], atol=1e-5 * scale)
    result = write_dataset(maps, make_particles(n, maps=states), tmp_path / "h", px, show_progress=False)
    assert result.table["cryolabState"].tolist() == (states.state + 1).tolist()
    assert "cryolabLatent" not in result.table.columns

    latent = torch.linspace(0, 1, n)
    blend = trajectory_assignment(latent, 3, interpolation="linear")
    clean = clean_images(tables, make_particles(n, maps=blend), 32, px)
    rows = torch.arange(n)
    expected = sum(blend.map_weights[:, j, None, None] * per_map[blend.map_indices[:, j], rows] for j in range(2))
    assert torch.allclose(clean, expected, atol=1e-5 * scale)
    table = particle_table(make_particles(n, maps=blend), pixel_size_A=px, box_size=32, image_names=["x"] * n)
    assert np.allclose(table["cryolabLatent"], latent.numpy()) and set(table["cryolabState"]) == {1, 2, 3}


def _fsc(a, b):
    from cryolab.fourier.shells import shell_index

    fa, fb = torch.fft.rfftn(a.double()), torch.fft.rfftn(b.double())
    s = shell_index(a.shape).reshape(-1)
    n = int(s.max()) + 1

    def total(x):
        return torch.zeros(n, dtype=torch.float64).index_add_(0, s, x.reshape(-1))

    return (total((fa * fb.conj()).real) / torch.sqrt(total(fa.abs() ** 2) * total(fb.abs() ** 2)))[: a.shape[-1] // 2 + 1]


@pytest.mark.skipif(shutil.which("relion_reconstruct") is None, reason="relion_reconstruct not installed")
def test_relion_reconstruct_of_noise_free_particles_gives_back_the_map(tmp_path):
    from cryolab.atoms import atoms_to_potential, builtin_model

    box, px, n = 32, 3.0, 1500
    vol = atoms_to_potential(builtin_model("adk_open"), box, px)
    particles = make_particles(n, seed=7, defocus_min_A=5000, defocus_max_A=20000)
    write_dataset(vol, particles, tmp_path, px, noise=None, ctf_pad_factor=1, show_progress=False)
    subprocess.run(["relion_reconstruct", "--i", "particles.star", "--o", "rec.mrc", "--ctf"], cwd=tmp_path,
                   check=True, capture_output=True)
    with mrcfile.open(tmp_path / "rec.mrc") as m:
        rec = torch.from_numpy(m.data.copy())
    corr = float(np.corrcoef(vol.numpy().ravel(), rec.numpy().ravel())[0, 1])
    fsc = _fsc(vol, rec)
    print(f"relion_reconstruct: correlation {corr:.4f}, FSC min to 3/4 Nyquist {float(fsc[1: 3 * box // 8 + 1].min()):.4f}, "
          f"FSC at Nyquist {float(fsc[-1]):.4f}")
    # measured: correlation 0.963 (lowered by the model's power beyond the Nyquist sphere, which no
    # projector keeps), FSC >= 0.999 to 3/4 Nyquist, 0.93 at Nyquist
    assert corr > 0.95
    assert float(fsc[1: 3 * box // 8 + 1].min()) > 0.99
    assert float(fsc[1:].min()) > 0.8
