"""Trajectories through latent space, and the maps along them.

Three ways to choose a sequence of latents to decode (cryoDRGN's ``analyze`` and
``graph_traversal``):

- :func:`pc_trajectory` — along one principal axis, at percentiles of the particles'
  coordinates on it (the other coordinates at the mean). A straight line in latent space: it may
  cross empty regions between clusters, where the decoder was never trained and the "motion" it
  shows is not supported by any particle.
- :func:`graph_path` — the shortest path through a k-nearest-neighbour graph of the particles
  (:func:`knn_graph`, Dijkstra from :mod:`scipy.sparse.csgraph`) between chosen particles. Each
  step goes from a particle to a near neighbour, so the path stays where particles are; its
  length is a latent distance, not a time or an energy.
- :func:`linear_trajectory` — a straight line between two given latents.

:func:`volumes_along` decodes any of them with a ``volume_fn(z (M, zdim)) -> (M, N, N, N)``
(a trained model's ``generate_volumes``, or any stand-in), in batches.

Conventions: particle indices are 0-based rows of ``z.npy``; principal components are
numbered from 0 here (the command line says PC1 for component 0); latents come back as float32
torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from cryolab._progress import progress
from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.heterogeneity.analysis import LatentPCA, latents_as_numpy, limited_threads, pca_project, pca_to_latent

__all__ = [
    "DEFAULT_PERCENTILES",
    "GraphPath",
    "graph_path",
    "knn_graph",
    "linear_trajectory",
    "pc_trajectory",
    "resample_path",
    "volumes_along",
]

#: Percentiles of a PC at which cryoDRGN samples its PC trajectories: 5, 15, …, 95.
DEFAULT_PERCENTILES = tuple(float(p) for p in np.arange(5, 100, 10))


def pc_trajectory(z, pca: LatentPCA, component: int, *, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents along principal axis ``component`` at percentiles of the particles' coordinates.

    ``z_m = mean + v_m · components[component]`` with ``v_m`` the ``percentiles[m]``-th
    percentile of the particles' coordinate on that axis; every other principal coordinate is 0
    (the mean). Percentiles, not the full range, so a few outliers do not stretch the path into
    places without particles.

    Parameters
    ----------
    z : (N, zdim)
        Latent means of the particles (for the percentiles).
    pca : LatentPCA
        From :func:`cryolab.heterogeneity.analysis.fit_latent_pca`.
    component : int
        0-based principal axis (0 = PC1).
    percentiles : sequence of floats in [0, 100]
        Where to sample (default 5, 15, …, 95).

    Returns
    -------
    z_path : (M, zdim) tensor
        The latents to decode.
    values : (M,) tensor
        Their coordinates on the principal axis.
    """
    k = pca.components.shape[0]
    if not 0 <= int(component) < k:
        raise InputError(f"principal component {int(component) + 1} requested, the latent PCA has {k} (PC1…PC{k})")
    p = np.asarray(percentiles, dtype=np.float64).reshape(-1)
    if p.size < 1 or np.any((p < 0) | (p > 100)) or not np.all(np.isfinite(p)):
        raise InputError(f"percentiles must be numbers between 0 and 100, got {p.tolist()}")
    coords = pca_project(latents_as_numpy(z), pca).double().numpy()[:, int(component)]
    values = np.percentile(coords, p)
    full = np.zeros((p.size, k))
    full[:, int(component)] = values
    return pca_to_latent(full, pca), torch.as_tensor(values, dtype=torch.float32)


def linear_trajectory(z_start, z_end, n_points: int) -> torch.Tensor:
    """``n_points`` latents evenly spaced on the segment from ``z_start`` to ``z_end`` (both included)."""
    a = as_tensor(z_start, dtype=torch.float64).reshape(-1)
    b = as_tensor(z_end, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape:
        raise InputError(f"start and end latents differ in dimension: {a.numel()} and {b.numel()}")
    if int(n_points) < 2:
        raise InputError(f"a trajectory needs at least 2 points, got {n_points}")
    t = torch.linspace(0, 1, int(n_points), dtype=torch.float64)[:, None]
    return ((1 - t) * a + t * b).float()


def knn_graph(z, *, n_neighbors: int = 10, max_distance: float | None = None):
    """Symmetric k-nearest-neighbour graph of the latents, edges weighted by Euclidean distance.

    Particle ``i`` is joined to its ``n_neighbors`` nearest particles (scikit-learn
    ``NearestNeighbors``); an edge exists if either end chose the other. Edges longer than
    ``max_distance`` are dropped (so a path cannot jump a gap that few particles bridge).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(N, N)``, entry ``(i, j)`` the distance between particles i and j where joined.
    """
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    x = latents_as_numpy(z)
    n = x.shape[0]
    if n < 2:
        raise InputError(f"a neighbour graph needs at least 2 particles, got {n}")
    k = int(n_neighbors)
    if k < 1:
        raise InputError(f"number of neighbours must be at least 1, got {k}")
    k = min(k, n - 1)
    with limited_threads():
        distances, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    rows = np.repeat(np.arange(n), k)
    # column 0 is normally the point itself; drop self-matches wherever duplicates reorder them
    cols = neighbours[:, 1:].reshape(-1)
    vals = distances[:, 1:].reshape(-1)
    keep = cols != rows
    if max_distance is not None:
        keep &= vals <= float(max_distance)
    # tiny positive weight for duplicate latents: csgraph treats an explicit 0 as "no edge"
    vals = np.maximum(vals[keep], 1e-12)
    graph = sparse.csr_matrix((vals, (rows[keep], cols[keep])), shape=(n, n))
    return graph.maximum(graph.T).tocsr()


@dataclass(frozen=True)
class GraphPath:
    """A shortest path through the neighbour graph.

    Attributes
    ----------
    indices : (L,) int64 tensor
        Particles visited, first anchor to last (0-based rows of ``z``).
    z : (L, zdim) tensor
        Their latents.
    cumulative_distance : (L,) tensor
        Latent distance travelled along the path up to each particle (0 at the start).
    anchors : (A,) int64 tensor
        The particles the path was asked to join, in order.
    """

    indices: torch.Tensor
    z: torch.Tensor
    cumulative_distance: torch.Tensor
    anchors: torch.Tensor


def graph_path(z, anchors: Sequence[int], *, n_neighbors: int = 10, max_distance: float | None = None, graph=None) -> GraphPath:
    """Shortest path through the k-NN graph of the latents visiting ``anchors`` in order (Dijkstra).

    Between consecutive anchors the path is the shortest chain of neighbour-to-neighbour steps
    (:func:`scipy.sparse.csgraph.dijkstra`), so it runs through populated latent space. It is a
    geometric object: its direction is arbitrary (start and end could be swapped), and its
    length measures latent distance, not time or free energy.

    Parameters
    ----------
    z : (N, zdim)
        Latent means.
    anchors : sequence of >= 2 ints
        0-based particle indices to join (start, optional via points, end).
    n_neighbors, max_distance
        Graph construction (:func:`knn_graph`), unless ``graph`` is given.
    graph : scipy sparse matrix, optional
        A graph from :func:`knn_graph` to reuse.

    Raises
    ------
    InputError
        Anchors out of range, or not connected in the graph (raise ``n_neighbors``).
    """
    from scipy.sparse.csgraph import dijkstra

    x = latents_as_numpy(z)
    n = x.shape[0]
    a = [int(i) for i in anchors]
    if len(a) < 2:
        raise InputError(f"a path needs at least 2 anchor particles, got {len(a)}")
    bad = [i for i in a if not 0 <= i < n]
    if bad:
        raise InputError(f"particle index {bad[0]} out of range: there are {n} particles (0-based, 0…{n - 1})")
    if graph is None:
        graph = knn_graph(x, n_neighbors=n_neighbors, max_distance=max_distance)
    path = [a[0]]
    for start, end in zip(a[:-1], a[1:]):
        if start == end:
            continue
        dist, pred = dijkstra(graph, directed=False, indices=start, return_predecessors=True)
        if not np.isfinite(dist[end]):
            raise InputError(f"particles {start} and {end} are not connected in the {n_neighbors}-nearest-neighbour graph; use more neighbours")
        leg = [end]
        while leg[-1] != start:
            leg.append(int(pred[leg[-1]]))
        path.extend(reversed(leg[:-1]))
    idx = np.asarray(path, dtype=np.int64)
    steps = np.linalg.norm(np.diff(x[idx], axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    return GraphPath(
        indices=torch.as_tensor(idx),
        z=torch.as_tensor(x[idx], dtype=torch.float32),
        cumulative_distance=torch.as_tensor(cumulative, dtype=torch.float32),
        anchors=torch.as_tensor(a, dtype=torch.long),
    )


def resample_path(cumulative_distance, n_points: int) -> torch.Tensor:
    """Indices of ``n_points`` path nodes closest to evenly spaced distances along the path.

    Picks real particles (path nodes), not interpolated latents, so every frame of a movie along
    a graph path is the map of a latent that some particle has. The first and last nodes are
    always included; indices are non-decreasing.
    """
    d = as_tensor(cumulative_distance, dtype=torch.float64).reshape(-1)
    if d.numel() < 1:
        raise InputError("empty path")
    if int(n_points) < 1:
        raise InputError(f"number of points must be at least 1, got {n_points}")
    targets = torch.linspace(0, float(d[-1]), int(n_points), dtype=torch.float64)
    return (d[None, :] - targets[:, None]).abs().argmin(dim=1)


def volumes_along(volume_fn: Callable, z, *, batch_size: int = 4, show_progress: bool = True) -> torch.Tensor:
    """Decode latents ``(M, zdim)`` into maps ``(M, N, N, N)`` with ``volume_fn``, ``batch_size`` at a time.

    ``volume_fn(z_batch)`` takes a ``(B, zdim)`` float32 tensor and returns ``(B, N, N, N)`` maps
    (e.g. ``lambda z: generate_volumes(model, z)``, or an interpolation between known maps).
    """
    zz = as_tensor(z, dtype=torch.float32)
    if zz.dim() == 1:
        zz = zz[None]
    if zz.dim() != 2 or zz.shape[0] < 1:
        raise InputError(f"latents to decode must be (M, zdim), got shape {tuple(zz.shape)}")
    batch_size = max(1, int(batch_size))
    parts = []
    starts = range(0, zz.shape[0], batch_size)
    for lo in progress(starts, total=len(starts), desc="volumes", unit="batch", enabled=show_progress):
        batch = zz[lo : lo + batch_size]
        vols = as_tensor(volume_fn(batch))
        if vols.dim() != 4 or vols.shape[0] != batch.shape[0] or not (vols.shape[1] == vols.shape[2] == vols.shape[3]):
            raise InputError(f"volume_fn returned shape {tuple(vols.shape)} for {batch.shape[0]} latents; expected ({batch.shape[0]}, N, N, N)")
        parts.append(vols.detach().cpu())
    return torch.cat(parts)
