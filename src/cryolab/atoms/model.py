"""Atomic models: reading PDB / mmCIF files into a small frozen dataclass.

Coordinates are ``(x, y, z)`` in Å, as in the file (docs/conventions.md). Reading goes through
gemmi (first model only). Where a PDB file has no element column (CHARMM / NAMD / MDAnalysis
output), elements are inferred from atom and residue names by :func:`infer_element`, because
gemmi's PDB rule reads a left-aligned ``"CA  "`` as calcium and ``"HG1 "`` as mercury.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import gemmi
import numpy as np

from cryolab.errors import InputError

__all__ = ["AtomicModel", "read_atoms", "builtin_model", "infer_element", "BUILTIN_MODELS"]

#: Built-in models shipped in ``cryolab/data`` (see the REMARK header of each file).
BUILTIN_MODELS = {
    "adk_open": "adk_open.pdb.gz",
    "adk_closed": "adk_closed.pdb.gz",
}

# Residue names of water in PDB, CHARMM, AMBER and GROMACS files.
_WATER_RESIDUES = frozenset({"HOH", "WAT", "H2O", "DOD", "D2O", "SOL", "TIP", "TIP3", "TIP4",
                             "TIP5", "T3P", "T4P", "SPC", "OH2"})

# Single-atom ion residues (PDB chemical components and CHARMM names) -> element.
_ION_RESIDUES = {
    "NA": "Na", "K": "K", "MG": "Mg", "CA": "Ca", "ZN": "Zn", "CL": "Cl", "MN": "Mn",
    "FE": "Fe", "FE2": "Fe", "CU": "Cu", "CU1": "Cu", "CO": "Co", "NI": "Ni", "CD": "Cd",
    "BR": "Br", "IOD": "I", "LI": "Li", "RB": "Rb", "CS": "Cs", "SR": "Sr", "BA": "Ba",
    "HG": "Hg", "F": "F",
    "SOD": "Na", "POT": "K", "CLA": "Cl", "CAL": "Ca", "CES": "Cs", "LIT": "Li", "RUB": "Rb",
    "ZN2": "Zn", "MG2": "Mg",
}


@dataclass(frozen=True, eq=False)
class AtomicModel:
    """Atoms of one model of a structure, as numpy arrays of length ``n_atoms``.

    Attributes
    ----------
    coords_A : (n, 3) float64, Cartesian ``(x, y, z)`` in Å.
    elements : (n,) str, element symbols as in the periodic table (``"C"``, ``"Zn"``).
    bfactors_A2 : (n,) float64, isotropic B-factors in Å² (``B = 8π² <u²>``).
    occupancies : (n,) float64.
    atom_names, residue_names, chain_ids : (n,) str.
    residue_ids : (n,) int64, residue sequence numbers (insertion codes are not kept).

    The arrays are made read-only; build a modified model with :func:`dataclasses.replace`.
    """

    coords_A: np.ndarray
    elements: np.ndarray
    bfactors_A2: np.ndarray
    occupancies: np.ndarray
    atom_names: np.ndarray
    residue_names: np.ndarray
    residue_ids: np.ndarray
    chain_ids: np.ndarray
    source: str = field(default="")

    def __post_init__(self):
        coords = np.asarray(self.coords_A, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise InputError(f"coords_A must have shape (n, 3), got {coords.shape}")
        n = coords.shape[0]
        arrays = {
            "coords_A": coords,
            "elements": np.asarray(self.elements, dtype=str),
            "bfactors_A2": np.asarray(self.bfactors_A2, dtype=np.float64),
            "occupancies": np.asarray(self.occupancies, dtype=np.float64),
            "atom_names": np.asarray(self.atom_names, dtype=str),
            "residue_names": np.asarray(self.residue_names, dtype=str),
            "residue_ids": np.asarray(self.residue_ids, dtype=np.int64),
            "chain_ids": np.asarray(self.chain_ids, dtype=str),
        }
        for name, arr in arrays.items():
            if name != "coords_A" and arr.shape != (n,):
                raise InputError(f"{name} must have shape ({n},), got {arr.shape}")
            arr = arr.copy() if arr is getattr(self, name) else arr
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return self.coords_A.shape[0]

    def __repr__(self) -> str:
        kinds, counts = np.unique(self.elements, return_counts=True)
        comp = " ".join(f"{k}{c}" for k, c in zip(kinds, counts))
        return f"AtomicModel({len(self)} atoms: {comp}; source={self.source!r})"


def infer_element(atom_name: str, residue_name: str = "") -> str:
    """Element symbol from a PDB atom name when the file has no element column.

    Rules, in order: a single-atom ion residue (``ZN``, ``MG``, CHARMM ``SOD``, ``CLA``...) gives
    its element; the name ``SE`` is selenium; otherwise the first letter of the name after
    leading digits (``"1HB"`` -> H, ``"CA"`` -> C, ``"HG1"`` -> H, ``"OT1"`` -> O), with ``D``
    read as hydrogen. This is the rule for the names of polymer atoms that CHARMM, NAMD and
    MDAnalysis write left-aligned; for unusual ligand atoms an element column is needed.

    Returns ``"X"`` when nothing fits.
    """
    res = residue_name.strip().upper()
    name = atom_name.strip().upper()
    if res in _ION_RESIDUES:
        return _ION_RESIDUES[res]
    stripped = name.lstrip("0123456789")
    if stripped.startswith("SE") and res in ("MSE", "SEC", "SE"):
        return "Se"
    if not stripped:
        return "X"
    first = stripped[0]
    if first == "D":
        return "H"
    if first in "HCNOSP":
        return first
    for candidate in (stripped[:2], first):
        el = gemmi.Element(candidate.capitalize())
        if el.atomic_number > 0:
            return el.name
    return "X"


def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", errors="replace") as fh:
        return fh.read()


def _pdb_has_element_column(text: str) -> bool:
    """True if any ATOM/HETATM record of the first model fills columns 77-78."""
    for line in text.splitlines():
        if line.startswith("ENDMDL"):
            break
        if line.startswith(("ATOM  ", "HETATM")) and line[76:78].strip():
            return True
    return False


def read_atoms(path, *, selection: str | None = None, hydrogens: bool = True,
               waters: bool = True) -> AtomicModel:
    """Read the first model of a PDB or mmCIF file (optionally gzipped) into an AtomicModel.

    Parameters
    ----------
    path : str or Path
        ``.pdb``, ``.ent``, ``.cif``, ``.mmcif`` (``.gz`` allowed); the format is detected by
        gemmi from the name and content.
    selection : str, optional
        A gemmi selection in MMDB CID syntax, applied to the first model, e.g. ``"/1/A"`` (chain
        A), ``"//A/10-50"`` (residues 10-50 of chain A), ``"//A/*/CA"`` (C-alpha atoms of
        chain A), ``"[C,N,O]"`` (elements). See
        https://gemmi.readthedocs.io/en/latest/analysis.html#selections.
    hydrogens : bool
        Keep hydrogen (and deuterium) atoms. Default True.
    waters : bool
        Keep water molecules (HOH, WAT, TIP3, SOL, ...). Default True.

    Returns
    -------
    AtomicModel
        All alternate conformations are kept, each with its occupancy.

    Raises
    ------
    InputError
        If the file cannot be read, has no atoms after filtering, or the selection is invalid.

    Notes
    -----
    Where a PDB file has no element column in any ATOM/HETATM record, elements are inferred with
    :func:`infer_element` (gemmi's own inference misreads CHARMM-style left-aligned names).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"cannot read structure: {exc}", path) from exc
    if len(st) == 0:
        raise InputError("no atoms (no model in file)", path)
    is_pdb = st.input_format == gemmi.CoorFormat.Pdb
    reinfer = is_pdb and not _pdb_has_element_column(_read_text(path))

    model = st[0]
    if reinfer:  # before selecting, so that element selections like "[S]" see the right ones
        for chain in model:
            for res in chain:
                for atom in res:
                    atom.element = gemmi.Element(infer_element(atom.name, res.name))
    if selection is not None:
        try:
            model = gemmi.Selection(selection).copy_model_selection(model)
        except (RuntimeError, ValueError) as exc:
            raise InputError(f"invalid selection {selection!r}: {exc}", path) from exc

    rows = []
    for chain in model:
        for res in chain:
            is_water = res.is_water() or res.name.strip().upper() in _WATER_RESIDUES
            if is_water and not waters:
                continue
            for atom in res:
                element = atom.element.name
                if element == "D":
                    element = "H"
                if not hydrogens and element == "H":
                    continue
                p = atom.pos
                rows.append((p.x, p.y, p.z, element, atom.b_iso, atom.occ, atom.name,
                             res.name, res.seqid.num, chain.name))
    if not rows:
        raise InputError("no atoms" + (f" match selection {selection!r}" if selection else ""),
                         path)
    cols = list(zip(*rows))
    return AtomicModel(
        coords_A=np.column_stack(cols[:3]),
        elements=np.array(cols[3], dtype=str),
        bfactors_A2=np.array(cols[4], dtype=np.float64),
        occupancies=np.array(cols[5], dtype=np.float64),
        atom_names=np.array(cols[6], dtype=str),
        residue_names=np.array(cols[7], dtype=str),
        residue_ids=np.array(cols[8], dtype=np.int64),
        chain_ids=np.array(cols[9], dtype=str),
        source=str(path),
    )


def builtin_model(name: str, *, hydrogens: bool = True) -> AtomicModel:
    """Load a model shipped with cryolab.

    ``"adk_open"``: E. coli adenylate kinase, open state (PDB 4AKE chain A);
    ``"adk_closed"``: closed state (PDB 1AKE chain A). Both have the same 3341 atoms (hydrogens
    included, CHARMM names) in the same order, so they form a two-state pair for heterogeneity
    tests. Coordinates come from MDAnalysis's test files adk_open.pdb / adk_closed.pdb (derived
    from the wwPDB entries, CC0); the shipped files add an element column and a provenance header.
    """
    if name not in BUILTIN_MODELS:
        raise InputError(f"unknown built-in model {name!r}; choose from {sorted(BUILTIN_MODELS)}")
    ref = resources.files("cryolab") / "data" / BUILTIN_MODELS[name]
    with resources.as_file(ref) as path:
        model = read_atoms(path, hydrogens=hydrogens)
    return model
