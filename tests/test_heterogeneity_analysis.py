"""Latent-space analysis (cryolab.heterogeneity.analysis/traversal/selection/movies) and the
analyze / traverse / select commands, on synthetic latents whose structure is known."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import adjusted_rand_score

import cryolab.cli as cli
from cryolab.errors import InputError
from cryolab.heterogeneity.analysis import (fit_latent_pca, gmm_latent, kmeans_latent, nearest_particles, pca_project,
                                            pca_to_latent, read_latents, read_training_latents, umap_embedding)
from cryolab.heterogeneity.movies import frames_to_uint8, mp4_available, trajectory_frames, write_movie
from cryolab.heterogeneity.selection import (invert_selection, latent_outlier_scores, parse_polygon, read_index_file,
                                             select_clusters, select_in_polygon, select_outliers, subset_table,
                                             write_index_file)
from cryolab.heterogeneity.traversal import (DEFAULT_PERCENTILES, graph_path, knn_graph, linear_trajectory, pc_trajectory,
                                             resample_path, volumes_along)
from cryolab.io import read_mrc, read_star, write_star

ZDIM = 8


def random_rotation(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture(scope="module")
def two_clusters():
    """Two Gaussian clusters in 8D, 4σ apart along a random direction; labels 0/1."""
    rng = np.random.default_rng(1)
    n = 400
    labels = (np.arange(n) >= n // 2).astype(int)
    direction = rng.normal(size=ZDIM)
    direction /= np.linalg.norm(direction)
    z = rng.normal(size=(n, ZDIM)) + np.where(labels[:, None] == 1, 3.0, -3.0) * direction
    return z.astype(np.float32), labels


@pytest.fixture(scope="module")
def curve():
    """Points on a gently bent 1D curve embedded in 8D (random rotation); t ∈ [0, 1] is the truth."""
    rng = np.random.default_rng(2)
    t = (np.arange(300) + rng.uniform(0, 1, 300)) / 300  # stratified: no gap wider than 2/300
    local = np.zeros((len(t), ZDIM))
    local[:, 0] = 4 * t
    local[:, 1] = 0.8 * np.sin(np.pi * t)
    local[:, 2] = 0.3 * np.cos(2 * np.pi * t)
    local += 1e-3 * rng.normal(size=local.shape)
    perm = rng.permutation(len(t))  # particles in arbitrary order
    z = local[perm] @ random_rotation(ZDIM, rng).T + rng.normal(size=ZDIM)
    return z.astype(np.float32), t[perm]


# ---------------------------------------------------------------------------------------------
# embeddings and clustering


def test_pca_round_trip_and_first_axis_follows_the_curve(curve):
    z, t = curve
    pca = fit_latent_pca(z)
    coords = pca_project(z, pca)
    assert coords.shape == (len(z), ZDIM) and coords.dtype == torch.float32
    assert torch.allclose(pca_to_latent(coords, pca), torch.as_tensor(z), atol=1e-4)
    assert abs(spearmanr(coords[:, 0], t).correlation) > 0.99
    assert float(pca.explained_variance_ratio[0]) > 0.8
    assert torch.all(pca.explained_variance[:-1] >= pca.explained_variance[1:])


def test_kmeans_and_gmm_recover_two_clusters(two_clusters):
    z, truth = two_clusters
    km = kmeans_latent(z, 2, seed=0)
    assert adjusted_rand_score(truth, km.labels.numpy()) >= 0.95
    gmm = gmm_latent(z, 2, seed=0)
    assert adjusted_rand_score(truth, gmm.labels.numpy()) >= 0.95
    assert torch.allclose(gmm.probabilities.sum(1), torch.ones(len(z)), atol=1e-5)
    assert torch.equal(gmm.labels, gmm.probabilities.argmax(1))
    # each centre's particle is the one nearest the centre (brute force)
    for result in (km, gmm):
        d = np.linalg.norm(z[:, None, :] - result.centers.numpy()[None], axis=-1)
        assert np.array_equal(result.center_particles.numpy(), d.argmin(0))
        # and it belongs to its own cluster
        assert np.array_equal(result.labels.numpy()[result.center_particles.numpy()], np.arange(2))


def test_kmeans_numbers_clusters_along_the_landscape(curve):
    z, t = curve
    km = kmeans_latent(z, 6, seed=0)
    t_centres = t[km.center_particles.numpy()]
    steps = np.diff(t_centres)
    assert np.all(steps > 0) or np.all(steps < 0), t_centres
    assert torch.equal(kmeans_latent(z, 6, seed=0).labels, km.labels)  # seeded


def test_nearest_particles_matches_brute_force_across_chunks():
    rng = np.random.default_rng(3)
    z, points = rng.normal(size=(1000, 3)), rng.normal(size=(7, 3))
    expected = np.linalg.norm(z[None] - points[:, None], axis=-1).argmin(1)
    assert np.array_equal(nearest_particles(z, points, chunk=128).numpy(), expected)


def test_umap_is_seeded_and_separates_clusters(two_clusters):
    z, truth = two_clusters
    a = umap_embedding(z, seed=3, n_epochs=100)
    b = umap_embedding(z, seed=3, n_epochs=100)
    assert a.shape == (len(z), 2)
    assert torch.equal(a, b)
    assert adjusted_rand_score(truth, kmeans_latent(a, 2).labels.numpy()) >= 0.95


def test_read_latents_checks_shape_count_and_reads_cryodrgn_pickles(tmp_path):
    z = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    assert np.array_equal(read_latents(tmp_path / "z.npy", n_particles=20), z)
    with pytest.raises(InputError, match="20 latent rows but 21 particles"):
        read_latents(tmp_path / "z.npy", n_particles=21)
    with open(tmp_path / "z.pkl", "wb") as fh:
        pickle.dump(z, fh)
    assert np.array_equal(read_latents(tmp_path / "z.pkl"), z)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match="shape"):
        read_latents(tmp_path / "bad.npy")
    bad = z.copy()
    bad[5, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError, match="particle 5"):
        read_latents(tmp_path / "nan.npy")


# ---------------------------------------------------------------------------------------------
# trajectories


def test_pc_trajectory_calls_volume_fn_with_the_latents_at_percentiles(curve):
    z, _ = curve
    pca = fit_latent_pca(z)
    z_path, values = pc_trajectory(z, pca, 1, percentiles=DEFAULT_PERCENTILES)
    coords = pca_project(z, pca).double().numpy()
    assert np.allclose(values, np.percentile(coords[:, 1], DEFAULT_PERCENTILES), atol=1e-5)
    expected = pca.mean.double() + torch.as_tensor(values, dtype=torch.float64)[:, None] * pca.components[1].double()
    assert torch.allclose(z_path.double(), expected, atol=1e-5)

    calls = []

    def volume_fn(batch):
        calls.append(batch.clone())
        return batch[:, :1, None, None].expand(-1, 4, 4, 4) * torch.ones(4, 4, 4)

    vols = volumes_along(volume_fn, z_path, batch_size=3)
    assert [len(c) for c in calls] == [3, 3, 3, 1]
    assert torch.allclose(torch.cat(calls), z_path)
    assert vols.shape == (10, 4, 4, 4)
    assert torch.allclose(vols[:, 0, 0, 0], z_path[:, 0])
    with pytest.raises(InputError, match="principal component 9"):
        pc_trajectory(z, pca, 8)
    with pytest.raises(InputError, match="volume_fn returned"):
        volumes_along(lambda b: torch.zeros(len(b), 4, 4), z_path)


def test_graph_path_between_curve_ends_follows_the_curve(curve):
    z, t = curve
    start, end = int(np.argmin(t)), int(np.argmax(t))
    path = graph_path(z, [start, end], n_neighbors=10)
    t_path = t[path.indices.numpy()]
    assert path.indices[0] == start and path.indices[-1] == end
    assert np.all(np.diff(t_path) > 0), "the path steps backwards along the curve"
    assert len(path.indices) > 10  # through the particles, not one jump
    assert torch.all(path.cumulative_distance[1:] >= path.cumulative_distance[:-1])
    # via an intermediate particle: the path passes it
    middle = int(np.argmin(np.abs(t - 0.5)))
    via = graph_path(z, [start, middle, end])
    assert middle in via.indices.tolist()
    picks = resample_path(path.cumulative_distance, 5)
    assert picks[0] == 0 and picks[-1] == len(path.indices) - 1 and torch.all(picks[1:] >= picks[:-1])


def test_knn_graph_is_symmetric_and_disconnected_anchors_are_an_input_error(two_clusters):
    z, truth = two_clusters
    g = knn_graph(z, n_neighbors=5)
    assert (g != g.T).nnz == 0 and g.diagonal().sum() == 0
    far = z.copy()
    far[truth == 1] += 100.0
    with pytest.raises(InputError, match="not connected"):
        graph_path(far, [0, len(z) - 1], n_neighbors=3)
    with pytest.raises(InputError, match="out of range"):
        graph_path(z, [0, len(z)])


def test_linear_trajectory_ends_and_spacing():
    line = linear_trajectory([0, 0], [1, 2], 5)
    assert torch.allclose(line[[0, -1]], torch.tensor([[0.0, 0.0], [1.0, 2.0]]))
    assert torch.allclose(line[:, 0], torch.linspace(0, 1, 5))


# ---------------------------------------------------------------------------------------------
# selection


def test_polygon_selects_exactly_the_points_inside():
    rng = np.random.default_rng(4)
    coords = rng.uniform(-5, 5, size=(2000, 2))
    polygon = parse_polygon("-1,-2 3,-2 3,1 -1,1")
    inside = (coords[:, 0] > -1) & (coords[:, 0] < 3) & (coords[:, 1] > -2) & (coords[:, 1] < 1)
    assert np.array_equal(select_in_polygon(coords, polygon).numpy(), np.flatnonzero(inside))
    triangle = parse_polygon("0,0 4,0 0,4")
    in_triangle = (coords[:, 0] > 0) & (coords[:, 1] > 0) & (coords.sum(1) < 4)
    assert np.array_equal(select_in_polygon(coords, triangle).numpy(), np.flatnonzero(in_triangle))
    with pytest.raises(InputError, match="contains no particles; the embedding spans"):
        select_in_polygon(coords, parse_polygon("10,10 12,10 12,12"))
    for bad in ("1,2 3,4", "1,2 3;4 5,6 x,y"):
        with pytest.raises(InputError):
            parse_polygon(bad)


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_outlier_selection_flags_injected_junk(method):
    rng = np.random.default_rng(5)
    good = rng.normal(size=(500, ZDIM)) * np.linspace(0.5, 2, ZDIM)
    directions = rng.normal(size=(10, ZDIM))
    junk = 8 * directions / np.linalg.norm(directions, axis=1, keepdims=True) * 2
    z = np.vstack([good, junk])
    flagged = select_outliers(z, 10 / len(z), method=method)
    assert flagged.tolist() == list(range(500, 510))
    scores = latent_outlier_scores(z, method=method)
    assert scores[500:].min() > scores[:500].max()


def test_cluster_selection_and_unknown_ids():
    labels = np.array([0, 1, 2, 1, 0, 2, 2])
    assert select_clusters(labels, [2, 0]).tolist() == [0, 2, 4, 5, 6]
    with pytest.raises(InputError, match="unknown cluster id.*5"):
        select_clusters(labels, [1, 5])
    assert invert_selection([0, 2], 4).tolist() == [1, 3]


def test_star_subset_round_trip_keeps_columns_and_image_names(tmp_path):
    table = _particle_table(12)
    write_star(tmp_path / "particles.star", table)
    original = read_star(tmp_path / "particles.star")
    chosen = [1, 4, 5, 11]
    write_star(tmp_path / "subset.star", subset_table(original, chosen))
    back = read_star(tmp_path / "subset.star")
    assert list(back.columns) == list(original.columns)
    assert back["rlnImageName"].tolist() == original["rlnImageName"].iloc[chosen].tolist()
    pd.testing.assert_frame_equal(back, original.iloc[chosen].reset_index(drop=True), check_dtype=False)
    for suffix in (".txt", ".npy"):
        write_index_file(tmp_path / f"idx{suffix}", chosen)
        assert read_index_file(tmp_path / f"idx{suffix}", n_particles=12).tolist() == chosen
    with pytest.raises(InputError, match="0…4"):
        read_index_file(tmp_path / "idx.txt", n_particles=5)


# ---------------------------------------------------------------------------------------------
# movies


def _moving_blob_volumes(m, n=16):
    axis = torch.arange(n) - n // 2
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([torch.exp(-((xx - s) ** 2 + yy**2 + zz**2) / 4.0) for s in torch.linspace(-3, 3, m)])


def test_movie_has_one_frame_per_map(tmp_path):
    vols = _moving_blob_volumes(6)
    frames = trajectory_frames(vols, kind="projection")
    assert frames.shape == (6, 3, 16, 16)
    # the blob moves along x: the z-view projection's centre of mass moves right, the x-view's stays
    x = torch.arange(16.0) - 8
    com = (frames[:, 0].sum(1) * x).sum(-1) / frames[:, 0].sum((1, 2))
    assert torch.all(torch.diff(com) > 0)
    slices = trajectory_frames(vols, kind="slice")
    assert slices.shape == (6, 3, 16, 16) and torch.allclose(slices[:, 0], vols[:, 8])
    images = frames_to_uint8(frames)
    assert images.dtype == np.uint8 and images.shape[0] == 6 and images.shape[1] >= 128
    import imageio.v3 as iio

    assert write_movie(tmp_path / "t.gif", images, fps=4) == 6
    assert iio.imread(tmp_path / "t.gif", index=None).shape[0] == 6
    assert write_movie(tmp_path / "b.gif", images, bounce=True) == 10
    assert iio.imread(tmp_path / "b.gif", index=None).shape[0] == 10
    # identical maps still give distinct frames (the position bar), so none is merged
    still = frames_to_uint8(trajectory_frames(vols[:1].expand(4, -1, -1, -1)))
    assert write_movie(tmp_path / "s.gif", still) == 4 and iio.imread(tmp_path / "s.gif", index=None).shape[0] == 4
    if mp4_available():
        assert write_movie(tmp_path / "t.mp4", images) == 6
    else:
        with pytest.raises(InputError, match="imageio-ffmpeg"):
            write_movie(tmp_path / "t.mp4", images)


# ---------------------------------------------------------------------------------------------
# command line


def _particle_table(n):
    rng = np.random.default_rng(6)
    return pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@stack_{i // 50:03d}.mrcs" for i in range(n)],
        "rlnAngleRot": rng.uniform(-180, 180, n), "rlnAngleTilt": rng.uniform(0, 180, n),
        "rlnAnglePsi": rng.uniform(-180, 180, n), "rlnOriginXAngst": rng.normal(size=n),
        "rlnOriginYAngst": rng.normal(size=n), "rlnDefocusU": rng.uniform(1e4, 2e4, n),
        "rlnDefocusV": rng.uniform(1e4, 2e4, n), "rlnDefocusAngle": rng.uniform(0, 180, n),
        "rlnVoltage": 300.0, "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1,
        "rlnImagePixelSize": 3.0, "rlnImageSize": 16, "rlnOpticsGroup": 1,
        "myLabTag": [f"tag{i}" for i in range(n)],
    })


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory, two_clusters):
    """A fake cryolab train-vae folder: z.npy (two clusters, zdim 8), config.json, a tiny checkpoint."""
    from cryolab.heterogeneity import HetModelConfig, HetVAE, save_checkpoint

    folder = tmp_path_factory.mktemp("vae")
    z, _ = two_clusters
    np.save(folder / "z.npy", z)
    np.save(folder / "z.epoch_001.npy", z)
    np.save(folder / "z_logvar.npy", np.full_like(z, -2.0))
    config = HetModelConfig(box_size=16, pixel_size_A=3.0, zdim=ZDIM, encoder_layers=1, encoder_width=16,
                            decoder_layers=1, decoder_width=16)
    torch.manual_seed(0)
    model = HetVAE(config)
    save_checkpoint(folder / "checkpoints" / "epoch_001.pt", model, None, epoch=1)
    (folder / "config.json").write_text(json.dumps({"model": config.to_dict(), "training": {"n_particles": len(z), "epochs": 1}}))
    write_star(folder / "particles.star", _particle_table(len(z)))
    return folder


def test_analyze_writes_embeddings_clusters_and_maps(train_dir, tmp_path, two_clusters):
    out = tmp_path / "analyze"
    assert cli.main(["analyze", str(train_dir), "--ksample", "3", "--pc", "2", "--percentiles", "10", "50", "90", "-o", str(out)]) == 0
    z, truth = two_clusters
    for name in ("pca.npy", "umap.npy", "pca.png", "pca_hexbin.png", "pca_marginals.png", "umap.png", "umap_hexbin.png",
                 "umap_marginals.png", "explained_variance.png", "index.html", "run.json", "kmeans3/labels.npy",
                 "kmeans3/pca.png", "kmeans3/umap.png", "kmeans3/volumes.png", "pc1/volumes.png", "pc2/z_values.txt"):
        assert (out / name).is_file(), name
    assert np.load(out / "umap.npy").shape == (len(z), 2)
    labels = np.load(out / "kmeans3/labels.npy")
    assert labels.shape == (len(z),) and set(labels) == {0, 1, 2}
    centre_idx = np.loadtxt(out / "kmeans3/centers_ind.txt", dtype=int)
    assert np.allclose(np.loadtxt(out / "kmeans3/centers.txt"), z[centre_idx], atol=1e-5)
    for i in range(3):
        m = read_mrc(out / f"kmeans3/vol_{i:03d}.mrc")
        assert m.data.shape == (16, 16, 16) and m.pixel_size_A == pytest.approx(3.0)
    assert sorted(p.name for p in (out / "pc1").glob("vol_*.mrc")) == ["vol_000.mrc", "vol_001.mrc", "vol_002.mrc"]
    # the maps are the checkpoint's decoder at the centre particles' latents
    from cryolab.heterogeneity import generate_volumes, load_checkpoint

    model, _, _ = load_checkpoint(train_dir / "checkpoints" / "epoch_001.pt")
    expected = generate_volumes(model, z[centre_idx[:1]])[0].numpy()
    assert np.allclose(read_mrc(out / "kmeans3/vol_000.mrc").data, expected, atol=1e-5 * np.abs(expected).max())


def test_analyze_skip_volumes_needs_no_checkpoint_and_rejects_bad_latents(tmp_path, two_clusters):
    z, _ = two_clusters
    folder = tmp_path / "vae"
    folder.mkdir()
    np.save(folder / "z.npy", z)
    out = tmp_path / "quick"
    assert cli.main(["analyze", str(folder), "--skip-volumes", "--skip-umap", "--ksample", "2", "-o", str(out)]) == 0
    assert (out / "kmeans2/labels.npy").is_file() and not list(out.rglob("*.mrc")) and not (out / "umap.npy").exists()
    # without --skip-volumes there is nothing to decode with
    assert cli.main(["analyze", str(folder), "--skip-umap", "-o", str(tmp_path / "none")]) == 2
    # latents that do not match the particle count recorded by training
    (folder / "config.json").write_text(json.dumps({"training": {"n_particles": len(z) + 1}}))
    assert cli.main(["analyze", str(folder), "--skip-volumes", "--skip-umap", "-o", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists() and not (tmp_path / "none").exists()


def test_traverse_pc_path_and_line(train_dir, tmp_path, two_clusters):
    import imageio.v3 as iio

    z, truth = two_clusters
    out = tmp_path / "pc"
    assert cli.main(["traverse", str(train_dir), "--pc", "1", "--frames", "4", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("vol_*.mrc")) == [f"vol_{i:03d}.mrc" for i in range(4)]
    assert iio.imread(out / "trajectory.gif", index=None).shape[0] == 4
    assert np.loadtxt(out / "z_trajectory.txt").shape == (4, ZDIM)
    assert (out / "frames.png").is_file() and (out / "trajectory.png").is_file()

    a, b = int(np.flatnonzero(truth == 0)[0]), int(np.flatnonzero(truth == 1)[0])
    out = tmp_path / "path"
    assert cli.main(["traverse", str(train_dir), "--path-from", str(a), "--path-to", str(b), "--knn", "15", "--frames", "5",
                     "--movie", "none", "--movie-kind", "slice", "-o", str(out)]) == 0
    nodes = np.loadtxt(out / "path_indices.txt", dtype=int)
    frames = np.loadtxt(out / "frame_indices.txt", dtype=int)
    assert nodes[0] == a and nodes[-1] == b and frames[0] == a and frames[-1] == b
    assert np.allclose(np.loadtxt(out / "z_trajectory.txt"), z[frames], atol=1e-5)
    assert len(list(out.glob("vol_*.mrc"))) == 5 and not (out / "trajectory.gif").exists()

    out = tmp_path / "line"
    start, end = ",".join(["-1"] * ZDIM), ",".join(["1"] * ZDIM)
    assert cli.main(["traverse", str(train_dir), f"--z-start={start}", f"--z-end={end}", "--frames", "3", "--skip-volumes",
                     "-o", str(out)]) == 0
    assert np.allclose(np.loadtxt(out / "z_trajectory.txt")[1], 0.0) and not list(out.glob("*.mrc"))
    # wrong latent dimension, two modes at once, unknown particle: exit 2, no output
    assert cli.main(["traverse", str(train_dir), "--z-start", "1,2", "--z-end", "3,4", "-o", str(tmp_path / "e1")]) == 2
    assert cli.main(["traverse", str(train_dir), "--pc", "1", "--path-from", "0", "--path-to", "1", "-o", str(tmp_path / "e2")]) == 2
    assert cli.main(["traverse", str(train_dir), "--path-from", "0", "--path-to", str(len(z)), "-o", str(tmp_path / "e3")]) == 2
    assert not any((tmp_path / f"e{i}").exists() for i in (1, 2, 3))


def test_select_writes_star_subset_and_indices(train_dir, tmp_path, two_clusters):
    z, truth = two_clusters
    star = train_dir / "particles.star"
    original = read_star(star)
    out = tmp_path / "cluster"
    assert cli.main(["select", str(train_dir), "--particles", str(star), "--kmeans", "2", "--clusters", "0", "-o", str(out)]) == 0
    idx = np.loadtxt(out / "indices.txt", dtype=int)
    assert np.array_equal(np.load(out / "indices.npy"), idx)
    assert len(set(truth[idx])) == 1 and len(idx) == np.sum(truth == truth[idx[0]])
    subset = read_star(out / "particles.star")
    assert list(subset.columns) == list(original.columns)
    assert subset["rlnImageName"].tolist() == original["rlnImageName"].iloc[idx].tolist()
    assert subset["myLabTag"].tolist() == [f"tag{i}" for i in idx]

    out_inv = tmp_path / "rest"
    assert cli.main(["select", str(train_dir), "--particles", str(star), "--kmeans", "2", "--clusters", "0", "--invert",
                     "-o", str(out_inv)]) == 0
    rest = np.loadtxt(out_inv / "indices.txt", dtype=int)
    assert sorted(np.concatenate([idx, rest]).tolist()) == list(range(len(z)))

    out = tmp_path / "lasso"
    assert cli.main(["select", str(train_dir), "--particles", str(star), "--polygon", "0,-100 100,-100 100,100 0,100",
                     "--embedding", "pca", "-o", str(out)]) == 0
    coords = pca_project(z, fit_latent_pca(z)).numpy()
    assert np.array_equal(np.loadtxt(out / "indices.txt", dtype=int), np.flatnonzero(coords[:, 0] > 0))

    out = tmp_path / "outliers"
    assert cli.main(["select", str(train_dir), "--particles", str(star), "--outliers", "0.05", "-o", str(out)]) == 0
    assert len(np.loadtxt(out / "indices.txt", dtype=int)) == round(0.05 * len(z))

    bad = [
        ["--kmeans", "2", "--clusters", "7"],                                   # unknown cluster id
        ["--polygon", "500,500 600,500 600,600", "--embedding", "pca"],          # polygon outside the embedding
        ["--outliers", "1.5"],                                                   # not a fraction
        ["--kmeans", "2"],                                                       # no clusters named
    ]
    for i, extra in enumerate(bad):
        assert cli.main(["select", str(train_dir), "--particles", str(star), *extra, "-o", str(tmp_path / f"bad{i}")]) == 2
        assert not (tmp_path / f"bad{i}").exists()
    # a particle file with a different number of particles
    write_star(tmp_path / "other.star", _particle_table(len(z) - 3))
    assert cli.main(["select", str(train_dir), "--particles", str(tmp_path / "other.star"), "--outliers", "0.1",
                     "-o", str(tmp_path / "mismatch")]) == 2
    assert not (tmp_path / "mismatch").exists()


def test_read_training_latents_by_epoch(train_dir):
    assert read_training_latents(train_dir, epoch=1).shape == (400, ZDIM)
    with pytest.raises(InputError, match="no latents for epoch 5"):
        read_training_latents(train_dir, epoch=5)
