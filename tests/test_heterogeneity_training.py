"""cryolab.heterogeneity.training and the train-vae / eval-vol commands.

Learning tests use the built-in adenylate kinase (open 4AKE, closed 1AKE) at 24³ and 3.5 Å,
images made by cryolab.projection with CTF and shifts: a homogeneous fit (zdim 0) must recover
the map, and a short fit with zdim 1 must separate the two states in latent space. The rest
are exact checks (resumption, checkpoints, preprocessing) on tiny networks.
"""

import json
import math

import numpy as np
import pytest
import torch

from cryolab.atoms import atoms_to_potential, builtin_model
from cryolab.cli import main as cli_main
from cryolab.errors import InputError
from cryolab.fourier import fourier_crop
from cryolab.heterogeneity import (HetModelConfig, HetVAE, ParticleData, checkpoint_path, find_checkpoint,
                                   generate_volumes, load_checkpoint, loss_terms, prepare_batch, save_checkpoint,
                                   train_vae)
from cryolab.io import read_mrc
from cryolab.projection import project_fourier
from cryolab.rotations import random_rotations
from cryolab.simulate import generator_for, sample_ctf_params
from cryolab.validate.fsc import fsc

BOX, PX = 24, 3.5


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the products here are small, and two threads on a busy machine are far slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def adk_maps():
    return [atoms_to_potential(builtin_model(name), BOX, PX) for name in ("adk_open", "adk_closed")]


def make_particles(maps, n, *, seed=0, two_states=False, snr=None, shift_sigma_A=2.0):
    """Images of the open map (or alternately open/closed) with uniform poses, CTF and shifts."""
    rot = random_rotations(n, generator=generator_for(seed, "poses"))
    ctf = sample_ctf_params(n, generator=generator_for(seed, "ctf"))
    shifts = torch.randn(n, 2, generator=generator_for(seed, "shifts")) * shift_sigma_A
    state = torch.arange(n) % 2 if two_states else torch.zeros(n, dtype=torch.long)
    images = torch.empty(n, BOX, BOX)
    for s in state.unique().tolist():
        sel = state == s
        images[sel] = project_fourier(maps[s], rot[sel], ctf=ctf[sel], shifts_A=shifts[sel], pixel_size_A=PX)
    if snr is not None:
        images += torch.randn(images.shape, generator=generator_for(seed, "noise")) * (images.var() / snr).sqrt()
    return ParticleData(images, rot, shifts, ctf, PX), state.numpy()


def small_config(zdim, width=16, layers=1, **kw):
    return HetModelConfig(BOX, PX, zdim=zdim, encoder_width=width, encoder_layers=layers, decoder_width=width,
                          decoder_layers=layers, **kw)


def test_homogeneous_fit_recovers_the_map(adk_maps):
    """zdim 0: a neural reconstruction from 400 noise-free CTF images, FSC with the true map."""
    data, _ = make_particles(adk_maps, 400, seed=1)
    # all Fourier points: without noise in the data, subsampling them only adds gradient noise
    result = train_vae(data, small_config(0, width=64, layers=2), epochs=6, batch_size=16, lr=5e-3, seed=0,
                       pixel_fraction=1.0, show_progress=False)
    assert result.z_mu.shape == (400, 0)
    volume = generate_volumes(result.model)[0]
    curve = fsc(volume, adk_maps[0])
    print("FSC (shells 0-12):", np.round(curve.numpy(), 3))
    assert float(curve[1:7].min()) > 0.9  # to 1/(14 Å), half of Nyquist
    assert float(curve[1:13].mean()) > 0.75
    assert result.history[-1]["reconstruction"] < 0.5 * result.history[0]["reconstruction"]


def test_two_states_separate_in_latent_space(adk_maps):
    """zdim 1, 400 noise-free images, half open, half closed: the latent separates them."""
    from sklearn.metrics import roc_auc_score

    data, state = make_particles(adk_maps, 400, seed=2, two_states=True)
    result = train_vae(data, small_config(1, width=64, layers=2), epochs=5, batch_size=16, lr=3e-3, seed=0,
                       pixel_fraction=1.0, show_progress=False)  # noise-free data: use every point
    auc = roc_auc_score(state, result.z_mu[:, 0])
    auc = max(auc, 1 - auc)
    print("state AUC", auc)
    assert auc >= 0.9
    # the maps at the two states' mean latents differ as the true maps do (the domain closure)
    means = np.stack([result.z_mu[state == s].mean(0) for s in (0, 1)])
    volumes = generate_volumes(result.model, means)
    change = fsc(volumes[0] - volumes[1], adk_maps[0] - adk_maps[1])
    print("FSC of the difference maps (shells 0-12):", np.round(change.numpy(), 3))
    assert float(change[1:4].min()) > 0.7  # the domain closure, to 1/(28 Å)


def test_resume_continues_exactly_like_an_uninterrupted_run(adk_maps, tmp_path):
    data, _ = make_particles(adk_maps, 48, seed=3, two_states=True, snr=1.0)
    config = small_config(2)
    straight = train_vae(data, config, epochs=3, batch_size=16, lr=1e-3, seed=5, checkpoint_dir=tmp_path / "a",
                         show_progress=False)
    train_vae(data, config, epochs=1, batch_size=16, lr=1e-3, seed=5, checkpoint_dir=tmp_path / "b", show_progress=False)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["epoch_001.pt"]
    resumed = train_vae(data, config, epochs=3, batch_size=16, lr=1e-3, seed=5, checkpoint_dir=tmp_path / "b",
                        resume_from=find_checkpoint(tmp_path / "b"), show_progress=False)
    assert np.array_equal(straight.z_mu, resumed.z_mu) and np.array_equal(straight.z_logvar, resumed.z_logvar)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    # a different seed gives a different run
    other = train_vae(data, config, epochs=1, batch_size=16, lr=1e-3, seed=6, show_progress=False)
    assert not np.array_equal(other.z_mu, train_vae(data, config, epochs=1, batch_size=16, lr=1e-3, seed=5,
                                                    show_progress=False).z_mu)


def test_checkpoint_round_trip_and_refusals(adk_maps, tmp_path):
    data, _ = make_particles(adk_maps, 32, seed=4)
    config = small_config(2, downsample=16)
    result = train_vae(data, config, epochs=1, batch_size=16, seed=0, checkpoint_dir=tmp_path, show_progress=False)
    path = checkpoint_path(tmp_path, 1)
    assert path.name == "epoch_001.pt" and path.is_file()
    model, loaded_config, epoch = load_checkpoint(path)
    assert loaded_config == config and epoch == 1
    assert float(model.data_scale) == float(result.model.data_scale) != 1.0
    z = torch.randn(2, 2)
    assert torch.equal(generate_volumes(model, z), generate_volumes(result.model, z))
    state = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "rng_state", "epoch", "config", "history"} <= set(state)

    other = small_config(3, downsample=16)
    with pytest.raises(InputError, match="another architecture.*zdim"):
        load_checkpoint(path, config=other)
    with pytest.raises(InputError, match="another architecture"):
        train_vae(data, other, epochs=2, resume_from=path, show_progress=False)
    with pytest.raises(InputError, match="no checkpoint for epoch 7"):
        find_checkpoint(tmp_path, 7)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a cryolab checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match="not a cryolab heterogeneity checkpoint"):
        load_checkpoint(foreign)
    tampered = tmp_path / "tampered.pt"
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("decoder.output")}
    torch.save(state, tampered)
    with pytest.raises(InputError, match="do not fit"):
        load_checkpoint(tampered)


def test_save_checkpoint_is_atomic_and_readable(tmp_path):
    model = HetVAE(small_config(1))
    path = save_checkpoint(tmp_path / "epoch_004.pt", model, None, epoch=4)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_004.pt"]
    assert load_checkpoint(path)[2] == 4


def test_prepare_batch_centres_crops_and_normalises(adk_maps):
    data, _ = make_particles(adk_maps, 8, seed=5, shift_sigma_A=4.0)
    centred = ParticleData(project_fourier(adk_maps[0], data.rotations, ctf=data.ctf, pixel_size_A=PX), data.rotations,
                           None, data.ctf, PX)
    model = HetVAE(small_config(2))
    model.data_scale.fill_(2.0)
    a, b = prepare_batch(model, data, np.arange(8)), prepare_batch(model, centred, np.arange(8))
    # undoing the shifts on the data reproduces the unshifted particles, except at the two Nyquist
    # points of the disc, where a real image keeps only the real part of a shift's phase factor
    inner = (model.disc_freqs.abs() < 0.5).all(dim=1)
    for part in ("target_re", "target_im"):
        x, y = getattr(a, part)[:, inner], getattr(b, part)[:, inner]
        assert torch.allclose(x, y, atol=1e-4 * float(y.abs().max())), part
    assert torch.corrcoef(torch.stack([a.encoder_images.flatten(), b.encoder_images.flatten()]))[0, 1] > 0.9999
    # without CTF, the encoder sees the Fourier-cropped image divided by data_scale
    plain = ParticleData(torch.randn(4, BOX, BOX), data.rotations[:4], None, None, PX)
    small = HetVAE(small_config(2, downsample=16))
    batch = prepare_batch(small, plain, np.arange(4))
    expected = fourier_crop(plain.images, 16, ndim=2)
    assert torch.allclose(batch.encoder_images, expected, atol=1e-5)
    # white noise of unit variance has unit mean power per coefficient in normalised units
    noise = ParticleData(torch.randn(200, BOX, BOX, generator=torch.Generator().manual_seed(0)),
                         random_rotations(200), None, None, PX)
    power = prepare_batch(model.requires_grad_(False), noise, np.arange(200))
    w = model.disc_weights
    mean_power = float(((power.target_re**2 + power.target_im**2) @ w).mean() / w.sum()) * 4.0  # data_scale² = 4
    assert mean_power == pytest.approx(1.0, rel=0.03)


def test_pixel_fraction_is_an_unbiased_estimate(adk_maps):
    data, _ = make_particles(adk_maps, 16, seed=6, snr=1.0)
    torch.manual_seed(0)
    model = HetVAE(small_config(2))
    batch = prepare_batch(model, data, np.arange(16))
    with torch.no_grad():
        full = float(loss_terms(model, batch, beta=0.0, sample=False).reconstruction.mean())
        g = torch.Generator().manual_seed(0)
        halves = [float(loss_terms(model, batch, beta=0.0, sample=False, generator=g, pixel_fraction=0.5).reconstruction.mean())
                  for _ in range(200)]
    assert np.mean(halves) == pytest.approx(full, rel=0.03)
    assert np.std(halves) > 0


def test_sample_fourier_points_keeps_low_frequencies_and_reports_probabilities():
    from cryolab.heterogeneity import disc_half_plane, sample_fourier_points

    freqs, _, _ = disc_half_plane(32)
    radius = torch.linalg.vector_norm(freqs, dim=-1)
    m = freqs.shape[0]
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(m)
    draws = 400
    for _ in range(draws):
        idx, prob = sample_fourier_points(32, 0.2, generator=g)
        assert idx.numel() == math.ceil(0.2 * m) == len(set(idx.tolist()))
        counts[idx] += 1
    always = prob == 1
    # the points taken every time are the lowest frequencies, and a quarter of the draw
    assert int(always.sum()) == int(0.25 * idx.numel())
    assert float(radius[idx[always]].max()) <= float(radius[idx[~always]].min())
    # each point is drawn as often as its reported probability says
    assert sorted(torch.nonzero(counts == draws).squeeze(-1).tolist()) == sorted(idx[always].tolist())
    rest = float(prob[~always][0])
    assert torch.allclose(prob[~always], torch.tensor(rest))
    assert float(counts[counts < draws].mean() / draws) == pytest.approx(rest, rel=0.02)
    idx, prob = sample_fourier_points(32, 1.0)
    assert torch.equal(idx, torch.arange(m)) and bool((prob == 1).all())
    with pytest.raises(InputError, match="pixel fraction"):
        sample_fourier_points(32, 0.0)


def test_bad_training_inputs(adk_maps):
    data, _ = make_particles(adk_maps, 8, seed=7)
    with pytest.raises(InputError, match="epochs"):
        train_vae(data, small_config(1), epochs=0, show_progress=False)
    with pytest.raises(InputError, match="32-pixel"):
        train_vae(data, HetModelConfig(32, PX, zdim=1), epochs=1, show_progress=False)
    with pytest.raises(InputError, match="pixel fraction"):
        train_vae(data, small_config(1), epochs=1, pixel_fraction=0.0, show_progress=False)
    with pytest.raises(InputError, match="zdim"):
        small_config(-1)
    bad = data.images.clone()
    bad[3, 2, 2] = float("nan")
    lazy = ParticleData(_LazyStack(bad.numpy()), data.rotations, None, None, PX)
    with pytest.raises(InputError, match="particle 4"):
        prepare_batch(HetVAE(small_config(1)), lazy, np.arange(8))


class _LazyStack:
    """Stands in for cryolab.io.ImageStack: numpy images read by index."""

    def __init__(self, array):
        self.array = np.asarray(array)
        self.shape = self.array.shape

    def __getitem__(self, idx):
        return self.array[idx]


# --------------------------------------------------------------------------------------------
# commands


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae_sim")
    assert cli_main(["simulate", "--states", "adk_open", "adk_closed", "-n", "48", "--box", str(BOX), "--pixel-size",
                     str(PX), "--snr", "1", "--seed", "0", "-o", str(folder / "sim")]) == 0
    # the same particles without CTF columns
    from cryolab.io import read_star, write_star

    table = read_star(folder / "sim" / "particles.star")
    table = table.drop(columns=[c for c in table.columns if c.startswith("rlnDefocus")])
    table["rlnImageName"] = [f"{name.split('@')[0]}@../sim/{name.split('@')[1]}" for name in table["rlnImageName"]]
    (folder / "noctf").mkdir()
    write_star(folder / "noctf" / "particles.star", table)
    return folder


TINY = ["--enc-dim", "16", "--enc-layers", "1", "--dec-dim", "16", "--dec-layers", "1", "--batch-size", "16", "--threads", "1"]


def test_train_vae_and_eval_vol_end_to_end(simulated, tmp_path):
    star = simulated / "sim" / "particles.star"
    out = tmp_path / "vae"
    assert cli_main(["train-vae", str(star), "--zdim", "2", "-n", "2", *TINY, "-o", str(out)]) == 0
    for name in ("z.npy", "z_logvar.npy", "z.epoch_001.npy", "z.epoch_002.npy", "config.json", "train_log.csv",
                 "learning_curve.png", "index.html", "run.json", "checkpoints/epoch_001.pt", "checkpoints/epoch_002.pt"):
        assert (out / name).is_file(), name
    assert np.load(out / "z.npy").shape == (48, 2)
    assert np.array_equal(np.load(out / "z.npy"), np.load(out / "z.epoch_002.npy"))
    settings = json.loads((out / "config.json").read_text())
    assert settings["model"]["zdim"] == 2 and settings["training"]["epochs"] == 2
    assert len((out / "train_log.csv").read_text().splitlines()) == 3

    # resume to epoch 3; then a different architecture is refused
    assert cli_main(["train-vae", str(star), "--zdim", "2", "-n", "3", *TINY, "--resume", "--preload", "-o", str(out)]) == 0
    assert (out / "z.epoch_003.npy").is_file() and (out / "checkpoints/epoch_003.pt").is_file()
    assert len((out / "train_log.csv").read_text().splitlines()) == 4
    wrong = TINY[:4] + ["--dec-dim", "32"] + TINY[6:]
    assert cli_main(["train-vae", str(star), "--zdim", "2", "-n", "4", *wrong, "--resume", "2", "-o", str(out)]) == 2
    assert cli_main(["train-vae", str(star), "--zdim", "2", "-n", "3", *TINY, "--resume", "-o", str(out)]) == 2

    maps = tmp_path / "maps"
    assert cli_main(["eval-vol", str(out / "checkpoints/epoch_003.pt"), "--z", "0,0", "--z=-1,1", "--threads", "1",
                     "-o", str(maps)]) == 0
    vols = [read_mrc(maps / f"vol_00{i}.mrc") for i in (0, 1)]
    assert all(v.data.shape == (BOX,) * 3 and v.pixel_size_A == pytest.approx(PX) for v in vols)
    assert not np.allclose(vols[0].data, vols[1].data)
    assert (maps / "volumes.png").is_file() and np.loadtxt(maps / "z_values.txt").shape == (2, 2)
    zfile = tmp_path / "z.txt"
    zfile.write_text("0 0\n0.5, 0.5\n")
    assert cli_main(["eval-vol", str(out / "checkpoints/epoch_003.pt"), "--z-file", str(zfile), "--box", "32",
                     "-o", str(tmp_path / "big")]) == 0
    big = read_mrc(tmp_path / "big" / "vol_001.mrc")
    assert big.data.shape == (32,) * 3 and big.pixel_size_A == pytest.approx(PX * BOX / 32)


def test_command_errors_exit_2(simulated, tmp_path, capsys):
    star = simulated / "sim" / "particles.star"
    assert cli_main(["train-vae", str(star), "--zdim", "-1", *TINY, "-o", str(tmp_path / "a")]) == 2
    assert not (tmp_path / "a").exists()
    stack = next((simulated / "sim").glob("particles_*.mrcs"))
    assert cli_main(["train-vae", str(stack), "--zdim", "1", *TINY, "-o", str(tmp_path / "b")]) == 2
    assert "no poses" in capsys.readouterr().err
    noctf = simulated / "noctf" / "particles.star"
    assert cli_main(["train-vae", str(noctf), "--zdim", "1", *TINY, "-o", str(tmp_path / "c")]) == 2
    assert "CTF" in capsys.readouterr().err
    assert cli_main(["train-vae", str(noctf), "--zdim", "1", "--no-ctf", "-n", "1", *TINY, "-o", str(tmp_path / "d")]) == 0
    assert cli_main(["train-vae", str(star), "--zdim", "1", "--resume", *TINY, "-o", str(tmp_path / "e")]) == 2
    assert cli_main(["train-vae", str(star), "--zdim", "1", "--pixel-fraction", "0", *TINY, "-o", str(tmp_path / "e")]) == 2

    ckpt = tmp_path / "d" / "checkpoints" / "epoch_001.pt"
    zfile = tmp_path / "z.npy"
    np.save(zfile, np.zeros((3, 2)))
    assert cli_main(["eval-vol", str(ckpt), "--z-file", str(zfile), "-o", str(tmp_path / "f")]) == 2
    assert "expected (M, 1)" in capsys.readouterr().err
    assert cli_main(["eval-vol", str(ckpt), "--z", "0.1,0.2", "-o", str(tmp_path / "g")]) == 2
    assert cli_main(["eval-vol", str(ckpt), "-o", str(tmp_path / "h")]) == 2
    assert cli_main(["eval-vol", str(tmp_path / "z.npy"), "--z", "0", "-o", str(tmp_path / "i")]) == 2
    for name in "fghi":
        assert not (tmp_path / name).exists()
