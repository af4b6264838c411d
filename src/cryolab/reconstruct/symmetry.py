"""Point-group symmetry operators in RELION's axis conventions (Cn, Dn, T, O, I and I1–I4).

A map with point-group symmetry G satisfies ``V(R x) = V(x)`` for every ``R`` in G (``x`` map
coordinates ``(x, y, z)`` about the centre voxel ``N//2``). Each group is generated from the
rotation axes RELION uses (``src/symmetries.cpp``, ``SymList::fill_symmetry_class``), and closed
under multiplication:

=======  ============================================================================
group    generators (axis ``(x, y, z)``, fold)
=======  ============================================================================
Cn       n-fold about z
Dn       n-fold about z, 2-fold about x
T        3-fold about z, 2-fold about ``(0, √(2/3), √(1/3))``
O        3-fold about ``(1, 1, 1)/√3``, 4-fold about z
I (I2)   2-fold about z, 5-fold about ``(1, 0, φ)/√(1+φ²)``, 3-fold about
         ``(0, 1/φ, φ)/√3`` (φ the golden ratio; the 2-fold axes lie on x, y, z)
I1       2-fold about x, 5-fold about ``(0.8507, 0, -0.5257)``, 3-fold about ``(0.9342, 0.3568, 0)``
I3       5-fold about z (RELION's numbers for the 2- and 3-fold axes)
I4       5-fold about ``(0.8944, 0, 0.4472)`` (RELION's numbers)
=======  ============================================================================

Groups with mirror planes or an inversion (Ci, Cs, Cnv, Cnh, Sn, Dnv, Dnh, Td, Th, Oh, Ih) describe
chiral-inconsistent objects and are not supported (a protein map has none of them).

Reference: RELION ``src/symmetries.cpp`` (after Xmipp); the groups and their orders follow any
crystallography text, e.g. International Tables for Crystallography Vol. A, ch. 10.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError

__all__ = ["symmetry_operators", "symmetry_order", "as_symmetry_operators"]

_PHI = (1 + math.sqrt(5)) / 2

# group name -> list of (fold, axis); the axes are normalised below
_GENERATORS: dict[str, list[tuple[int, tuple[float, float, float]]]] = {
    "T": [(3, (0.0, 0.0, 1.0)), (2, (0.0, math.sqrt(2 / 3), math.sqrt(1 / 3)))],
    "O": [(3, (1.0, 1.0, 1.0)), (4, (0.0, 0.0, 1.0))],
    "I": [(2, (0.0, 0.0, 1.0)), (5, (1.0, 0.0, _PHI)), (3, (0.0, 1 / _PHI, _PHI))],
    "I1": [(2, (1.0, 0.0, 0.0)), (5, (_PHI, 0.0, -1.0)), (3, (_PHI, 1 / _PHI, 0.0))],
    "I3": [
        (2, (-0.5257311143, 0.0, 0.8506508070)),
        (5, (0.0, 0.0, 1.0)),
        (3, (-0.4911234778630044, 0.3568220764705179, 0.7946544753759428)),
    ],
    "I4": [
        (2, (0.5257311143, 0.0, 0.8506508070)),
        (5, (0.8944271932547096, 0.0, 0.4472135909903704)),
        (3, (0.4911234778630044, 0.3568220764705179, 0.7946544753759428)),
    ],
}
_GENERATORS["I2"] = _GENERATORS["I"]

_ORDERS = {"T": 12, "O": 24, "I": 60, "I1": 60, "I2": 60, "I3": 60, "I4": 60}

_UNSUPPORTED = re.compile(r"^(CI|CS|C\d+[VH]|S\d+|D\d+[VH]|TD|TH|OH|I\d?H)$")


def _axis_rotation(axis, angle_rad: float) -> np.ndarray:
    """Rotation by ``angle_rad`` about the unit ``axis`` (right-handed, Rodrigues' formula)."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


def _nearest_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    return u @ vt


def _close_group(generators: list[np.ndarray], expected_order: int) -> np.ndarray:
    """All products of the generators (breadth first), identity first; float64 ``(G, 3, 3)``.

    Two products are the same operator when they agree to 1e-5 (RELION's axes are given to ~10
    digits, so products of its generators drift by ~1e-9 from the exact group).
    """
    found = [np.eye(3)]
    frontier = list(found)
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                m = _nearest_rotation(a @ g)
                if min(np.abs(m - f).max() for f in found) > 1e-5:
                    found.append(m)
                    new.append(m)
        frontier = new
        if len(found) > expected_order:
            raise AssertionError(f"symmetry closure produced more than {expected_order} operators")
    return np.stack(found)


def _parse(group: str) -> tuple[str, int | None]:
    name = str(group).strip().upper()
    m = re.fullmatch(r"([CD])(\d+)", name)
    if m:
        n = int(m.group(2))
        if n < 1:
            raise InputError(f"symmetry order must be >= 1, got {group!r}")
        return m.group(1), n
    if name in _GENERATORS:
        return name, None
    if _UNSUPPORTED.match(name):
        raise InputError(f"symmetry group {group!r} contains mirror or inversion operations; only rotation groups "
                         "(Cn, Dn, T, O, I, I1-I4) are supported")
    raise InputError(f"unknown symmetry group {group!r}; expected Cn, Dn, T, O, I or I1-I4 (e.g. C1, C4, D7, I)")


def symmetry_order(group: str) -> int:
    """Number of operators of a point group: ``n`` for Cn, ``2n`` for Dn, 12, 24 and 60 for T, O, I."""
    kind, n = _parse(group)
    if kind == "C":
        return n
    if kind == "D":
        return 2 * n
    return _ORDERS[kind]


def symmetry_operators(group: str = "C1", *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rotation matrices of a point group, with RELION's axis conventions (module docstring).

    Parameters
    ----------
    group
        ``"C1"``, ``"C4"``, ``"D7"``, ``"T"``, ``"O"``, ``"I"`` (= ``"I2"``), ``"I1"``, ``"I3"``,
        ``"I4"`` (case-insensitive), as RELION's ``--sym``.
    dtype
        Floating dtype of the result.

    Returns
    -------
    ``(G, 3, 3)`` tensor of proper rotations ``R`` acting on map coordinates ``(x, y, z)``; the
    identity comes first. A map with this symmetry has ``V(R x) = V(x)``; a particle seen with
    pose ``A`` (``cryolab.rotations`` convention) is seen identically with every pose ``A R``.

    Raises
    ------
    InputError
        Unknown group, or a group with mirror planes / inversion.
    """
    kind, n = _parse(group)
    if kind == "C":
        gens = [_axis_rotation((0, 0, 1), 2 * math.pi / n)]
    elif kind == "D":
        gens = [_axis_rotation((0, 0, 1), 2 * math.pi / n), _axis_rotation((1, 0, 0), math.pi)]
    else:
        gens = [_axis_rotation(axis, 2 * math.pi / fold) for fold, axis in _GENERATORS[kind]]
    ops = _close_group(gens, symmetry_order(group))
    ops[np.abs(ops) < 1e-12] = 0.0
    return torch.as_tensor(ops, dtype=dtype)


def as_symmetry_operators(symmetry, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(G, 3, 3)`` operators from a group name (:func:`symmetry_operators`) or from matrices."""
    if symmetry is None:
        return torch.eye(3, dtype=dtype, device=device)[None]
    if isinstance(symmetry, str):
        return symmetry_operators(symmetry, dtype=dtype).to(device)
    ops = as_tensor(symmetry, dtype=dtype, device=device)
    if ops.dim() == 2:
        ops = ops[None]
    if ops.dim() != 3 or tuple(ops.shape[-2:]) != (3, 3):
        raise InputError(f"symmetry operators must have shape (G, 3, 3), got {tuple(ops.shape)}")
    return ops
