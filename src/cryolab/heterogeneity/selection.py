"""Choosing particles from the latent space, and writing the choice where other programs read it.

A selection is a sorted array of 0-based particle indices (rows of ``z.npy`` and of the particle
file the model was trained on). It is made

- by cluster (:func:`select_clusters`, from :func:`cryolab.heterogeneity.analysis.kmeans_latent`
  or ``gmm_latent`` labels),
- by a region of a 2D embedding — a lasso, i.e. a polygon given by its vertices
  (:func:`parse_polygon`, :func:`select_in_polygon`, :class:`matplotlib.path.Path`),
- or as latent outliers (:func:`latent_outlier_scores`, :func:`select_outliers`): junk
  particles (ice, aggregates, false picks) tend to be encoded away from the bulk, because the
  decoder cannot explain them with any map near the others.

:func:`invert_selection` gives the complement. The selection is written as a STAR subset of the
original particle file (:func:`subset_table` + :func:`cryolab.io.write_star`: every column kept,
image names unchanged, so the subset points at the original images) and as an index file
(:func:`write_index_file`: one index per line, or ``.npy`` int64; never a pickle).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.heterogeneity.analysis import latents_as_numpy, limited_threads

__all__ = [
    "OUTLIER_METHODS",
    "invert_selection",
    "latent_outlier_scores",
    "parse_polygon",
    "read_index_file",
    "select_clusters",
    "select_in_polygon",
    "select_outliers",
    "subset_table",
    "write_index_file",
]

OUTLIER_METHODS = ("mahalanobis", "knn")


def _indices(mask_or_idx: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(mask_or_idx, dtype=np.int64))


def select_clusters(labels, clusters: Sequence[int]) -> torch.Tensor:
    """Indices of the particles whose label is in ``clusters`` (sorted, 0-based).

    Raises InputError for cluster ids that no particle has (listing the ones that exist).
    """
    lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise InputError(f"cluster labels must be integers, got {lab.dtype}")
    wanted = [int(c) for c in clusters]
    if not wanted:
        raise InputError("no clusters given")
    present = np.unique(lab)
    unknown = sorted(set(wanted) - set(present.tolist()))
    if unknown:
        raise InputError(f"unknown cluster id(s) {', '.join(map(str, unknown))}; the clusters are {present.min()}…{present.max()} ({len(present)} with particles)")
    return _indices(np.flatnonzero(np.isin(lab, wanted)))


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_polygon(text: str) -> torch.Tensor:
    """Vertices of a polygon from ``"x1,y1 x2,y2 x3,y3 …"`` -> ``(V, 2)`` float64 tensor.

    Coordinates are in the units of the embedding they refer to. Needs at least 3 vertices; the
    polygon is closed automatically (the last vertex joins the first).
    """
    pairs = str(text).replace(";", " ").split()
    vertices = []
    for pair in pairs:
        m = re.fullmatch(rf"\s*({_NUMBER})\s*,\s*({_NUMBER})\s*", pair)
        if not m:
            raise InputError(f"cannot read polygon vertex {pair!r}; write vertices as \"x1,y1 x2,y2 x3,y3\"")
        vertices.append((float(m.group(1)), float(m.group(2))))
    if len(vertices) < 3:
        raise InputError(f"a polygon needs at least 3 vertices, got {len(vertices)}")
    return torch.tensor(vertices, dtype=torch.float64)


def select_in_polygon(coords, polygon) -> torch.Tensor:
    """Indices of the particles whose 2D embedding coordinates lie inside ``polygon`` (a lasso).

    Parameters
    ----------
    coords : (N, 2)
        Embedding coordinates (UMAP, or two principal coordinates).
    polygon : (V, 2)
        Vertices in the same units, in order (:func:`parse_polygon`).

    Raises
    ------
    InputError
        When no particle lies inside (the message gives the embedding's extent), which usually
        means the polygon refers to a different embedding.
    """
    from matplotlib.path import Path as PolygonPath

    c = np.asarray(as_tensor(coords, dtype=torch.float64))
    if c.ndim != 2 or c.shape[1] != 2:
        raise InputError(f"embedding coordinates must be (N, 2), got shape {c.shape}")
    p = np.asarray(as_tensor(polygon, dtype=torch.float64))
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 3:
        raise InputError(f"polygon must be (V >= 3, 2) vertices, got shape {p.shape}")
    inside = PolygonPath(p, closed=False).contains_points(c)
    if not inside.any():
        lo, hi = c.min(0), c.max(0)
        raise InputError(
            f"the polygon contains no particles; the embedding spans x {lo[0]:.3g}…{hi[0]:.3g}, "
            f"y {lo[1]:.3g}…{hi[1]:.3g}"
        )
    return _indices(np.flatnonzero(inside))


def latent_outlier_scores(z, *, method: str = "mahalanobis", n_neighbors: int = 10) -> torch.Tensor:
    """How far each particle's latent lies from the bulk; larger is more outlying. ``(N, zdim)`` -> ``(N,)``.

    ``"mahalanobis"``: ``sqrt((z - μ)ᵀ Σ⁻¹ (z - μ))`` with the mean and covariance of all
    latents — the distance in units of the cloud's own spread along each direction; simple, and
    right when the landscape is one connected blob. With several well-separated clusters it
    measures distance from their common centre, so sparse particles *between* clusters score low.

    ``"knn"``: mean Euclidean distance (latent units) to the ``n_neighbors`` nearest other
    particles — low in any dense region, whether one blob, several, or a thin curve; high for
    isolated particles. Not whitened: whitening would magnify directions in which the latents
    barely vary (noise) until they dominate every distance. Its inverse is a local density
    (:mod:`.traversal` uses it to weight paths).
    """
    from sklearn.neighbors import NearestNeighbors

    x = latents_as_numpy(z)
    n, d = x.shape
    if n < d + 2:
        raise InputError(f"outlier scores need more particles ({n}) than latent dimensions + 1 ({d + 1})")
    centred = x - x.mean(0)
    cov = np.cov(centred, rowvar=False).reshape(d, d)
    # whiten by the covariance; pinv-style floor so a flat latent direction does not blow up
    evals, evecs = np.linalg.eigh(cov)
    floor = max(float(evals.max()), 1e-300) * 1e-9
    white = centred @ evecs / np.sqrt(np.maximum(evals, floor))
    if method == "mahalanobis":
        scores = np.linalg.norm(white, axis=1)
    elif method == "knn":
        k = int(min(max(1, n_neighbors), n - 1))
        with limited_threads():
            distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
        scores = distances[:, 1:].mean(1)
    else:
        raise InputError(f"outlier method must be one of {', '.join(OUTLIER_METHODS)}, got {method!r}")
    return torch.as_tensor(scores, dtype=torch.float32)


def select_outliers(z, fraction: float, *, method: str = "mahalanobis", n_neighbors: int = 10) -> torch.Tensor:
    """Indices of the ``fraction`` of particles with the highest :func:`latent_outlier_scores` (sorted).

    ``fraction`` in (0, 1): e.g. 0.05 flags the 5 % most outlying latents (rounded to the
    nearest count, at least one). How many to set aside is a judgement: look at the images and
    reconstructions of the flagged particles before discarding them, since rare real states are
    outliers too.
    """
    f = float(fraction)
    if not 0 < f < 1:
        raise InputError(f"outlier fraction must be between 0 and 1 (exclusive), got {fraction}")
    scores = latent_outlier_scores(z, method=method, n_neighbors=n_neighbors).double().numpy()
    count = max(1, int(round(f * len(scores))))
    order = np.argsort(-scores, kind="stable")
    return _indices(np.sort(order[:count]))


def invert_selection(indices, n_particles: int) -> torch.Tensor:
    """The particles ``0 … n_particles-1`` not in ``indices`` (sorted)."""
    idx = np.asarray(as_tensor(indices, dtype=torch.long)).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n_particles):
        raise InputError(f"particle indices must be in 0…{n_particles - 1}")
    keep = np.ones(int(n_particles), dtype=bool)
    keep[idx] = False
    return _indices(np.flatnonzero(keep))


def subset_table(table: pd.DataFrame, indices) -> pd.DataFrame:
    """Rows ``indices`` of a particle table, every column and the table's metadata kept, in index order.

    Image names (``rlnImageName``) are unchanged, so the subset refers to the original images:
    write it with :func:`cryolab.io.write_star` and use it from the same project directory.
    """
    idx = np.asarray(as_tensor(indices, dtype=torch.long)).reshape(-1)
    n = len(table)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"particle index {int(idx.max() if idx.max() >= n else idx.min())} out of range for {n} particles", table.attrs.get("cryolab_source"))
    sub = table.iloc[idx].reset_index(drop=True)
    sub.attrs = dict(table.attrs)
    return sub


def write_index_file(path, indices) -> Path:
    """Write 0-based particle indices: ``.npy`` (int64 array) or text (one index per line), atomically."""
    path = Path(os.fspath(path))
    idx = np.asarray(as_tensor(indices, dtype=torch.long), dtype=np.int64).reshape(-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if path.suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, idx, allow_pickle=False)
        else:
            tmp.write_text("".join(f"{i}\n" for i in idx))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_index_file(path, *, n_particles: int | None = None) -> torch.Tensor:
    """Read 0-based particle indices written by :func:`write_index_file` (``.npy`` or text).

    Raises InputError for a missing file, non-integers, or (with ``n_particles``) an index out of
    range.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise InputError("index file not found", path)
    try:
        if path.suffix == ".npy":
            idx = np.load(path, allow_pickle=False)
        else:
            idx = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except Exception as exc:
        raise InputError(f"cannot read particle indices: {type(exc).__name__}: {exc}", path) from exc
    idx = np.asarray(idx).reshape(-1)
    if idx.size and (idx.dtype.kind not in "iuf" or not np.all(idx == np.round(idx))):
        raise InputError("particle indices must be integers", path)
    idx = idx.astype(np.int64)
    if n_particles is not None and idx.size and (idx.min() < 0 or idx.max() >= n_particles):
        raise InputError(f"particle indices must be in 0…{n_particles - 1}", path)
    return _indices(idx)
