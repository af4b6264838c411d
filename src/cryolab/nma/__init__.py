"""Normal mode analysis: elastic network models and physics-based conformational heterogeneity.

- :mod:`~cryolab.nma.network`: contacts (k-d tree), the sparse ANM Hessian and GNM Kirchhoff
  matrix, connectivity checks (:func:`smallest_connecting_cutoff`), lattice assemblies for
  scaling tests (:func:`replicate_on_lattice`).
- :mod:`~cryolab.nma.modes`: :func:`anm_modes`, :func:`gnm_modes` → :class:`NormalModes`, with
  a dense (torch), a sparse shift-invert Lanczos (scipy) and a ProDy solver.
- :mod:`~cryolab.nma.analysis`: :func:`square_fluctuations`, :func:`collectivity`,
  :func:`superpose` (Kabsch), :func:`conformational_change`, :func:`mode_overlap`,
  :func:`cumulative_overlap`, :func:`overlap_matrix`, :func:`rmsd`.
- :mod:`~cryolab.nma.deform`: the full atomic model moved along modes (every atom with its
  residue's node; amplitudes in Å RMSD), trajectories, multi-model PDB files.
- :mod:`~cryolab.nma.ensemble`: latent amplitudes (Gaussian, mixture), conformations binned into
  maps for :func:`cryolab.simulate.write_dataset`, or projected particle by particle.

Typical use (4AKE, Cα network)::

    full = read_atoms("adk_open.pdb")
    ca = read_atoms("adk_open.pdb", selection=DEFAULT_SELECTION)
    nodes = match_atoms(full, ca)
    modes = anm_modes(ca.coords_A, n_modes=20, atom_indices=nodes)
    frames = mode_trajectory(full.coords_A, modes, 0, node_of_atom_index=node_of_atom(full, nodes))

Conventions: coordinates ``(x, y, z)`` in Å (docs/conventions.md); results are float64 torch
tensors (see :mod:`cryolab.nma.modes`).

References: Bahar, Lezon, Bakan & Shrivastava (2010) Chem. Rev. 110, 1463; Bakan, Meireles &
Bahar (2011) Bioinformatics 27, 1575 (ProDy).
"""

from cryolab.nma.analysis import (collectivity, conformational_change, cumulative_overlap, mode_overlap,
                                  overlap_matrix, rmsd, square_fluctuations, superpose)
from cryolab.nma.deform import (displace_along_modes, match_atoms, mode_displacements, mode_trajectory,
                                node_of_atom, with_coordinates, write_multimodel_pdb)
from cryolab.nma.ensemble import (LATENT_DISTRIBUTIONS, bin_amplitudes, conformation_assignment,
                                  conformation_maps, project_conformations, sample_mode_amplitudes)
from cryolab.nma.modes import DENSE_MAX_DOF, ZERO_EIGENVALUE, NormalModes, anm_modes, gnm_modes, lowest_eigenpairs
from cryolab.nma.network import (ANM_CUTOFF_A, GNM_CUTOFF_A, anm_hessian, check_network, contact_pairs,
                                 gnm_kirchhoff, network_components, replicate_on_lattice,
                                 smallest_connecting_cutoff)

#: Cα atoms of every chain of the first model (gemmi CID); ``[C]`` leaves out calcium ions named CA.
DEFAULT_SELECTION = "//*/*/CA[C]"

__all__ = [
    "ANM_CUTOFF_A", "DEFAULT_SELECTION", "DENSE_MAX_DOF", "GNM_CUTOFF_A", "LATENT_DISTRIBUTIONS",
    "NormalModes", "ZERO_EIGENVALUE", "anm_hessian", "anm_modes", "bin_amplitudes", "check_network",
    "collectivity", "conformation_assignment", "conformation_maps", "conformational_change", "contact_pairs",
    "cumulative_overlap", "displace_along_modes", "gnm_kirchhoff", "gnm_modes", "lowest_eigenpairs",
    "match_atoms", "mode_displacements", "mode_overlap", "mode_trajectory", "network_components",
    "node_of_atom", "overlap_matrix", "project_conformations", "replicate_on_lattice", "rmsd", "sample_mode_amplitudes",
    "smallest_connecting_cutoff", "square_fluctuations", "superpose", "with_coordinates",
    "write_multimodel_pdb",
]
