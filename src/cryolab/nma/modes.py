"""Normal modes of elastic network models: the lowest eigenpairs of the ANM Hessian or GNM Kirchhoff.

The slowest (lowest-frequency) modes are the eigenvectors of the smallest non-zero eigenvalues.
Three solvers give the same modes:

- ``"dense"``: the full matrix and LAPACK's ``syevr`` for the lowest eigenpairs
  (``scipy.linalg.eigh(subset_by_index=...)``), ``O(d²)`` memory and ``O(d³)`` time in the
  number of degrees of freedom ``d`` (3N for ANM): the textbook route, and ProDy's; 8 d² bytes,
  so 7 GB for 10,000 Cα.
- ``"sparse"``: the sparse matrix (:mod:`cryolab.nma.network`) and ARPACK Lanczos in
  shift-invert mode (``scipy.sparse.linalg.eigsh`` with ``sigma`` slightly below 0): the
  eigenvalues nearest ``σ`` are the largest of ``(H − σI)⁻¹``, which Lanczos finds in a few
  dozen iterations. ``H − σI`` is positive definite; it is factorised once by SuperLU with a
  minimum-degree ordering of ``Hᵀ + H`` (fill stays near linear for the near-planar contact
  graphs of proteins), and each iteration is one triangular solve. Memory grows about linearly
  with the number of contacts.
- ``"prody"``: ProDy's ``ANM``/``GNM`` (dense), the reference implementation.

``"auto"`` takes the sparse solver whenever ``n_modes`` is given (it is the faster one from a
few hundred degrees of freedom on), and dense when all modes are asked for or the matrix is tiny.

Zero modes (rigid-body motions: 6 for ANM, 1 for GNM; more for a floppy network) are found with
the others and left out, as ProDy does: an eigenvalue is zero when below ``ZERO_EIGENVALUE``.

Signs: an eigenvector is defined up to sign; each is flipped so that its largest-magnitude
entry is positive, which makes results deterministic. Compare modes with ``|overlap|``.

Precision: eigenvalues and eigenvectors are float64 tensors, an exception to the float32
default (docs/conventions.md) because the low end of the spectrum spans several decades and
overlap and fluctuation sums accumulate over many modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from cryolab.errors import InputError
from cryolab.nma.network import (ANM_CUTOFF_A, GNM_CUTOFF_A, _coords, anm_hessian, check_network,
                                 contact_pairs, gnm_kirchhoff)

__all__ = ["NormalModes", "anm_modes", "gnm_modes", "lowest_eigenpairs", "ZERO_EIGENVALUE",
           "DENSE_MAX_DOF"]

#: Eigenvalues below this are zero modes (ProDy's ``ZERO``, for γ = 1).
ZERO_EIGENVALUE = 1e-6

#: ``method="auto"`` uses the dense solver up to this many degrees of freedom.
DENSE_MAX_DOF = 120

_METHODS = ("auto", "dense", "sparse", "prody")


@dataclass(frozen=True, eq=False)
class NormalModes:
    """The lowest non-zero modes of an elastic network.

    Attributes
    ----------
    eigenvalues : (k,) float64 tensor
        Ascending, in units of γ/Å² (ANM) or γ (GNM).
    eigenvectors : (d, k) float64 tensor
        Orthonormal columns; ``d = 3N`` for ANM (entries ``3 i + a``, a ∈ (x, y, z)) or ``N``
        for GNM. Same layout as ProDy's ``getEigvecs()``.
    coords_A : (N, 3) float64 tensor
        Node positions (Å) the network was built on.
    atom_indices : (N,) int64 tensor
        Index of each node in the atomic model it was selected from (``arange(N)`` if none).
    model : "anm" or "gnm"
    cutoff_A, gamma : float
        Network parameters.
    n_zero_modes : int
        Zero eigenvalues found and left out (6 for a rigid connected ANM network, 1 for GNM).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    coords_A: torch.Tensor
    atom_indices: torch.Tensor
    model: str
    cutoff_A: float
    gamma: float
    n_zero_modes: int

    @property
    def n_nodes(self) -> int:
        return int(self.coords_A.shape[0])

    @property
    def n_modes(self) -> int:
        return int(self.eigenvalues.shape[0])

    def vectors_xyz(self) -> torch.Tensor:
        """ANM eigenvectors as ``(k, N, 3)`` displacement fields (unit norm over all 3N entries)."""
        if self.model != "anm":
            raise InputError("GNM modes have no direction; 3D displacements need ANM modes")
        return self.eigenvectors.T.reshape(self.n_modes, self.n_nodes, 3)

    def select(self, mode_indices) -> "NormalModes":
        """The modes at ``mode_indices`` (0-based, into the non-zero modes)."""
        idx = torch.as_tensor(mode_indices, dtype=torch.long).reshape(-1)
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.n_modes):
            raise InputError(f"mode indices must be in 1 … {self.n_modes} (1-based), got "
                             f"{(idx + 1).tolist()}")
        return NormalModes(self.eigenvalues[idx], self.eigenvectors[:, idx], self.coords_A,
                           self.atom_indices, self.model, self.cutoff_A, self.gamma, self.n_zero_modes)


def _fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude entry is positive."""
    idx = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def lowest_eigenpairs(matrix, n_modes: int | None, *, n_expected_zeros: int, method: str = "auto",
                      zero: float = ZERO_EIGENVALUE) -> tuple[np.ndarray, np.ndarray, int]:
    """The ``n_modes`` smallest non-zero eigenpairs of a symmetric positive semi-definite matrix.

    Parameters
    ----------
    matrix : scipy sparse or dense (d, d)
    n_modes : int or None
        How many non-zero modes; None for all (dense only).
    n_expected_zeros : int
        Zero eigenvalues expected (6 ANM, 1 GNM); more are found if the network is floppy.
    method : "auto", "dense" or "sparse"
    zero : float
        Eigenvalues below it count as zero.

    Returns
    -------
    (values (k,), vectors (d, k), n_zeros) as float64 numpy arrays; ascending, signs fixed.
    """
    d = matrix.shape[0]
    if method == "auto":
        method = "dense" if n_modes is None or d <= DENSE_MAX_DOF else "sparse"
    if n_modes is None and method == "sparse":
        raise InputError("all modes (n_modes=None) need the dense solver")
    if n_modes is not None and n_modes < 1:
        raise InputError(f"number of modes must be at least 1, got {n_modes}")
    if method == "sparse" and (n_modes + n_expected_zeros + 2 >= d):
        method = "dense"  # ARPACK needs k < d; tiny problems are dense anyway
    if method == "dense":
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix, dtype=np.float64)
        k = d if n_modes is None else min(d, n_modes + n_expected_zeros + 2)
        while True:  # the lowest k eigenpairs (LAPACK syevr); more if the network is floppy
            subset = None if k >= d else [0, k - 1]
            w, v = scipy.linalg.eigh(dense, subset_by_index=subset)
            n_zeros = int((w < zero).sum())
            if n_modes is None or k >= d or len(w) - n_zeros >= n_modes:
                break
            k = min(d, n_zeros + n_modes + 2)
        stop = len(w) if n_modes is None else min(len(w), n_zeros + n_modes)
        return w[n_zeros:stop], _fix_signs(v[:, n_zeros:stop]), n_zeros
    if method != "sparse":
        raise InputError(f"eigensolver must be one of {_METHODS}, got {method!r}")

    a = sp.csc_matrix(matrix, dtype=np.float64)
    scale = float(np.abs(a.diagonal()).mean()) or 1.0
    sigma = -1e-4 * scale  # slightly below 0: H − σI is positive definite, zero modes come first
    lu = spla.splu(a - sigma * sp.identity(d, format="csc"), permc_spec="MMD_AT_PLUS_A")
    op_inv = spla.LinearOperator((d, d), matvec=lu.solve, matmat=lu.solve, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(d)  # deterministic start vector
    k = n_modes + n_expected_zeros
    while True:
        k_asked = min(k + 2, d - 1)
        w, v = spla.eigsh(a, k=k_asked, sigma=sigma, which="LM", OPinv=op_inv, v0=v0, tol=0)
        order = np.argsort(w)
        w, v = w[order], v[:, order]
        n_zeros = int((w < zero).sum())
        if len(w) - n_zeros >= n_modes or k_asked == d - 1:
            break
        k = n_zeros + n_modes  # a floppy network: more zero modes than expected
    stop = min(len(w), n_zeros + n_modes)
    return w[n_zeros:stop], _fix_signs(v[:, n_zeros:stop]), n_zeros


def _prody_modes(x: np.ndarray, model: str, n_modes, cutoff_A: float, gamma: float):
    import prody

    prody.confProDy(verbosity="none")
    if model == "anm":
        enm = prody.ANM("cryolab")
        enm.buildHessian(x, cutoff=cutoff_A, gamma=gamma)
    else:
        enm = prody.GNM("cryolab")
        enm.buildKirchhoff(x, cutoff=cutoff_A, gamma=gamma)
    enm.calcModes(n_modes=n_modes if n_modes is not None else "all", zeros=False)
    n_zeros = (6 if model == "anm" else 1)  # ProDy does not report how many it dropped
    return np.asarray(enm.getEigvals(), dtype=np.float64), _fix_signs(np.asarray(enm.getEigvecs(), dtype=np.float64)), n_zeros


def _modes(coords_A, model: str, n_modes, cutoff_A, gamma, method, atom_indices) -> NormalModes:
    if method not in _METHODS:
        raise InputError(f"method must be one of {_METHODS}, got {method!r}")
    x = _coords(coords_A)
    pairs = contact_pairs(x, cutoff_A) if len(x) >= 3 else None
    check_network(x, cutoff_A, pairs=pairs)
    if method == "prody":
        w, v, n_zeros = _prody_modes(x, model, n_modes, cutoff_A, gamma)
    else:
        build = anm_hessian if model == "anm" else gnm_kirchhoff
        matrix = build(x, cutoff_A=cutoff_A, gamma=gamma, pairs=pairs)
        w, v, n_zeros = lowest_eigenpairs(matrix, n_modes, n_expected_zeros=6 if model == "anm" else 1,
                                          method=method, zero=ZERO_EIGENVALUE * gamma)
    if atom_indices is None:
        idx = torch.arange(len(x))
    else:
        idx = torch.as_tensor(np.asarray(atom_indices), dtype=torch.long).reshape(-1)
        if idx.numel() != len(x):
            raise InputError(f"{idx.numel()} atom indices for {len(x)} nodes")
    return NormalModes(torch.from_numpy(np.ascontiguousarray(w)), torch.from_numpy(np.ascontiguousarray(v)),
                       torch.from_numpy(x.copy()), idx, model, float(cutoff_A), float(gamma), int(n_zeros))


def anm_modes(coords_A, *, n_modes: int | None = 20, cutoff_A: float = ANM_CUTOFF_A, gamma: float = 1.0,
              method: str = "auto", atom_indices=None) -> NormalModes:
    """Anisotropic network model: the ``n_modes`` slowest non-zero modes of the ANM Hessian.

    Parameters
    ----------
    coords_A : (N, 3)
        Node positions in Å (numpy, torch or sequence), e.g. the Cα atoms of a model:
        ``read_atoms(path, selection="//*/*/CA[C]").coords_A``.
    n_modes : int or None
        Number of non-zero modes (default 20); None for all (dense solver).
    cutoff_A, gamma
        Contact cutoff in Å (default 15, ProDy's) and spring constant (default 1).
    method : "auto", "dense", "sparse" or "prody"
        Eigensolver (module docstring).
    atom_indices : (N,), optional
        Indices of the nodes in their atomic model, stored with the modes.

    Returns
    -------
    NormalModes

    Raises
    ------
    InputError
        Fewer than 3 nodes, or a network that is disconnected at ``cutoff_A`` (the message gives
        the smallest cutoff that connects it).

    References
    ----------
    Atilgan et al. (2001) Biophys. J. 80, 505; Bakan, Meireles & Bahar (2011) Bioinformatics 27,
    1575 (ProDy).
    """
    return _modes(coords_A, "anm", n_modes, cutoff_A, gamma, method, atom_indices)


def gnm_modes(coords_A, *, n_modes: int | None = 20, cutoff_A: float = GNM_CUTOFF_A, gamma: float = 1.0,
              method: str = "auto", atom_indices=None) -> NormalModes:
    """Gaussian network model: the ``n_modes`` slowest non-zero modes of the Kirchhoff matrix.

    GNM modes are scalar per node (isotropic fluctuations): they give square fluctuations and
    cross-correlations but no directions. Parameters as :func:`anm_modes` (default cutoff 10 Å).

    References
    ----------
    Bahar, Atilgan & Erman (1997) Fold. Des. 2, 173; Haliloglu, Bahar & Erman (1997) Phys. Rev.
    Lett. 79, 3090.
    """
    return _modes(coords_A, "gnm", n_modes, cutoff_A, gamma, method, atom_indices)
