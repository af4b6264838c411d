"""Elastic network models: contacts within a cutoff, the ANM Hessian and the GNM Kirchhoff matrix.

Nodes are atoms (usually Cα) at positions ``r_i`` (Å, ``(x, y, z)``). Two nodes interact with a
Hookean spring of force constant ``gamma`` when ``|r_j − r_i| ≤ cutoff_A``.

- **GNM** (Bahar, Atilgan & Erman 1997): the Kirchhoff (connectivity) matrix
  ``Γ_ij = −γ`` for contacts, ``Γ_ii = −Σ_j Γ_ij``; ``N × N``, one zero eigenvalue per
  connected component.
- **ANM** (Atilgan et al. 2001): the Hessian of ``E = γ/2 Σ (|r_ij| − |r⁰_ij|)²`` at the
  reference structure, ``3N × 3N`` in 3 × 3 blocks ``H_ij = −γ d dᵀ / |d|²`` (``d = r_j − r_i``)
  for contacts and ``H_ii = −Σ_j H_ij``; six zero eigenvalues (rigid-body motions) for a
  network that is connected and rigid.

Both are built sparse from a ``scipy.spatial.cKDTree`` neighbour search, so memory grows as the
number of contacts (about 40 per Cα at 15 Å), not as ``N²``. They are returned as SciPy sparse
matrices (float64), the format SciPy's eigensolvers take; ``.toarray()`` gives the dense matrix.
Default cutoffs and force constant follow ProDy (ANM 15 Å, GNM 10 Å, γ = 1).

References
----------
Bahar, Lezon, Bakan & Shrivastava (2010) Chem. Rev. 110, 1463, section 2 (theory).
Atilgan et al. (2001) Biophys. J. 80, 505 (ANM). Bahar, Atilgan & Erman (1997) Fold. Des. 2, 173 (GNM).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

from cryolab.errors import InputError

__all__ = ["ANM_CUTOFF_A", "GNM_CUTOFF_A", "contact_pairs", "anm_hessian", "gnm_kirchhoff",
           "network_components", "smallest_connecting_cutoff", "check_network", "replicate_on_lattice"]

#: ProDy's default cutoffs (Å).
ANM_CUTOFF_A = 15.0
GNM_CUTOFF_A = 10.0


def _coords(coords_A) -> np.ndarray:
    """(n, 3) float64 numpy coordinates from numpy, torch or a sequence."""
    if hasattr(coords_A, "detach"):
        coords_A = coords_A.detach().cpu().numpy()
    x = np.asarray(coords_A, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise InputError(f"coordinates must have shape (n, 3), got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("coordinates contain NaN or infinite values")
    return x


def _check_parameters(cutoff_A: float, gamma: float) -> None:
    if not cutoff_A > 0:
        raise InputError(f"cutoff must be positive (Å), got {cutoff_A}")
    if not gamma > 0:
        raise InputError(f"force constant gamma must be positive, got {gamma}")


def contact_pairs(coords_A, cutoff_A: float) -> np.ndarray:
    """Pairs of nodes closer than the cutoff, ``(P, 2)`` int64 with ``i < j`` (numpy).

    A pair is a contact when ``|r_j − r_i| ≤ cutoff_A`` (ProDy's rule). Found with a k-d tree,
    ``O(N log N + P)``. Coincident nodes (distance 0) are rejected: a spring has no direction.
    """
    x = _coords(coords_A)
    if not cutoff_A > 0:
        raise InputError(f"cutoff must be positive (Å), got {cutoff_A}")
    pairs = cKDTree(x).query_pairs(float(cutoff_A), output_type="ndarray").astype(np.int64)
    if len(pairs):
        d2 = ((x[pairs[:, 1]] - x[pairs[:, 0]]) ** 2).sum(1)
        if (d2 == 0).any():
            i, j = pairs[np.argmax(d2 == 0)]
            raise InputError(f"nodes {i} and {j} have identical coordinates; an elastic network "
                             "needs distinct positions (duplicate atoms or alternate locations?)")
    return pairs


def gnm_kirchhoff(coords_A, *, cutoff_A: float = GNM_CUTOFF_A, gamma: float = 1.0,
                  pairs: np.ndarray | None = None) -> sp.csr_matrix:
    """GNM Kirchhoff matrix ``Γ`` (``N × N``, scipy CSR, float64): ``−γ`` per contact, degree · γ on the diagonal.

    Parameters
    ----------
    coords_A : (N, 3)
        Node positions in Å.
    cutoff_A, gamma
        Contact cutoff in Å (default 10, ProDy's) and spring constant.
    pairs
        Contacts from :func:`contact_pairs`, if already found.
    """
    x = _coords(coords_A)
    _check_parameters(cutoff_A, gamma)
    n = len(x)
    p = contact_pairs(x, cutoff_A) if pairs is None else pairs
    i, j = p[:, 0], p[:, 1]
    degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    rows = np.concatenate([i, j, np.arange(n)])
    cols = np.concatenate([j, i, np.arange(n)])
    vals = np.concatenate([np.full(2 * len(i), -gamma), gamma * degree.astype(np.float64)])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def anm_hessian(coords_A, *, cutoff_A: float = ANM_CUTOFF_A, gamma: float = 1.0,
                pairs: np.ndarray | None = None) -> sp.csr_matrix:
    """ANM Hessian (``3N × 3N``, scipy CSR, float64), row/column ``3 i + a`` for node i, axis a ∈ (x, y, z).

    Off-diagonal 3 × 3 blocks ``H_ij = −γ d dᵀ / |d|²`` with ``d = r_j − r_i`` for each contact,
    diagonal blocks ``H_ii = −Σ_{j≠i} H_ij`` (Atilgan et al. 2001; ProDy's ``ANM.buildHessian``).
    Assembled as a block-sparse (BSR) matrix from the contact list, so the index arrays are
    per block, not per entry; about ``(2 P + N) · 9 · 12`` bytes in CSR.

    Parameters
    ----------
    coords_A : (N, 3)
        Node positions in Å.
    cutoff_A, gamma
        Contact cutoff in Å (default 15, ProDy's) and spring constant.
    pairs
        Contacts from :func:`contact_pairs`, if already found.
    """
    x = _coords(coords_A)
    _check_parameters(cutoff_A, gamma)
    n = len(x)
    p = contact_pairs(x, cutoff_A) if pairs is None else pairs
    i, j = p[:, 0], p[:, 1]
    d = x[j] - x[i]
    off = (d[:, :, None] * d[:, None, :]) * (-gamma / (d * d).sum(1))[:, None, None]  # (P, 3, 3), exactly symmetric
    diag = np.zeros((n, 3, 3))
    np.add.at(diag, i, -off)
    np.add.at(diag, j, -off)
    block_rows = np.concatenate([i, j, np.arange(n)])
    block_cols = np.concatenate([j, i, np.arange(n)])
    order = np.lexsort((block_cols, block_rows))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(block_rows, minlength=n), out=indptr[1:])
    blocks = np.concatenate([off, off, diag])[order]  # H_ij = H_ji (symmetric blocks)
    del off, diag
    h = sp.bsr_matrix((blocks, block_cols[order], indptr), shape=(3 * n, 3 * n))
    return h.tocsr()


def network_components(coords_A, cutoff_A: float, *, pairs: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """Connected components of the contact graph: ``(count, labels (N,) int)`` (numpy)."""
    x = _coords(coords_A)
    p = contact_pairs(x, cutoff_A) if pairs is None else pairs
    n = len(x)
    graph = sp.coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    return int(count), labels


def smallest_connecting_cutoff(coords_A, *, start_A: float = 10.0) -> float:
    """The smallest cutoff (Å) at which the contact graph of all nodes is connected.

    This is the longest edge of the Euclidean minimum spanning tree. The tree is computed on
    the contacts within a radius that starts at ``start_A`` and grows by 1.5× until the graph
    is connected, so memory stays that of a sparse contact list.
    """
    x = _coords(coords_A)
    n = len(x)
    if n < 2:
        return 0.0
    tree = cKDTree(x)
    radius = float(start_A)
    while True:
        dist = tree.sparse_distance_matrix(tree, radius, output_type="coo_matrix")
        count, _ = connected_components(dist, directed=False)
        if count == 1:
            break
        radius *= 1.5
    mst = minimum_spanning_tree(dist.tocsr())
    return float(mst.data.max()) if mst.nnz else 0.0


def check_network(coords_A, cutoff_A: float, *, pairs: np.ndarray | None = None) -> None:
    """Raise :class:`InputError` unless the nodes form one connected network at ``cutoff_A``.

    The message names the number of pieces and the smallest cutoff that connects them (rounded
    up to 0.1 Å), because a disconnected network adds zero modes (rigid motions of each piece)
    that carry no information about the structure.
    """
    x = _coords(coords_A)
    if len(x) < 3:
        raise InputError(f"an elastic network needs at least 3 atoms, the selection has {len(x)}")
    count, labels = network_components(x, cutoff_A, pairs=pairs)
    if count > 1:
        sizes = np.bincount(labels)
        need = math.ceil(smallest_connecting_cutoff(x, start_A=cutoff_A) * 10 + 1e-9) / 10
        raise InputError(f"the network at cutoff {cutoff_A:g} Å falls into {count} disconnected pieces "
                         f"(of {', '.join(str(s) for s in sorted(sizes, reverse=True)[:5])}"
                         f"{', …' if count > 5 else ''} atoms); the smallest cutoff that connects it is "
                         f"{need:.1f} Å")


def replicate_on_lattice(coords_A, n_copies: int, *, gap_A: float = 3.0) -> np.ndarray:
    """A large connected assembly for scaling tests: ``n_copies`` copies of a structure on a cubic lattice (numpy).

    Copies are translated (not rotated) to the points of an ``m × m × m`` lattice
    (``m = ceil(n_copies^(1/3))``, filled x fastest, then y, then z) whose spacing along
    each axis is the structure's extent plus ``gap_A``. Neighbouring copies share contacts when
    ``gap_A`` is well below the network cutoff, so the assembly is one elastic network with six
    zero modes. With a gap near or above the cutoff the copies decouple: each adds six zero (or
    near-zero) modes, which is why the gap is small (3 Å by default for a 15 Å cutoff); check with
    :func:`network_components`.

    Returns ``(n_copies · N, 3)`` float64, copy by copy.
    """
    x = _coords(coords_A)
    if n_copies < 1:
        raise InputError(f"need at least one copy, got {n_copies}")
    if gap_A < 0:
        raise InputError(f"gap must be non-negative (Å), got {gap_A}")
    m = 1
    while m**3 < n_copies:
        m += 1
    spacing = (x.max(0) - x.min(0)) + gap_A
    k = np.arange(n_copies)
    cells = np.stack([k % m, (k // m) % m, k // (m * m)], axis=1)
    return ((x - x.min(0))[None] + (cells * spacing)[:, None, :]).reshape(-1, 3)
