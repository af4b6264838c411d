"""Atomic models and their Coulomb potential: the start of the cryo-EM forward model.

- :mod:`~cryolab.atoms.model`: :class:`AtomicModel`, :func:`read_atoms` (PDB / mmCIF via
  gemmi), :func:`builtin_model` (adenylate kinase open / closed, shipped with cryolab).
- :mod:`~cryolab.atoms.scattering`: Peng et al. (1996) electron scattering factors.
- :mod:`~cryolab.atoms.potential`: :func:`atoms_to_potential` (3D, volts),
  :func:`project_atoms` (2D projections, V·Å, RELION rotation convention), :func:`choose_box`.

Conventions: docs/conventions.md (coordinates ``(x, y, z)`` in Å, arrays ``(z, y, x)``,
box centre at ``N // 2``).
"""

from cryolab.atoms.model import (BUILTIN_MODELS, AtomicModel, builtin_model, infer_element,
                                 read_atoms)
from cryolab.atoms.potential import atoms_to_potential, center_of_mass, choose_box, project_atoms
from cryolab.atoms.scattering import (POTENTIAL_PER_SCATTERING_V_A2, atomic_masses,
                                      peng_coefficients)

__all__ = [
    "AtomicModel", "read_atoms", "builtin_model", "infer_element", "BUILTIN_MODELS",
    "peng_coefficients", "atomic_masses", "POTENTIAL_PER_SCATTERING_V_A2",
    "atoms_to_potential", "project_atoms", "choose_box", "center_of_mass",
]
