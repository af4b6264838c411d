"""The latent space of a heterogeneity model: embeddings (PCA, UMAP), clustering, and their plots.

A trained cryoDRGN-style model assigns every particle a latent mean ``z`` (``z.npy``, ``(N,
zdim)``, particles in input order). These functions look at that cloud of points the way
``cryodrgn analyze`` does:

- :func:`fit_latent_pca` / :func:`pca_project` / :func:`pca_to_latent` — a linear view (and its
  inverse, so points chosen on a PC can be decoded into volumes, :mod:`.traversal`);
- :func:`umap_embedding` — a non-linear 2D view (seeded, so the same input gives the same map);
- :func:`kmeans_latent` and :func:`gmm_latent` — partitions of the latent space; each cluster is
  represented by the *particle nearest its centre* (:func:`nearest_particles`), whose latent is
  decoded into a map, as cryoDRGN does. These maps **sample** the landscape at K places; they
  are not "the K states" of the sample. k-means cuts a continuum into K pieces just as readily
  as it separates K discrete states; the embeddings and the particle counts per cluster, not the
  number K, say which of the two you have;
- :func:`embedding_scatter_figure`, :func:`embedding_hexbin_figure`,
  :func:`embedding_marginals_figure` — the three standard plots of a 2D embedding;
- :func:`read_latents`, :func:`read_training_latents` and :func:`training_volume_generator` —
  a ``cryolab train-vae`` folder's latents (checked against its particle count) and a
  ``volume_fn(z) -> maps`` from its checkpoint. Every analysis function takes plain arrays and,
  where maps are needed, any such callable, so it runs without a trained model.

Conventions: inputs are numpy arrays or torch tensors ``(N, zdim)``; coordinates come back as
float32 torch tensors, labels and particle indices as int64 torch tensors (0-based, in particle
order). :func:`read_latents` sits at the file boundary and returns numpy.

References
----------
E. D. Zhong, T. Bepler, B. Berger, J. H. Davis, "CryoDRGN: reconstruction of heterogeneous
cryo-EM structures using neural networks", Nat. Methods 18 (2021) 176 (latent analysis: PCA,
UMAP, k-means volumes at the particle nearest each centre). L. McInnes, J. Healy, J. Melville,
"UMAP: Uniform Manifold Approximation and Projection", arXiv:1802.03426 (2018).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError

__all__ = [
    "LatentClusters",
    "LatentPCA",
    "embedding_hexbin_figure",
    "embedding_marginals_figure",
    "embedding_scatter_figure",
    "fit_latent_pca",
    "gmm_latent",
    "kmeans_latent",
    "latents_as_numpy",
    "limited_threads",
    "nearest_particles",
    "pca_project",
    "pca_to_latent",
    "read_latents",
    "read_training_latents",
    "training_volume_generator",
    "umap_embedding",
]


# --------------------------------------------------------------------------------------------
# reading and checking latents


def limited_threads():
    """A context in which scikit-learn's OpenMP/BLAS pools use only the cores not busy with other work.

    On a machine whose cores are taken, OpenMP threads that wait for each other at every
    iteration make k-means on a few hundred points take seconds instead of milliseconds
    (measured here: 7 s with 2 threads on 2 busy cores, 0.04 s with 1). The count is
    :func:`cryolab.threads.choose_num_threads` (from the load average).
    """
    from threadpoolctl import threadpool_limits

    from cryolab.threads import choose_num_threads

    return threadpool_limits(limits=choose_num_threads())


def latents_as_numpy(z, *, what: str = "latents", path=None) -> np.ndarray:
    """``z`` as a C-contiguous float64 ``(N, zdim)`` numpy array, checked (for scikit-learn / SciPy).

    Raises InputError for anything but a finite 2D array with at least one row and column.
    """
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().numpy()
    arr = np.asarray(z)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{what} must be an (N, zdim) array, got shape {arr.shape}", path)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what} must be numeric, got {arr.dtype}", path)
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise InputError(f"{what} contain non-finite values (first at particle {bad}, 0-based)", path)
    return arr


def read_latents(path, *, n_particles: int | None = None) -> np.ndarray:
    """Read per-particle latent means: ``.npy`` ``(N, zdim)`` (cryolab) or a cryoDRGN ``z.pkl``.

    Parameters
    ----------
    path : str or Path
        ``z.npy`` from ``cryolab train-vae``, or cryoDRGN's ``z.<epoch>.pkl`` (read with the
        restricted unpickler of :mod:`cryolab.io.cryodrgn`: numpy arrays only).
    n_particles : int, optional
        The number of particles the latents must describe (rows of the particle file); a
        different number of rows is an InputError.

    Returns
    -------
    np.ndarray
        float32 ``(N, zdim)``, particles in input order.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise InputError("latent file not found", path)
    if path.suffix == ".pkl":
        from cryolab.io.cryodrgn import RestrictedUnpickler

        with open(path, "rb") as fh:
            try:
                data = RestrictedUnpickler(fh, path=path).load()
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"cannot read pickle: {type(exc).__name__}: {exc}", path) from exc
    else:
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:  # not an .npy file, truncated, or an object array
            raise InputError(f"cannot read latents as .npy: {type(exc).__name__}: {exc}", path) from exc
    z = latents_as_numpy(data, path=path).astype(np.float32)
    if n_particles is not None and z.shape[0] != n_particles:
        raise InputError(f"{z.shape[0]} latent rows but {n_particles} particles; the latents belong to another particle set", path)
    return z


def _training_settings(train_dir: Path) -> dict:
    import json

    path = train_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read training settings: {exc}", path) from None


def read_training_latents(train_dir, *, epoch: int | None = None) -> np.ndarray:
    """Latent means of all particles from a ``cryolab train-vae`` output folder, checked.

    Reads ``z.npy`` (the last epoch) or, with ``epoch``, ``z.epoch_NNN.npy`` (1-based). The
    number of rows must equal ``config.json``'s ``training.n_particles`` where recorded, and
    ``z_logvar.npy`` (if present, last epoch only) must have the same shape.

    Returns
    -------
    np.ndarray
        float32 ``(N, zdim)``, particles in input order.
    """
    train_dir = Path(os.fspath(train_dir))
    if not train_dir.is_dir():
        raise InputError("training folder not found", train_dir)
    n = _training_settings(train_dir).get("training", {}).get("n_particles")
    if epoch is None:
        path = train_dir / "z.npy"
    else:
        path = train_dir / f"z.epoch_{int(epoch):03d}.npy"
        if not path.is_file():
            have = sorted(p.name for p in train_dir.glob("z.epoch_*.npy"))
            raise InputError(f"no latents for epoch {epoch}" + (f" (found {have[0]} … {have[-1]})" if have else ""), path)
    z = read_latents(path, n_particles=int(n) if n is not None else None)
    logvar = train_dir / "z_logvar.npy"
    if epoch is None and logvar.is_file():
        shape = np.load(logvar, mmap_mode="r", allow_pickle=False).shape
        if tuple(shape) != z.shape:
            raise InputError(f"latent log-variances have shape {tuple(shape)} but the means {z.shape}", logvar)
    if z.shape[1] < 1:
        raise InputError("the model has no latent space (zdim 0): nothing to analyse", path)
    return z


def training_volume_generator(train_dir, *, epoch: int | None = None, box_size: int | None = None,
                              device="cpu"):
    """A ``volume_fn(z (M, zdim)) -> (M, n, n, n)`` from a training folder's checkpoint.

    Loads ``checkpoints/epoch_NNN.pt`` (``epoch``, default the last) with
    :func:`cryolab.heterogeneity.training.load_checkpoint` and wraps
    :func:`cryolab.heterogeneity.volumes.generate_volumes`.

    Returns
    -------
    volume_fn : callable
        Maps at latents (on the CPU), box ``box_size`` (default the training box).
    pixel_size_A : float
        Voxel size of those maps in Å.
    epoch : int
        The checkpoint's epoch.
    """
    from cryolab.heterogeneity.training import find_checkpoint, load_checkpoint
    from cryolab.heterogeneity.volumes import generate_volumes, volume_pixel_size_A

    train_dir = Path(os.fspath(train_dir))
    folder = train_dir / "checkpoints"
    if not folder.is_dir():
        raise InputError("no checkpoints folder: nothing to generate maps from (use --skip-volumes)", train_dir)
    model, _, loaded_epoch = load_checkpoint(find_checkpoint(folder, epoch), device=device)

    def volume_fn(z) -> torch.Tensor:
        return generate_volumes(model, z, box_size=box_size).cpu()

    return volume_fn, volume_pixel_size_A(model, box_size), loaded_epoch


# --------------------------------------------------------------------------------------------
# PCA


@dataclass(frozen=True)
class LatentPCA:
    """Principal axes of a latent cloud.

    Attributes
    ----------
    mean : (zdim,) tensor
        Mean latent.
    components : (k, zdim) tensor
        Orthonormal principal axes as rows, by decreasing variance (signs as scikit-learn fixes
        them, so a refit gives the same axes).
    explained_variance : (k,) tensor
        Variance of the latents along each axis.
    explained_variance_ratio : (k,) tensor
        Its fraction of the total variance.
    """

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor


def fit_latent_pca(z, *, n_components: int | None = None) -> LatentPCA:
    """Principal component analysis of latents ``(N, zdim)`` (scikit-learn ``PCA``, exact SVD).

    ``n_components`` defaults to ``min(N, zdim)``: all axes, so :func:`pca_to_latent` inverts
    :func:`pca_project` exactly.
    """
    from sklearn.decomposition import PCA

    x = latents_as_numpy(z)
    k = min(x.shape) if n_components is None else int(n_components)
    if not 1 <= k <= min(x.shape):
        raise InputError(f"n_components must be between 1 and {min(x.shape)} for {x.shape[0]} latents of dimension {x.shape[1]}, got {k}")
    with limited_threads():
        pca = PCA(n_components=k, svd_solver="full").fit(x)
    f32 = torch.float32
    return LatentPCA(
        mean=torch.as_tensor(pca.mean_, dtype=f32),
        components=torch.as_tensor(pca.components_, dtype=f32),
        explained_variance=torch.as_tensor(pca.explained_variance_, dtype=f32),
        explained_variance_ratio=torch.as_tensor(pca.explained_variance_ratio_, dtype=f32),
    )


def pca_project(z, pca: LatentPCA) -> torch.Tensor:
    """Principal coordinates ``(z - mean) · componentsᵀ``: ``(N, zdim)`` -> ``(N, k)``."""
    z = as_tensor(z, dtype=torch.float64)
    return ((z - pca.mean.double()) @ pca.components.double().T).float()


def pca_to_latent(coords, pca: LatentPCA) -> torch.Tensor:
    """Latents at principal coordinates ``(M, k)``: ``mean + coords · components`` -> ``(M, zdim)``.

    Axes beyond ``k`` (when ``k < zdim``) are set to the mean.
    """
    c = as_tensor(coords, dtype=torch.float64)
    if c.shape[-1] != pca.components.shape[0]:
        raise InputError(f"coordinates have {c.shape[-1]} components, the PCA has {pca.components.shape[0]}")
    return (pca.mean.double() + c @ pca.components.double()).float()


# --------------------------------------------------------------------------------------------
# UMAP


def umap_embedding(z, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0, n_epochs: int | None = None) -> torch.Tensor:
    """A 2D UMAP embedding of latents ``(N, zdim)`` -> ``(N, 2)`` (umap-learn, seeded).

    UMAP keeps neighbourhoods, not distances or densities: cluster sizes and the gaps between
    clusters in the picture are not those of the latent space, and a continuum can break into
    islands. Read it together with PCA. With ``seed`` set, umap-learn runs single-threaded and
    the same input gives the same embedding.

    Parameters
    ----------
    n_neighbors
        Size of the neighbourhood UMAP preserves (umap-learn default 15); clipped to ``N - 1``.
    min_dist
        How tightly points may pack in the embedding (umap-learn default 0.1).
    seed
        Random state of the layout.
    n_epochs
        Layout iterations (umap-learn's default, 500 below 10 000 points and 200 above, when None).
    """
    import warnings

    x = latents_as_numpy(z)
    if x.shape[0] < 4:
        raise InputError(f"UMAP needs at least 4 particles, got {x.shape[0]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; numba notices
        import umap

        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=int(min(n_neighbors, x.shape[0] - 1)),
            min_dist=float(min_dist),
            random_state=int(seed),
            n_epochs=n_epochs,
            n_jobs=1,
        )
        with limited_threads():
            coords = reducer.fit_transform(x)
    return torch.as_tensor(np.asarray(coords), dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# clustering


@dataclass(frozen=True)
class LatentClusters:
    """A partition of the particles in latent space.

    Attributes
    ----------
    labels : (N,) int64 tensor
        Cluster of each particle, ``0 … K-1``.
    centers : (K, zdim) tensor
        Cluster centres (k-means centroids, or Gaussian means).
    center_particles : (K,) int64 tensor
        The particle whose latent is nearest each centre; its latent is what gets decoded into
        the cluster's map (a real point of the landscape, not an average of points).
    probabilities : (N, K) tensor or None
        Posterior membership probabilities (Gaussian mixture only).
    """

    labels: torch.Tensor
    centers: torch.Tensor
    center_particles: torch.Tensor
    probabilities: torch.Tensor | None = None


def nearest_particles(z, points, *, chunk: int = 65536) -> torch.Tensor:
    """Index of the particle whose latent is nearest (Euclidean) each of ``points`` ``(M, zdim)`` -> ``(M,)``."""
    x = as_tensor(latents_as_numpy(z), dtype=torch.float64)
    p = as_tensor(latents_as_numpy(points, what="points"), dtype=torch.float64)
    if p.shape[1] != x.shape[1]:
        raise InputError(f"points have dimension {p.shape[1]}, latents {x.shape[1]}")
    best = torch.full((p.shape[0],), float("inf"), dtype=torch.float64)
    index = torch.zeros(p.shape[0], dtype=torch.long)
    for lo in range(0, x.shape[0], chunk):
        d, i = torch.cdist(p, x[lo : lo + chunk]).min(dim=1)
        better = d < best
        best = torch.where(better, d, best)
        index = torch.where(better, i + lo, index)
    return index


def _chain_order(centers: np.ndarray) -> np.ndarray:
    """An order of the centres that walks along their minimum spanning tree from one end.

    So neighbouring map numbers are neighbouring places in the landscape (cryoDRGN orders its
    k-means maps by latent distance for the same reason). The walk starts at an end of the
    tree's longest path (of the two ends, the one with the lower first principal coordinate, so
    the order is deterministic) and goes depth-first, entering short side branches before the
    longest one; for centres along a curve — however it winds — the order follows the curve.
    """
    from scipy.sparse.csgraph import dijkstra, minimum_spanning_tree

    k = len(centers)
    if k <= 2:
        return np.arange(k)
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    tree = minimum_spanning_tree(np.maximum(dist, 1e-12) * (1 - np.eye(k)))
    tree = tree.maximum(tree.T).tocsr()
    a = int(np.argmax(dijkstra(tree, directed=False, indices=0)))
    along = dijkstra(tree, directed=False, indices=a)
    b = int(np.argmax(along))
    centred = centers - centers.mean(0)
    pc1 = np.linalg.svd(centred, full_matrices=False)[2][0]
    pc1 = pc1 * (np.sign(pc1[np.argmax(np.abs(pc1))]) or 1.0)  # deterministic sign
    start = a if centred[a] @ pc1 <= centred[b] @ pc1 else b
    # depth of each node's subtree when the tree hangs from `start`
    from_start = dijkstra(tree, directed=False, indices=start)
    neighbours = [tree.indices[tree.indptr[i]:tree.indptr[i + 1]] for i in range(k)]
    depth = from_start.copy()
    for node in np.argsort(-from_start):  # leaves first
        for nb in neighbours[node]:
            if from_start[nb] < from_start[node]:  # nb is the parent
                depth[nb] = max(depth[nb], depth[node])
    order, stack, seen = [], [start], {start}
    while stack:
        node = stack.pop()
        order.append(node)
        children = [int(c) for c in neighbours[node] if c not in seen]
        seen.update(children)
        # pushed deepest first, so the shallow side branches are walked before the main line
        stack.extend(sorted(children, key=lambda c: -depth[c]))
    return np.array(order)


def _relabel(labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    new_of_old = np.empty_like(order)
    new_of_old[order] = np.arange(len(order))
    return new_of_old[labels]


def _check_k(n: int, k: int, what: str) -> int:
    k = int(k)
    if not 1 <= k <= n:
        raise InputError(f"{what} must be between 1 and the number of particles ({n}), got {k}")
    return k


def kmeans_latent(z, n_clusters: int, *, seed: int = 0, n_init: int = 10) -> LatentClusters:
    """k-means in latent space, with the particle nearest each centre (cryoDRGN's ``kmeans`` maps).

    Decoding the latent of the particle nearest each of K centroids gives K maps that *sample*
    the landscape at K well-populated places. It does not find states: on a continuum k-means
    still returns K clusters (tiles of the continuum), and a rare state can be merged into a
    neighbour. Use the embeddings and the cluster populations to decide which it is.

    Clusters are numbered by a walk along the minimum spanning tree of the centres from one end
    of it, so consecutive numbers are (mostly) neighbours in latent space.

    Parameters
    ----------
    z : (N, zdim)
        Latent means.
    n_clusters : int
        K (cryoDRGN analyze uses 20).
    seed : int
        Random state of scikit-learn's ``KMeans`` (k-means++ initialisation).
    n_init : int
        Restarts; the partition with the lowest inertia is kept.

    Returns
    -------
    LatentClusters
        ``labels`` ``(N,)``, ``centers`` ``(K, zdim)``, ``center_particles`` ``(K,)``.
    """
    from sklearn.cluster import KMeans

    x = latents_as_numpy(z)
    k = _check_k(x.shape[0], n_clusters, "number of clusters")
    with limited_threads():
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
    order = _chain_order(km.cluster_centers_)
    centers = km.cluster_centers_[order]
    labels = _relabel(km.labels_, order)
    return LatentClusters(
        labels=torch.as_tensor(labels, dtype=torch.long),
        centers=torch.as_tensor(centers, dtype=torch.float32),
        center_particles=nearest_particles(x, centers),
    )


def gmm_latent(z, n_components: int, *, covariance_type: str = "full", seed: int = 0, n_init: int = 1) -> LatentClusters:
    """A Gaussian mixture fitted to the latents (scikit-learn ``GaussianMixture``).

    Unlike k-means, a mixture has a shape and a weight per component, and gives each particle
    membership probabilities (``probabilities``; ``labels`` is the most probable component). Fit
    it in latent space, not to a UMAP embedding: UMAP does not keep densities, so Gaussians in
    the embedding mean nothing in the landscape and their members scatter when plotted back.
    Components are numbered as in :func:`kmeans_latent`.

    Parameters
    ----------
    covariance_type
        ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"`` (scikit-learn).
    seed, n_init
        Random state and restarts of the EM fit.
    """
    from sklearn.mixture import GaussianMixture

    x = latents_as_numpy(z)
    k = _check_k(x.shape[0], n_components, "number of components")
    if covariance_type not in ("full", "tied", "diag", "spherical"):
        raise InputError(f"covariance_type must be full, tied, diag or spherical, got {covariance_type!r}")
    with limited_threads():
        gmm = GaussianMixture(n_components=k, covariance_type=covariance_type, random_state=seed, n_init=n_init).fit(x)
        probabilities = gmm.predict_proba(x)
    order = _chain_order(gmm.means_)
    means = gmm.means_[order]
    probabilities = probabilities[:, order]
    return LatentClusters(
        labels=torch.as_tensor(np.argmax(probabilities, axis=1), dtype=torch.long),
        centers=torch.as_tensor(means, dtype=torch.float32),
        center_particles=nearest_particles(x, means),
        probabilities=torch.as_tensor(probabilities, dtype=torch.float32),
    )


# --------------------------------------------------------------------------------------------
# figures


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _coords_2d(coords) -> np.ndarray:
    c = _np(coords)
    if c.ndim != 2 or c.shape[1] < 2:
        raise InputError(f"embedding coordinates must be (N, 2), got shape {c.shape}")
    return c[:, :2].astype(np.float64)


def _point_size(n: int) -> float:
    return float(np.clip(3000.0 / max(n, 1), 0.5, 12.0))


def _annotate(ax, c: np.ndarray, annotate, annotate_labels) -> None:
    if annotate is None:
        return
    idx = _np(annotate).astype(np.int64).reshape(-1)
    names = [str(i) for i in range(len(idx))] if annotate_labels is None else [str(s) for s in annotate_labels]
    ax.scatter(c[idx, 0], c[idx, 1], s=30, c="k", marker="o", zorder=3)
    for (x, y), name in zip(c[idx], names):
        ax.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8, zorder=4,
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", alpha=0.7, lw=0))


def embedding_scatter_figure(coords, *, labels=None, annotate=None, annotate_labels: Sequence[str] | None = None,
                             axis_names: tuple[str, str] = ("PC1", "PC2"), title: str = "", max_points: int = 50000,
                             seed: int = 0, ax=None):
    """Scatter plot of a 2D embedding ``(N, 2)``, optionally coloured by cluster and with labelled points.

    Parameters
    ----------
    labels : (N,) ints, optional
        Cluster of each particle (colour).
    annotate : (M,) particle indices, optional
        Points to mark and label (e.g. ``LatentClusters.center_particles``); labelled ``0…M-1``
        unless ``annotate_labels`` is given.
    max_points
        At most this many particles are drawn (a fixed random subset), so plots of millions of
        particles stay quick and readable; annotated points are always drawn.
    ax
        Draw into this axes instead of a new figure.

    Returns
    -------
    matplotlib Figure
    """
    from cryolab.report import plt

    c = _coords_2d(coords)
    shown = np.arange(len(c))
    if len(c) > max_points:
        shown = np.sort(np.random.default_rng(seed).choice(len(c), max_points, replace=False))
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
    if labels is None:
        ax.scatter(c[shown, 0], c[shown, 1], s=_point_size(len(shown)), alpha=0.5, lw=0, rasterized=True)
    else:
        lab = _np(labels).astype(np.int64)
        k = int(lab.max()) + 1 if len(lab) else 1
        cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
        ax.scatter(c[shown, 0], c[shown, 1], s=_point_size(len(shown)), c=lab[shown], cmap=cmap,
                   vmin=-0.5, vmax=(10 if k <= 10 else 20) - 0.5, alpha=0.6, lw=0, rasterized=True)
        if k <= 20:
            handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=str(i)) for i in range(k)]
            ax.legend(handles=handles, title="cluster", fontsize=7, title_fontsize=8, loc="best", markerscale=0.8,
                      ncol=2 if k > 10 else 1)
    _annotate(ax, c, annotate, annotate_labels)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if title:
        ax.set_title(title)
    return fig if fig is not None else ax.figure


def _gridsize(n: int, gridsize: int | None) -> int:
    # about 4 particles per occupied hexagon for small sets, at most 60 hexagons across
    return int(gridsize) if gridsize is not None else int(np.clip(np.sqrt(n) / 2, 12, 60))


def embedding_hexbin_figure(coords, *, axis_names: tuple[str, str] = ("PC1", "PC2"), title: str = "", gridsize: int | None = None,
                            annotate=None, annotate_labels: Sequence[str] | None = None):
    """Particle density of a 2D embedding as hexagonal bins (log count), where scatter points overlap.

    ``gridsize`` (hexagons across) defaults to ``sqrt(N)/2`` between 12 and 60.
    """
    from cryolab.report import plt

    c = _coords_2d(coords)
    gridsize = _gridsize(len(c), gridsize)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    hb = ax.hexbin(c[:, 0], c[:, 1], gridsize=gridsize, bins="log", cmap="viridis", mincnt=1)
    fig.colorbar(hb, ax=ax, label="particles per bin")
    _annotate(ax, c, annotate, annotate_labels)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if title:
        ax.set_title(title)
    return fig


def embedding_marginals_figure(coords, *, axis_names: tuple[str, str] = ("PC1", "PC2"), title: str = "", bins: int = 60,
                               gridsize: int | None = None):
    """A density plot of a 2D embedding with the histogram of each coordinate on its margins.

    The marginals show whether the particles pile up in separate modes along one axis (discrete
    states) or spread along it (a continuum), which a crowded scatter hides.
    """
    from cryolab.report import plt

    c = _coords_2d(coords)
    gridsize = _gridsize(len(c), gridsize)
    fig = plt.figure(figsize=(5.6, 5.6))
    grid = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05, hspace=0.05)
    ax = fig.add_subplot(grid[1, 0])
    top = fig.add_subplot(grid[0, 0], sharex=ax)
    right = fig.add_subplot(grid[1, 1], sharey=ax)
    ax.hexbin(c[:, 0], c[:, 1], gridsize=gridsize, bins="log", cmap="viridis", mincnt=1)
    top.hist(c[:, 0], bins=bins, color="C0")
    right.hist(c[:, 1], bins=bins, color="C0", orientation="horizontal")
    top.tick_params(labelbottom=False)
    right.tick_params(labelleft=False)
    top.set_ylabel("particles")
    right.set_xlabel("particles")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if title:
        top.set_title(title)
    return fig
