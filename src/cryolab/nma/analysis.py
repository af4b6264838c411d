"""What normal modes say: fluctuations, collectivity, and how well they describe an observed change.

- :func:`square_fluctuations`: ``⟨ΔR_i²⟩ ∝ Σ_k |v_k,i|² / λ_k`` (ProDy's ``calcSqFlucts``), in
  units of k_BT/γ (Å² when γ is in k_BT/Å²).
- :func:`collectivity`: Brüschweiler's (1995) ``κ = exp(−Σ_i u_i² ln u_i²) / N`` with
  ``u_i² = |v_i|² / Σ_j |v_j|²``: 1 when every node moves equally, 1/N when one node moves.
- :func:`superpose` (Kabsch 1976) and :func:`conformational_change`: the displacement between
  two states of the same atoms after optimal superposition.
- :func:`mode_overlap`, :func:`cumulative_overlap`, :func:`overlap_matrix`: cosines between
  modes and a displacement (Tama & Sanejouand 2001; Marques & Sanejouand 1995).

All functions accept numpy or torch and return float64 torch tensors (see
:mod:`cryolab.nma.modes` on precision).
"""

from __future__ import annotations

import numpy as np
import torch

from cryolab.errors import InputError
from cryolab.nma.modes import NormalModes

__all__ = ["square_fluctuations", "collectivity", "superpose", "rmsd", "conformational_change",
           "mode_overlap", "cumulative_overlap", "overlap_matrix"]


def _f64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    return torch.from_numpy(np.array(x, dtype=np.float64))  # a copy: inputs may be read-only


def _points(x, what: str) -> torch.Tensor:
    t = _f64(x)
    if t.ndim < 2 or t.shape[-1] != 3:
        raise InputError(f"{what} must have shape (..., N, 3), got {tuple(t.shape)}")
    return t


def square_fluctuations(modes: NormalModes, *, mode_indices=None) -> torch.Tensor:
    """Square fluctuation of each node, ``Σ_k |v_k,i|² / λ_k`` over the modes, shape (N,).

    Parameters
    ----------
    modes : NormalModes
    mode_indices : optional
        0-based modes to sum over (default all computed modes).

    Notes
    -----
    With ``γ`` in units of ``k_BT/Å²`` the result is ``⟨ΔR_i²⟩`` in Å² (ANM: 3D, summed over x,
    y, z; GNM: the same up to a factor 3). Over the lowest modes only, it is the slow-mode part,
    which dominates. Equals ProDy's ``calcSqFlucts``.
    """
    m = modes if mode_indices is None else modes.select(mode_indices)
    v2 = m.eigenvectors**2 / m.eigenvalues  # (d, k)
    per_entry = v2.sum(1)
    return per_entry.reshape(m.n_nodes, 3).sum(1) if m.model == "anm" else per_entry


def collectivity(modes: NormalModes) -> torch.Tensor:
    """Brüschweiler's collectivity of each mode, shape (k,), in ``[1/N, 1]``.

    ``κ = exp(−Σ_i u_i² ln u_i²) / N`` with ``u_i² = |v_i|² / Σ_j |v_j|²`` (uniform masses), the
    exponential of the displacement entropy divided by N: the fraction of nodes that move.

    References
    ----------
    Brüschweiler (1995) J. Chem. Phys. 102, 3396, eq. 5.
    """
    v = modes.eigenvectors.T  # (k, d)
    u2 = (v**2).reshape(modes.n_modes, modes.n_nodes, -1).sum(-1)
    u2 = u2 / u2.sum(1, keepdim=True)
    entropy = -torch.special.xlogy(u2, u2).sum(1)
    return torch.exp(entropy) / modes.n_nodes


def superpose(mobile_A, target_A, *, weights=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimal rigid superposition (Kabsch): ``R, t`` minimising ``Σ w_i |R x_i + t − y_i|²``.

    Parameters
    ----------
    mobile_A, target_A : (N, 3)
        The same atoms in two conformations (Å).
    weights : (N,), optional
        Non-negative weights (default uniform).

    Returns
    -------
    (moved (N, 3), rotation (3, 3), translation (3,)) with ``moved = mobile @ Rᵀ + t``; R is a
    proper rotation (det +1).

    References
    ----------
    Kabsch (1976) Acta Cryst. A32, 922; (1978) A34, 827.
    """
    x, y = _points(mobile_A, "mobile coordinates"), _points(target_A, "target coordinates")
    if x.shape != y.shape or x.ndim != 2:
        raise InputError(f"superposition needs two (N, 3) arrays of the same atoms, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else _f64(weights).reshape(-1)
    if w.numel() != x.shape[0] or (w < 0).any() or w.sum() <= 0:
        raise InputError("weights must be N non-negative numbers with a positive sum")
    w = w / w.sum()
    cx, cy = (w[:, None] * x).sum(0), (w[:, None] * y).sum(0)
    cov = ((x - cx) * w[:, None]).T @ (y - cy)  # (3, 3): Σ w x yᵀ
    u, _, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(vt.T @ u.T))
    fix = torch.diag(torch.tensor([1.0, 1.0, float(d) if d != 0 else 1.0], dtype=torch.float64))
    rot = vt.T @ fix @ u.T
    t = cy - rot @ cx
    return x @ rot.T + t, rot, t


def rmsd(a_A, b_A) -> torch.Tensor:
    """Root-mean-square deviation (Å) between ``(..., N, 3)`` coordinate sets, without superposition."""
    a, b = _points(a_A, "coordinates"), _points(b_A, "coordinates")
    return ((a - b) ** 2).sum(-1).mean(-1).sqrt()


def conformational_change(reference_A, other_A) -> torch.Tensor:
    """Displacement ``(N, 3)`` from ``reference`` to ``other`` after superposing ``other`` onto it (Kabsch).

    The reference frame is the one the modes were computed in, so the result can be compared
    with them by :func:`mode_overlap`.
    """
    ref = _points(reference_A, "reference coordinates")
    moved, _, _ = superpose(other_A, ref)
    return moved - ref


def mode_overlap(modes: NormalModes, displacement) -> torch.Tensor:
    """Cosine between each mode and a displacement, ``o_k = v_k · d / |d|``, shape (k,), signed.

    Parameters
    ----------
    modes : NormalModes
        ANM modes.
    displacement : (N, 3) or (3N,)
        E.g. :func:`conformational_change` of the same nodes.

    Notes
    -----
    ``Σ_k o_k² ≤ 1`` (modes are orthonormal); ``|o_k|`` is what the literature reports, the sign
    says in which direction along the mode the change lies.

    References
    ----------
    Marques & Sanejouand (1995) Proteins 23, 557; Tama & Sanejouand (2001) Protein Eng. 14, 1.
    """
    if modes.model != "anm":
        raise InputError("overlap with a 3D displacement needs ANM modes, not GNM")
    d = _f64(displacement).reshape(-1)
    if d.numel() != modes.eigenvectors.shape[0]:
        raise InputError(f"displacement has {d.numel() // 3} nodes, the modes {modes.n_nodes}")
    norm = torch.linalg.vector_norm(d)
    if norm == 0:
        raise InputError("the two conformations are identical (zero displacement)")
    return modes.eigenvectors.T @ d / norm


def cumulative_overlap(overlaps) -> torch.Tensor:
    """``CO(k) = sqrt(Σ_{j≤k} o_j²)``: the fraction of the change captured by the first k modes, shape (k,)."""
    o = _f64(overlaps)
    return torch.sqrt(torch.cumsum(o**2, dim=-1))


def overlap_matrix(vectors_a, vectors_b) -> torch.Tensor:
    """``|v_a,i · v_b,j|`` between two sets of unit column vectors ``(d, ka)`` and ``(d, kb)``, shape (ka, kb)."""
    a, b = _f64(vectors_a), _f64(vectors_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise InputError(f"vector sets must be (d, k) with the same d, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a.T @ b).abs()
