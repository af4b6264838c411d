"""Deforming a full atomic model along normal modes, and writing the result for a molecular viewer.

Modes are computed on nodes (usually Cα); the full model follows them residue by residue: every
atom is displaced exactly as its residue's node (so side chains move rigidly with their Cα).
Atoms in residues without a node (ligands, ions, water) follow the nearest node.

Amplitudes are stated in Å of RMSD over **all atoms of the model**: moving along mode k with
amplitude ``a`` displaces the model so that its RMSD from the reference is exactly ``|a|`` (no
superposition; the modes contain no rigid-body motion). Several modes add their displacements;
the RMSD of a combination is then close to, not exactly, ``sqrt(Σ a_k²)`` (the expanded fields
are only nearly orthogonal once residues of different sizes are weighted by their atoms).

The displacements are linear (first order in the amplitude): large amplitudes stretch bonds, as
in every linear NMA trajectory; keep them to a few Å.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gemmi
import numpy as np
import torch
from scipy.spatial import cKDTree

from cryolab.atoms import AtomicModel
from cryolab.errors import InputError
from cryolab.nma.modes import NormalModes

__all__ = ["match_atoms", "node_of_atom", "mode_displacements", "displace_along_modes",
           "mode_trajectory", "with_coordinates", "write_multimodel_pdb"]


def _keys(model: AtomicModel, with_name: bool) -> np.ndarray:
    parts = [model.chain_ids.astype(object), model.residue_ids.astype(str).astype(object),
             model.residue_names.astype(object)]
    if with_name:
        parts.append(model.atom_names.astype(object))
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    return key.astype(str)


def match_atoms(model: AtomicModel, subset: AtomicModel) -> np.ndarray:
    """Index in ``model`` of every atom of ``subset`` (matched by chain, residue number and name, atom name).

    Use it to find the selected nodes in the full model: ``read_atoms(path)`` and
    ``read_atoms(path, selection=...)``. Where a key repeats (alternate locations), the k-th
    occurrence in ``subset`` matches the k-th in ``model``. Returns ``(len(subset),)`` int64 (numpy).
    """
    full, sub = _keys(model, True), _keys(subset, True)
    # occurrence number of each key, so that repeated keys pair up in order
    def occurrence(keys):
        order = np.argsort(keys, kind="stable")
        k = keys[order]
        first = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1]
        occ_sorted = np.arange(len(k)) - np.repeat(first, np.diff(np.r_[first, len(k)]))
        occ = np.empty(len(k), dtype=np.int64)
        occ[order] = occ_sorted
        return occ
    lookup = {(k, o): i for i, (k, o) in enumerate(zip(full.tolist(), occurrence(full).tolist()))}
    out = np.empty(len(sub), dtype=np.int64)
    for n, (k, o) in enumerate(zip(sub.tolist(), occurrence(sub).tolist())):
        if (k, o) not in lookup:
            chain, resid, resname, name = k.split("|")
            raise InputError(f"atom {name} of {resname} {resid} (chain {chain!r}) is not in the full model")
        out[n] = lookup[(k, o)]
    return out


def node_of_atom(model: AtomicModel, node_indices) -> np.ndarray:
    """For every atom of ``model``, the node (index into ``node_indices``) whose motion it follows (numpy).

    A node follows itself; another atom follows the node of its residue (the nearest one if the
    residue has several); an atom of a residue without a node follows the nearest node.
    """
    nodes = np.asarray(node_indices, dtype=np.int64).reshape(-1)
    if nodes.size == 0:
        raise InputError("no nodes to follow")
    if nodes.min() < 0 or nodes.max() >= len(model):
        raise InputError(f"node indices must lie in 0 … {len(model) - 1}")
    res_keys = _keys(model, False)
    uniq, res_of_atom = np.unique(res_keys, return_inverse=True)
    res_of_node = res_of_atom[nodes]
    count = np.bincount(res_of_node, minlength=len(uniq))
    out = np.full(len(model), -1, dtype=np.int64)
    single = np.full(len(uniq), -1, dtype=np.int64)
    single[res_of_node[count[res_of_node] == 1]] = np.flatnonzero(count[res_of_node] == 1)
    has_single = count[res_of_atom] == 1
    out[has_single] = single[res_of_atom[has_single]]
    xyz = model.coords_A
    for r in np.flatnonzero(count > 1):  # residues with several nodes (all-atom networks)
        members = np.flatnonzero(res_of_node == r)
        atoms = np.flatnonzero(res_of_atom == r)
        d = ((xyz[atoms, None, :] - xyz[nodes[members]][None]) ** 2).sum(-1)
        out[atoms] = members[np.argmin(d, axis=1)]
    out[nodes] = np.arange(len(nodes))
    orphan = out < 0
    if orphan.any():
        _, nearest = cKDTree(xyz[nodes]).query(xyz[orphan])
        out[orphan] = nearest
    return out


def mode_displacements(modes: NormalModes, node_of_atom_index, *, mode_indices=None) -> torch.Tensor:
    """Unit-RMSD displacement fields of the full model, ``(m, n_atoms, 3)`` float64.

    Field k moves every atom with its node along mode k, scaled so that its root-mean-square
    over all atoms is 1 Å.
    """
    m = modes if mode_indices is None else modes.select(mode_indices)
    v = m.vectors_xyz()  # (m, N, 3)
    idx = torch.as_tensor(np.asarray(node_of_atom_index), dtype=torch.long)
    if idx.numel() and (idx.min() < 0 or idx.max() >= m.n_nodes):
        raise InputError(f"node_of_atom refers to nodes outside 0 … {m.n_nodes - 1}")
    u = v[:, idx, :]
    rms = u.pow(2).sum(-1).mean(-1).sqrt()
    return u / rms[:, None, None]


def displace_along_modes(coords_A, modes: NormalModes, amplitudes_A, *, node_of_atom_index,
                         mode_indices=None) -> torch.Tensor:
    """Coordinates moved along modes: ``x + Σ_k a_k u_k``, shape ``(..., n_atoms, 3)`` float64.

    Parameters
    ----------
    coords_A : (n_atoms, 3)
        The reference (full) model the modes were computed on, Å.
    modes : NormalModes
        ANM modes of nodes of that model.
    amplitudes_A : (..., m)
        Amplitude along each selected mode in Å RMSD over all atoms (module docstring); leading
        dimensions are a batch (conformations). A scalar or ``(m,)`` gives one conformation.
    node_of_atom_index : (n_atoms,)
        From :func:`node_of_atom`.
    mode_indices : (m,), optional
        0-based modes (default all of ``modes``).
    """
    x = torch.from_numpy(np.array(coords_A, dtype=np.float64)) if not isinstance(coords_A, torch.Tensor) \
        else coords_A.to(torch.float64)
    u = mode_displacements(modes, node_of_atom_index, mode_indices=mode_indices)  # (m, n, 3)
    if x.shape != u.shape[1:]:
        raise InputError(f"coordinates {tuple(x.shape)} do not match the {u.shape[1]} atoms of node_of_atom")
    a = amplitudes_A.to(torch.float64) if isinstance(amplitudes_A, torch.Tensor) else \
        torch.from_numpy(np.array(amplitudes_A, dtype=np.float64))
    if a.ndim == 0:
        a = a.reshape(1)
    if a.shape[-1] != u.shape[0]:
        raise InputError(f"{a.shape[-1]} amplitudes per conformation for {u.shape[0]} modes")
    return x + torch.einsum("...m,mnc->...nc", a, u)


def mode_trajectory(coords_A, modes: NormalModes, mode_index: int, *, node_of_atom_index,
                    amplitude_A: float = 3.0, n_frames: int = 11) -> torch.Tensor:
    """Frames along one mode from ``−amplitude_A`` to ``+amplitude_A`` (Å RMSD), ``(n_frames, n_atoms, 3)``.

    The middle frame (odd ``n_frames``) is the reference structure.
    """
    if n_frames < 2:
        raise InputError(f"a trajectory needs at least 2 frames, got {n_frames}")
    if not amplitude_A > 0:
        raise InputError(f"amplitude must be positive (Å RMSD), got {amplitude_A}")
    a = torch.linspace(-amplitude_A, amplitude_A, n_frames, dtype=torch.float64)[:, None]
    return displace_along_modes(coords_A, modes, a, node_of_atom_index=node_of_atom_index,
                                mode_indices=[mode_index])


def with_coordinates(model: AtomicModel, coords_A) -> AtomicModel:
    """A copy of ``model`` with new ``(n_atoms, 3)`` coordinates (Å)."""
    x = coords_A.detach().cpu().numpy() if isinstance(coords_A, torch.Tensor) else np.asarray(coords_A)
    x = np.asarray(x, dtype=np.float64)
    if x.shape != model.coords_A.shape:
        raise InputError(f"coordinates {x.shape} do not match the model's {model.coords_A.shape}")
    return dataclasses.replace(model, coords_A=x)


def _gemmi_model(number: int):
    try:
        return gemmi.Model(number)  # gemmi >= 0.7 numbers models
    except TypeError:
        return gemmi.Model(str(number))  # older gemmi names them


def write_multimodel_pdb(model: AtomicModel, frames_A, path) -> Path:
    """Write ``(F, n_atoms, 3)`` frames of ``model`` as a multi-model PDB file (gemmi), atomically.

    One ``MODEL``/``ENDMDL`` per frame, atoms in the model's order with its names, residues,
    chains, B-factors, occupancies and elements; ChimeraX and PyMOL play it as a trajectory.
    """
    frames = frames_A.detach().cpu().numpy() if isinstance(frames_A, torch.Tensor) else np.asarray(frames_A)
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or frames.shape[1:] != model.coords_A.shape:
        raise InputError(f"frames must be (F, {len(model)}, 3), got {frames.shape}")
    st = gemmi.Structure()
    st.setup_cell_images()
    # residue boundaries: a new residue where chain, number or name changes
    ch, rid, rn = model.chain_ids, model.residue_ids, model.residue_names
    new_res = np.r_[True, (ch[1:] != ch[:-1]) | (rid[1:] != rid[:-1]) | (rn[1:] != rn[:-1])]
    for f, xyz in enumerate(frames):
        gm = _gemmi_model(f + 1)
        chain = None
        residue = None
        for i in range(len(model)):
            if chain is None or (i > 0 and ch[i] != ch[i - 1]):
                if chain is not None:
                    if residue is not None:
                        chain.add_residue(residue)
                        residue = None
                    gm.add_chain(chain)
                chain = gemmi.Chain(str(ch[i]))
            if new_res[i]:
                if residue is not None:
                    chain.add_residue(residue)
                residue = gemmi.Residue()
                residue.name = str(rn[i])
                residue.seqid = gemmi.SeqId(int(rid[i]), " ")
            atom = gemmi.Atom()
            atom.name = str(model.atom_names[i])
            atom.element = gemmi.Element(str(model.elements[i]))
            atom.pos = gemmi.Position(*xyz[i])
            atom.b_iso = float(model.bfactors_A2[i])
            atom.occ = float(model.occupancies[i])
            residue.add_atom(atom)
        if residue is not None:
            chain.add_residue(residue)
        if chain is not None:
            gm.add_chain(chain)
        st.add_model(gm)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    options = gemmi.PdbWriteOptions()
    options.minimal_file = True  # coordinates only: no SEQRES/CRYST1 invented for a trajectory
    options.cryst1_record = False
    st.write_pdb(str(tmp), options)
    tmp.replace(path)
    return path
