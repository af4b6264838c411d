# %% [markdown]
# # 09 — cryoDRGN: what a latent space of particles tells you, and what it does not
#
# Study-group session **15 Apr 2021 (sharpen)**, guest lecture by Ellen Zhong, "cryoDRGN &
# Variational Autoencoders". The session works through the cryoDRGN tutorial (EMPIAR-10076);
# here the same questions are answered by computation on small data whose truth we know:
# adenylate kinase (ADK) in its open (4AKE) and closed (1AKE) conformations, and conformations
# in between (`V(t) = (1 − t) V_open + t V_closed`, t ∈ [0, 1]).
#
# - Section 1 trains cryolab's cryoDRGN-style VAE (`cryolab.heterogeneity`, `cryolab train-vae`)
#   on 400 simulated open/closed particles at 32² for a few epochs — questions 2 (the log and the
#   architecture), 3 and 13 (epochs, learning curve) and 4 (the k-means maps).
# - Sections 2–8 use *synthetic latents*: points placed in an 8-dimensional latent space along a
#   known conformational coordinate t, with a stand-in decoder that maps any latent to the map
#   `V(t)` of the nearest point of that coordinate. This isolates what the analysis does
#   (`cryolab.heterogeneity.analysis`, `traversal`, `selection`, `movies`; commands
#   `cryolab analyze`, `traverse`, `select`) from how well a network was trained: what the
#   latent space encodes (2), discrete vs continuous (6, section 3), two Gaussian states
#   bleeding into each other (17, section 4), junk as outliers (7, 9, section 5), PCA vs UMAP
#   (5, 8, section 6), graph paths (16, 12, section 7), the number of particles (15, 11,
#   section 8).
# - The questions without a computation (1, 10, 14, 18) are answered at the end.
#
# Each section ends in assertions (`tests/test_notebooks.py` runs this file).

# %%
import time

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.stats import gaussian_kde, spearmanr
from sklearn.manifold import trustworthiness
from sklearn.metrics import adjusted_rand_score

from cryolab.atoms import atoms_to_potential, builtin_model
from cryolab.heterogeneity import HetModelConfig, ParticleData, generate_volumes, train_vae
from cryolab.heterogeneity.analysis import (embedding_scatter_figure, fit_latent_pca, gmm_latent, kmeans_latent, pca_project,
                                            umap_embedding)
from cryolab.heterogeneity.movies import frames_to_uint8, trajectory_frames, write_movie
from cryolab.heterogeneity.selection import latent_outlier_scores, parse_polygon, select_in_polygon, select_outliers
from cryolab.heterogeneity.traversal import graph_path, knn_graph, linear_trajectory, resample_path, volumes_along
from cryolab.plot import image_grid
from cryolab.projection import project_fourier
from cryolab.reconstruct import backproject_chunk, finalize
from cryolab.report import plt, save_figure
from cryolab.rotations import random_rotations, relion_euler_to_matrix
from cryolab.simulate import GaussianNoise, ParticleParameters, sample_discrete_states, simulate_images, uniform_poses
from cryolab.validate import fsc, fsc_resolution_A
from cryolab.lab import notebook_output_dir

OUT = notebook_output_dir()
torch.manual_seed(0)
torch.set_num_threads(1)  # small problems on a shared machine: one thread, reproducible
T_START = time.perf_counter()

PX, BOX = 3.5, 32  # Å per pixel, pixels: ADK (~60 Å) fits with margin
MAPS = torch.stack([atoms_to_potential(builtin_model(name, hydrogens=False), BOX, PX, bfactor_A2=100.0)
                    for name in ("adk_open", "adk_closed")])
DIFF = MAPS[1] - MAPS[0]


def true_volume(t):
    """Maps (M, N, N, N) of conformations t (M,) between open (0) and closed (1)."""
    t = torch.as_tensor(np.asarray(t, dtype=np.float32)).reshape(-1, 1, 1, 1)
    return MAPS[0] + t * DIFF


def map_coordinate(volumes):
    """Least-squares t of each map: V − V_open ≈ t · (V_closed − V_open)."""
    v = torch.as_tensor(volumes).reshape(-1, DIFF.numel()) - MAPS[0].reshape(1, -1)
    return (v @ DIFF.reshape(-1) / DIFF.pow(2).sum()).numpy()


def correlation(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


print(f"ADK maps {tuple(MAPS.shape[1:])} at {PX} Å/voxel; open–closed correlation {correlation(MAPS[0], MAPS[1]):.3f}")

# %% [markdown]
# ## 1. A tiny cryoDRGN-style run: the log, the architecture, the epochs, the k-means maps
#
# 400 particles, half open and half closed ADK, uniform random poses, no CTF, white noise at
# SNR 2 (much easier than real data: the point is to watch every step). The model: an encoder
# MLP from the masked image to `(μ, log σ²)` of a 1-dimensional latent, and a decoder that is a
# coordinate network `f(k, z)` returning the map's Fourier transform at 3D frequency `k` — the
# architecture printed below (question 2 asks to draw it from cryoDRGN's log; PyTorch prints
# the same tree). Each image is compared with the central slice of `f(·, z)` at its pose. After
# every epoch we encode all particles and ask how well the latent separates the two states
# (question 3: *can you learn anything from the other epochs?*).

# %%
gen = torch.Generator().manual_seed(0)
n_real = 400
states = sample_discrete_states(n_real, [1, 1], generator=gen)
euler = uniform_poses(n_real, generator=gen)
_, noisy = simulate_images(list(MAPS), ParticleParameters(euler, None, None, states), PX, noise=GaussianNoise(snr=2.0), seed=0)
data = ParticleData(noisy, relion_euler_to_matrix(euler), None, None, PX)
config = HetModelConfig(box_size=BOX, pixel_size_A=PX, zdim=1, encoder_layers=2, encoder_width=64, decoder_layers=2, decoder_width=64)
ari_per_epoch = []


def after_epoch(stats, z_mu, *rest):
    ari_per_epoch.append(adjusted_rand_score(states.state.numpy(), kmeans_latent(z_mu, 2, n_init=3).labels.numpy()))


t0 = time.perf_counter()
result = train_vae(data, config, epochs=12, batch_size=8, lr=2e-3, seed=0, show_progress=False, on_epoch=after_epoch)
print(f"trained {len(result.history)} epochs in {time.perf_counter() - t0:.1f} s")
print(result.model)
km_real = kmeans_latent(result.z_mu, 2)
real_maps = generate_volumes(result.model, result.z_mu[km_real.center_particles.numpy()])
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
epochs = [h["epoch"] for h in result.history]
axes[0].plot(epochs, [h["reconstruction"] for h in result.history], "o-", label="reconstruction")
axes[0].plot(epochs, [h["loss"] for h in result.history], "s--", label="loss")
axes[0].set_xlabel("epoch")
axes[0].set_title("learning curve (question 13)")
axes[0].legend()
axes[1].plot(epochs, ari_per_epoch, "o-")
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("ARI of k-means (K=2) vs true state")
axes[1].set_title("what the latent knows after each epoch")
for s, name in ((0, "open"), (1, "closed")):
    axes[2].hist(result.z_mu[states.state.numpy() == s, 0], bins=30, alpha=0.6, label=f"true {name}")
axes[2].set_xlabel("latent mean z")
axes[2].legend()
save_figure(fig, OUT / "09_real_run.png")
rows = []
for i in range(2):
    truth = int(states.state[km_real.center_particles[i]])
    rows.append((correlation(real_maps[i], MAPS[0]), correlation(real_maps[i], MAPS[1]), truth))
    print(f"k-means map {i}: correlation with open {rows[-1][0]:.3f}, closed {rows[-1][1]:.3f}; its particle is {('open', 'closed')[truth]}")
save_figure(image_grid([project_fourier(v, torch.eye(3)) for v in (*real_maps, *MAPS)],
                       ["k-means map 0", "k-means map 1", "true open", "true closed"], ncols=4), OUT / "09_real_run_maps.png")
print("ARI per epoch:", " ".join(f"{a:.2f}" for a in ari_per_epoch))
assert ari_per_epoch[-1] >= 0.8, "the latent separates the two states"
assert ari_per_epoch[-1] > ari_per_epoch[0] + 0.5, "and learned to do so over the epochs"
for c_open, c_closed, truth in rows:
    assert (c_closed > c_open) == (truth == 1), "each k-means map looks like the state of its particle"

# %% [markdown]
# Reading it: the loss falls quickly and then slowly; the latent only becomes informative after
# the decoder has learned the *shared* structure (early epochs: ARI ≈ 0). A learning curve that is
# still falling, or a latent still reorganising between epochs, says train longer; one that has
# flattened while the held-out picture (here the ARI; on real data, the k-means maps and the
# embeddings of successive epochs) no longer changes says stop. A loss that rises again, or
# maps that sharpen into noise, indicate over-fitting — compare epochs before trusting the last.
#
# ## 2. What the latent space encodes: synthetic latents with a known coordinate
#
# From here on, latents are placed directly: particle i with conformation t_i gets
# `z_i = c(t_i) + noise`, with `c` a gently bent curve in 8 dimensions (random orientation), and
# the stand-in decoder maps a latent to `V(t)` of the nearest curve point. The latent space of a
# trained model encodes whatever varies between images that the decoder can express and the
# encoder can read: conformation, but also anything else correlated with the image content that
# the forward model does not explain (pose or CTF errors, junk, contrast). Here it is only
# conformation, and k-means maps (cryoDRGN's `kmeans20` figure, question 4) sample it.

# %%
ROT = np.linalg.qr(np.random.default_rng(11).normal(size=(8, 8)))[0]
T_GRID = np.linspace(0, 1, 801)


def curve(t, kind="arc"):
    """Local coordinates (n, 8) of the conformational coordinate in latent space."""
    t = np.asarray(t, dtype=np.float64)
    local = np.zeros((t.size, 8))
    if kind == "arc":  # gently bent: PC1 follows t
        local[:, 0], local[:, 1], local[:, 2] = 3 * t, 0.6 * np.sin(np.pi * t), 0.25 * np.cos(2 * np.pi * t)
    else:  # "helix": one and a half turns, so that a 2D linear view folds it onto itself
        local[:, 0], local[:, 1], local[:, 2] = np.cos(3 * np.pi * t), np.sin(3 * np.pi * t), 1.5 * t
    return local @ ROT.T


def latents_at(t, *, noise=0.05, seed=0, kind="arc"):
    rng = np.random.default_rng(seed)
    return (curve(t, kind) + noise * rng.normal(size=(np.size(t), 8))).astype(np.float32)


def make_volume_fn(kind="arc"):
    points = torch.as_tensor(curve(T_GRID, kind), dtype=torch.float32)

    def volume_fn(z):
        nearest = torch.cdist(torch.as_tensor(z, dtype=torch.float32), points).argmin(1)
        return true_volume(T_GRID[nearest.numpy()])

    return volume_fn


volume_fn = make_volume_fn("arc")
rng = np.random.default_rng(1)
t_cont = rng.uniform(0, 1, 1500)
z_cont = latents_at(t_cont, seed=1)
pca_cont = fit_latent_pca(z_cont)
pc_cont = pca_project(z_cont, pca_cont).numpy()
km_cont = kmeans_latent(z_cont, 8, seed=0)
maps_cont = volumes_along(volume_fn, z_cont[km_cont.center_particles.numpy()], show_progress=False)
t_maps = map_coordinate(maps_cont)
sizes = np.bincount(km_cont.labels.numpy())
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
embedding_scatter_figure(pc_cont[:, :2], labels=km_cont.labels, annotate=km_cont.center_particles, ax=axes[0], title="continuum, k-means K=8")
axes[1].scatter(t_cont, pc_cont[:, 0], s=3, c=km_cont.labels.numpy(), cmap="tab10", vmin=-0.5, vmax=9.5)
axes[1].set_xlabel("true conformation t")
axes[1].set_ylabel("PC1 of the latent")
save_figure(fig, OUT / "09_latent_encodes_t.png")
save_figure(image_grid([project_fourier(v, torch.eye(3)) for v in maps_cont], [f"vol_{i:03d}: t={t:.2f}, {s} ptcls" for i, (t, s) in enumerate(zip(t_maps, sizes))],
                       ncols=8, panel_size=1.9), OUT / "09_kmeans_maps.png")
rho = spearmanr(pc_cont[:, 0], t_cont).correlation
print(f"|Spearman(PC1, t)| = {abs(rho):.3f}; k-means maps at t = {np.round(t_maps, 2)}; cluster sizes {sizes}")
assert abs(rho) > 0.95
assert np.all(np.diff(t_maps) > 0) or np.all(np.diff(t_maps) < 0), "maps numbered along the landscape"
assert sizes.min() > 0.5 * sizes.mean(), "a continuum is cut into similar-sized tiles: k-means samples, it does not find states"

# %% [markdown]
# ## 3. Discrete or continuous? (question 6)
#
# Two data sets with the same end states: *discrete* — half the particles at t ≈ 0, half at
# t ≈ 1 (spread 0.03) — and *continuous* — t uniform. Evidence that separates them, in the
# order a user meets it: (a) the embeddings and the marginal histogram along PC1 (two islands and
# two peaks vs one elongated cloud and a plateau); (b) the nearest-neighbour graph that graph
# traversal uses — in the discrete case it falls apart into two pieces (no path exists: nobody's
# neighbours are across the gap), in the continuous case it is one piece and the path between
# the ends takes only short steps; (c) a straight trajectory between the states (what a PC
# trajectory does) passes through latents **no particle has** — across the gap in the discrete
# case, but here also in the continuous one, because the landscape is curved in latent space and
# a straight line cuts the corner. The decoder still returns maps there, interpolations that look
# like a smooth motion: the "nonphysical motion" the tutorial warns about. Graph paths, which
# step from particle to particle, do not have that problem. Domain knowledge decides the rest:
# whether intermediates are sterically possible, whether a ligand or a partner could lock two
# discrete states, whether the "motion" preserves the chain's connectivity.

# %%
t_disc = np.concatenate([rng.normal(0.0, 0.03, 750), rng.normal(1.0, 0.03, 750)])
datasets = {"discrete": latents_at(t_disc, seed=2), "continuous": z_cont}
truth_t = {"discrete": t_disc, "continuous": t_cont}
evidence = {}
fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
for col, (name, z) in enumerate(datasets.items()):
    pca = fit_latent_pca(z)
    pc = pca_project(z, pca).numpy()
    t = truth_t[name]
    start, end = int(np.argmin(np.abs(t - 0.0))), int(np.argmin(np.abs(t - 1.0)))
    graph = knn_graph(z, n_neighbors=10)
    pieces = connected_components(graph, directed=False)[0]
    nn = knn_graph(z, n_neighbors=1).max(axis=1).toarray().ravel()
    longest = np.nan
    if pieces == 1:
        longest = np.diff(graph_path(z, [start, end], graph=graph).cumulative_distance.numpy()).max() / np.median(nn)
    line = linear_trajectory(z[start], z[end], 9).numpy()
    support = [(np.linalg.norm(z - p, axis=1) < 3 * np.median(nn)).sum() for p in line]
    evidence[name] = dict(pieces=pieces, longest_step=longest, support=[int(c) for c in support])
    axes[0, col].hist(pc[:, 0], bins=60)
    axes[0, col].set_title(f"{name}: PC1 marginal; 10-NN graph in {pieces} piece(s)", fontsize=9)
    axes[0, col].set_xlabel("PC1")
    axes[1, col].plot(np.linspace(0, 1, 9), support, "o-")
    axes[1, col].set_xlabel("position on the straight line between the end states")
    axes[1, col].set_ylabel("particles near the line")
    axes[1, col].set_title("support along the straight line between the end states", fontsize=9)
fig.tight_layout()
save_figure(fig, OUT / "09_discrete_vs_continuous.png")
for name, e in evidence.items():
    print(f"{name}: 10-NN graph in {e['pieces']} piece(s), longest path step {e['longest_step']:.1f}× the median "
          f"nearest-neighbour distance; particles near the straight line {e['support']}")
assert evidence["discrete"]["pieces"] == 2 and evidence["continuous"]["pieces"] == 1
assert evidence["continuous"]["longest_step"] < 5, "a path through a continuum takes only short steps"
assert min(evidence["discrete"]["support"][2:-2]) == 0 and min(evidence["continuous"]["support"]) == 0, \
    "straight lines leave the particles, in both cases"

# %% [markdown]
# ## 4. Two Gaussian states along one coordinate, spreading into each other (question 17)
#
# One degree of freedom, two states: t ~ ½ Normal(0.25, σ²) + ½ Normal(0.75, σ²). What cryoDRGN
# would show, for growing σ: at small σ two islands in every embedding, a bimodal PC1 marginal,
# k-means clusters that are the states (ARI ≈ 1) and a graph path that jumps; as the Gaussians
# bleed into each other the valley between the peaks fills, the islands merge into one elongated
# cloud, and k-means still cuts it in two — but the cut no longer separates states (ARI falls):
# the particles in the overlap are genuinely ambiguous, and their images are too. Once the
# separation is below about 2σ the distribution is unimodal and no analysis of the latent
# distribution can tell two broad states from one broad continuum.

# %%
spreads = (0.03, 0.08, 0.13, 0.25)
bleed = []
fig, axes = plt.subplots(1, len(spreads), figsize=(14, 3.2), sharey=False)
for ax, sigma in zip(axes, spreads):
    comp = rng.integers(0, 2, 1200)
    t = np.clip(np.where(comp == 0, 0.25, 0.75) + sigma * rng.normal(size=comp.size), -0.2, 1.2)
    z = latents_at(t, seed=3)
    pca = fit_latent_pca(z)
    pc1 = pca_project(z, pca).numpy()[:, 0]
    marks = pca_project(curve([0.25, 0.5, 0.75]), pca).numpy()[:, 0]
    kde = gaussian_kde(pc1)
    valley = float(kde(marks[1])[0] / np.mean(kde(marks[[0, 2]])))
    ari = adjusted_rand_score(comp, kmeans_latent(z, 2).labels.numpy())
    gmm_ari = adjusted_rand_score(comp, gmm_latent(z, 2).labels.numpy())
    bleed.append((sigma, valley, ari, gmm_ari))
    ax.hist(pc1, bins=60, density=True, alpha=0.6)
    grid = np.linspace(pc1.min(), pc1.max(), 200)
    ax.plot(grid, kde(grid), "k-", lw=1)
    ax.set_title(f"σ = {sigma}: valley/peak {valley:.2f}\nARI k-means {ari:.2f}, GMM {gmm_ari:.2f}", fontsize=9)
    ax.set_xlabel("PC1")
save_figure(fig, OUT / "09_two_states_spreading.png")
for sigma, valley, ari, gmm_ari in bleed:
    print(f"σ = {sigma:.2f}: density at the midpoint / at the states = {valley:.2f}; ARI k-means {ari:.2f}, GMM {gmm_ari:.2f}")
valleys, aris = np.array([b[1] for b in bleed]), np.array([b[2] for b in bleed])
assert np.all(np.diff(valleys) > 0) and valleys[0] < 0.1 and valleys[-1] > 0.8
assert aris[0] >= 0.95 and aris[-1] < 0.6 and np.all(np.diff(aris) <= 1e-9)

# %% [markdown]
# ## 5. Junk particles as latent outliers (questions 7 and 9)
#
# Junk — ice, aggregates, false picks — cannot be explained by any map near the others, so the
# encoder has no good place for it; in practice it lands away from the bulk, often scattered.
# Below: 950 particles on the continuum and 50 junk latents scattered broadly. Two outlier scores
# (`latent_outlier_scores`): Mahalanobis distance from the mean (one-blob view) and the mean
# distance to the 10 nearest particles (local density). Flagging 5 %:
#
# Then the warning of question 9: a **rare real state** is an outlier too. 97 % open particles,
# 3 % closed, no junk at all: the Mahalanobis score flags the closed particles as "junk". The
# check is to look at what was flagged: decode (or reconstruct) the flagged particles — protein
# that looks like a known state is not junk. Rules of thumb: look for a gap in the score
# histogram rather than a fixed percentage; remove little at a time; compare reconstructions
# with and without the flagged set; and never discard a compact, populated island without
# looking at its map. Compared with 2D classification (junk classes) and 3D classification
# (a junk class), latent outliers use the full heterogeneous model and catch particles that
# 2D/3D classes absorb, but depend on a trained model and on the choice of threshold.

# %%
t_good = rng.uniform(0, 1, 950)
junk = rng.normal(size=(50, 8)) * 1.2 + curve([0.5])
z_junk = np.vstack([latents_at(t_good, seed=4), junk]).astype(np.float32)
is_junk = np.arange(len(z_junk)) >= 950
recall = {}
for method in ("mahalanobis", "knn"):
    flagged = select_outliers(z_junk, 0.05, method=method).numpy()
    recall[method] = is_junk[flagged].sum() / is_junk.sum()
t_rare = np.concatenate([rng.normal(0.0, 0.03, 970), rng.normal(1.0, 0.03, 30)])
z_rare = latents_at(t_rare, seed=5)
is_closed = t_rare > 0.5
flagged_rare = select_outliers(z_rare, 0.05, method="mahalanobis").numpy()
caught = is_closed[flagged_rare].sum() / is_closed.sum()
flagged_map = volumes_along(volume_fn, np.median(z_rare[flagged_rare[is_closed[flagged_rare]]], axis=0)[None], show_progress=False)[0]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
for ax, method in zip(axes[:2], ("mahalanobis", "knn")):
    scores = latent_outlier_scores(z_junk, method=method).numpy()
    ax.hist(scores[~is_junk], bins=50, alpha=0.7, label="particles")
    ax.hist(scores[is_junk], bins=50, alpha=0.7, label="junk")
    ax.set_xlabel(f"{method} score")
    ax.set_title(f"5 % flagged: recall of junk {recall[method]:.2f}", fontsize=9)
    ax.legend(fontsize=8)
scores = latent_outlier_scores(z_rare, method="mahalanobis").numpy()
axes[2].hist(scores[~is_closed], bins=50, alpha=0.7, label="open (97 %)")
axes[2].hist(scores[is_closed], bins=20, alpha=0.7, label="closed (3 %)")
axes[2].set_xlabel("mahalanobis score")
axes[2].set_title(f"no junk, a rare state: {100 * caught:.0f} % of it flagged", fontsize=9)
axes[2].legend(fontsize=8)
save_figure(fig, OUT / "09_outliers.png")
print(f"junk recall at 5 %: {recall}; rare closed state flagged: {caught:.2f}; "
      f"the flagged particles' map correlates {correlation(flagged_map, MAPS[1]):.3f} with closed ADK")
assert recall["knn"] >= 0.9 and recall["mahalanobis"] >= 0.7
assert caught >= 0.8, "a rare real state is flagged as an outlier"
assert correlation(flagged_map, MAPS[1]) > 0.99, "and decoding it shows protein, not junk"

# %% [markdown]
# ## 6. The same k-means maps on PCA and on UMAP (questions 5 and 8)
#
# A latent coordinate that winds through 8 dimensions (one and a half turns of a helix): the
# first two principal components see a circle traversed one and a half times, so particles from
# different parts of the landscape overlap in the PCA plane; UMAP, which keeps each particle's
# nearest neighbours, unrolls it. Same latents, same k-means clusters and the same maps — the
# clusters are computed in latent space — placed differently: PCA keeps (linear) distances and
# overlaps what it cannot show; UMAP keeps neighbourhoods and distorts distances, sizes and
# densities. `trustworthiness` measures how many of a point's embedding neighbours were
# neighbours in latent space.
#
# Question 8's "trick": in the tutorial the Gaussian mixture was fitted in the 8-dimensional
# latent space and drawn on UMAP. Members of one component look scattered in UMAP because UMAP
# was free to place them apart; nothing is wrong with the clustering. Fitting Gaussians to UMAP
# coordinates instead would be wrong: UMAP does not preserve density, so its clusters' shapes
# mean nothing.

# %%
t_hel = rng.uniform(0, 1, 1000)
z_hel = latents_at(t_hel, seed=6, kind="helix", noise=0.04)
pc_hel = pca_project(z_hel, fit_latent_pca(z_hel)).numpy()[:, :2]
um_hel = umap_embedding(z_hel, seed=0, n_epochs=200).numpy()
km_hel = kmeans_latent(z_hel, 10, seed=0)
maps_hel = volumes_along(make_volume_fn("helix"), z_hel[km_hel.center_particles.numpy()], show_progress=False)
trust = {name: trustworthiness(z_hel, emb, n_neighbors=10) for name, emb in (("PCA", pc_hel), ("UMAP", um_hel))}
fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
for ax, (name, emb) in zip(axes, (("PCA", pc_hel), ("UMAP", um_hel))):
    embedding_scatter_figure(emb, labels=km_hel.labels, annotate=km_hel.center_particles, ax=ax,
                             axis_names=(f"{name}1", f"{name}2"), title=f"{name}: trustworthiness {trust[name]:.3f}")
save_figure(fig, OUT / "09_pca_vs_umap.png")
t_hel_maps = map_coordinate(maps_hel)
print(f"trustworthiness (10 neighbours): {trust}; k-means maps at t = {np.round(t_hel_maps, 2)}")
assert trust["UMAP"] > trust["PCA"] + 0.02
assert np.all(np.diff(t_hel_maps) > 0) or np.all(np.diff(t_hel_maps) < 0)

# %% [markdown]
# ## 7. What a graph-traversal path means (questions 16 and 12)
#
# cryoDRGN's `graph_traversal` joins every particle to its nearest neighbours and finds the
# shortest path between chosen particles (Dijkstra). Every step is between two particles with
# similar latents, so the path is a chain of *observed* conformations: a continuity argument
# ("these structures can be connected through states we saw"), not a trajectory in time, and not
# necessarily the route a molecule takes. Features along it with physical meaning: the particle
# density (in equilibrium, population ∝ exp(−G/kT), so −log density is a free-energy proxy —
# with caveats: picking, alignment, grid preparation and the model's own distortions all bias
# densities); its length in conformational, not latent, units (RMSD between maps); and whether
# the maps along it stay physically plausible.
#
# Extending Dijkstra: weight each edge by its length divided by the local density, so that a
# path prefers populated routes (a minimum-"energy" path) over short cuts through sparse regions.
# Below, two routes between states A and B: a short, sparsely populated arc and a longer, densely
# populated one. The shortest path takes the short cut; the density-weighted path the populated
# route. Then a movie along the path (`cryolab traverse --path-from … --path-to …` does the same).

# %%
ring_rng = np.random.default_rng(7)
ang_short = ring_rng.uniform(0, np.pi, 60)
ang_long = ring_rng.uniform(np.pi, 2 * np.pi, 600)
ang_states = np.concatenate([ring_rng.normal(0, 0.08, 300), ring_rng.normal(np.pi, 0.08, 300)])


def ring(a, radius):
    local = np.zeros((a.size, 8))
    local[:, 0], local[:, 1] = np.cos(a), radius * np.sin(a)
    return local @ ROT.T


z_ring = np.vstack([ring(ang_short, 1.0), ring(ang_long, 1.6), ring(ang_states, 1.0)])
z_ring = (z_ring + 0.02 * ring_rng.normal(size=z_ring.shape)).astype(np.float32)
on_long = np.r_[np.zeros(60, bool), np.ones(600, bool), np.zeros(600, bool)]
a_idx = 660 + int(np.argmin(np.abs(ang_states[:300])))
b_idx = 960 + int(np.argmin(np.abs(ang_states[300:] - np.pi)))
graph = knn_graph(z_ring, n_neighbors=10)
shortest = graph_path(z_ring, [a_idx, b_idx], graph=graph).indices.numpy()
sparsity = latent_outlier_scores(z_ring, method="knn").numpy()  # mean distance to 10 neighbours ∝ 1/density
coo = graph.tocoo()
weighted = coo.copy()
weighted.data = coo.data * 0.5 * (sparsity[coo.row] + sparsity[coo.col]) / sparsity.min()
_, pred = dijkstra(weighted.tocsr(), directed=False, indices=a_idx, return_predecessors=True)
density_path = [b_idx]
while density_path[-1] != a_idx:
    density_path.append(int(pred[density_path[-1]]))
density_path = np.array(density_path[::-1])
fig, ax = plt.subplots(figsize=(5.6, 4.6))
plane = pca_project(z_ring, fit_latent_pca(z_ring)).numpy()
ax.scatter(plane[:, 0], plane[:, 1], s=2, c="0.7")
ax.plot(plane[shortest, 0], plane[shortest, 1], "C3-", lw=2, label=f"shortest ({on_long[shortest].mean():.0%} on the populated arc)")
ax.plot(plane[density_path, 0], plane[density_path, 1], "C0-", lw=2, label=f"density-weighted ({on_long[density_path].mean():.0%})")
ax.legend(fontsize=8)
ax.set_title("two routes between states A and B")
save_figure(fig, OUT / "09_graph_paths.png")

# a path through a continuum of ADK conformations, its density profile, and a movie
path = graph_path(z_cont, [int(np.argmin(t_cont)), int(np.argmax(t_cont))], n_neighbors=10)
picks = path.indices.numpy()[resample_path(path.cumulative_distance, 8).numpy()]
movie_maps = volumes_along(volume_fn, z_cont[picks], show_progress=False)
n_frames = write_movie(OUT / "09_path_movie.gif", frames_to_uint8(trajectory_frames(movie_maps)), fps=4)
t_movie = map_coordinate(movie_maps)
print(f"shortest path: {on_long[shortest].mean():.0%} of its particles on the populated arc; density-weighted: "
      f"{on_long[density_path].mean():.0%}; movie of {n_frames} frames at t = {np.round(t_movie, 2)}")
assert on_long[shortest].mean() < 0.2 and on_long[density_path].mean() > 0.6
assert n_frames == 8 and np.all(np.diff(t_movie) > 0), "the movie runs from open to closed through observed states"

# %% [markdown]
# ## 8. Number of particles vs reconstruction (questions 15 and 11)
#
# Lasso selections of decreasing size inside the closed-state island of the discrete data set
# (section 3), each reconstructed from simulated images (known poses, no CTF, SNR 0.05) and
# compared with the true closed map. Fewer particles, lower resolution: each halving costs
# resolution, and at some point features vanish into noise — which is why the tutorial compares
# a 128-pixel reconstruction including junk with a cleaned 256-pixel one: removing junk costs a
# few particles, gains contrast, and the larger box with a smaller pixel raises the Nyquist
# limit. A larger lasso on a *continuum* adds particles but also adds conformations, and blurs
# what moves.

# %%
z_disc = datasets["discrete"]
pca_disc = fit_latent_pca(z_disc)
pc_disc = pca_project(z_disc, pca_disc).numpy()[:, :2]
centre = np.median(pc_disc[t_disc > 0.5], axis=0)
radius = np.linalg.norm(pc_disc - centre, axis=1)
results = []
sim_gen = torch.Generator().manual_seed(8)
for quantile in (0.06, 0.25, 0.95):
    half = float(np.quantile(radius[t_disc > 0.5], quantile))
    square = " ".join(f"{centre[0] + dx * half:.6g},{centre[1] + dy * half:.6g}" for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)))
    chosen = select_in_polygon(pc_disc, parse_polygon(square)).numpy()
    rotations = random_rotations(len(chosen), generator=sim_gen)
    clean = project_fourier(true_volume(t_disc[chosen]), rotations)
    noisy_images = clean + clean.std() / np.sqrt(0.05) * torch.randn(clean.shape, generator=sim_gen)
    recon = finalize(backproject_chunk(noisy_images, rotations))
    curve_fsc = fsc(recon, MAPS[1])
    results.append((len(chosen), float(fsc_resolution_A(curve_fsc, BOX, PX, threshold=0.5)), float(curve_fsc[1:].mean()), recon))
fig = image_grid([project_fourier(r[3], torch.eye(3)) for r in results] + [project_fourier(MAPS[1], torch.eye(3))],
                 [f"{n} particles: {res:.1f} Å" for n, res, _, _ in results] + ["true closed map"], ncols=4)
save_figure(fig, OUT / "09_particles_vs_resolution.png")
for n_particles, res, mean_fsc, _ in results:
    print(f"{n_particles:4d} particles: FSC(0.5) with the truth at {res:.1f} Å, mean FSC {mean_fsc:.3f}")
counts = [r[0] for r in results]
assert counts[0] < counts[1] < counts[2]
assert results[0][2] < results[1][2] < results[2][2], "more particles, better agreement with the truth"
assert results[0][1] >= results[2][1]

# %% [markdown]
# ## Questions answered in words
#
# **1 (the tutorial)** — `cryolab train-vae`, `analyze`, `traverse` and `select` reproduce its
# steps on any RELION/cryoSPARC/cryoDRGN input; section 1 is the miniature.
#
# **10 (how long is "long")** — on this 2-core machine section 1 trains 400 particles at 32² in
# under 20 s; cryoDRGN's tutorial (~100 000 particles at 128², 50 epochs) takes hours on one
# GPU and days on CPUs. Hours are fine for a final result; exploration needs minutes, which is
# what downsampling (`--downsample`), small zdim and a subset of particles buy.
#
# **14 (a workflow for discrete vs continuous)** — (i) consensus refinement for poses and CTF
# (hours); (ii) train at low resolution (64² or 128²) with zdim 8 including junk (hours on a
# GPU); (iii) analyse: embeddings, k-means maps, marginals — remove junk (section 5) and retrain;
# (iv) look for islands vs continua (section 3–4), check with graph paths and the support along
# them; (v) for candidate discrete states, reconstruct each selection independently with
# half-maps (RELION) and compare resolution and maps (section 8); for a continuum, reconstruct
# slices along the coordinate; (vi) validate with domain knowledge (ligand, mutants, known
# structures) and with a different method (3D classification, 3DVA, normal modes — notebook 10).
#
# **18 (time order)** — a data set is a snapshot of populations; states do not carry
# time stamps. A sequence is easiest to infer when the states form a single chain (a continuum
# with one path between the ends, as in section 7's movie), when intermediates are populated, or
# when time-resolved samples (mixing and freezing at several delays) or ligand/mutant series
# order them. It is hardest for cycles (kinesin's mechanochemical cycle visits states in an
# order that a symmetric landscape cannot reveal: the path A→B→C→A and its reverse look alike),
# for discrete states separated by unpopulated barriers, and when the most populated states are
# off-pathway. cryoDRGN gives the landscape and its connectivity; the arrow of time needs
# chemistry (ATP hydrolysis makes kinesin's cycle directional) or time-resolved experiments.

# %%
elapsed = time.perf_counter() - T_START
print(f"notebook ran in {elapsed:.1f} s")
assert elapsed < 300, "budget: < 120 s on 2 loaded cores; this guard only catches blow-ups"
