"""3D reconstruction by direct Fourier inversion: back-projection, regularised division, half maps.

The map step and the reduce step are separate, so that a data set streams through memory and
partial results from chunks (or processes) simply add:

    partial = backproject_chunk(images, rotations, shifts_A, ctf, pixel_size_A=px)   # per chunk
    total = partial_a + partial_b                                                     # reduce
    volume = finalize(total, ssnr=...)                                                # the map

- :mod:`~cryolab.reconstruct.backproject`: :class:`PartialReconstruction` and
  :func:`backproject_chunk` — CTF-weighted image transforms and CTF² into padded 3D Fourier data
  and weight grids (the adjoint of ``cryolab.projection``'s slice extraction), symmetry copies
  included.
- :mod:`~cryolab.reconstruct.finalize`: :func:`finalize` — Friedel symmetrisation, Wiener-like
  division ``data / (weight + W̄ / SSNR)`` with a constant or FSC-derived SSNR
  (:func:`ssnr_from_fsc`), or RELION's iterative gridding weights; inverse FFT, crop,
  gridding correction and RELION's soft spherical mask on the corners.
- :mod:`~cryolab.reconstruct.driver`: :func:`reconstruct_from_particles` — gold-standard half
  sets streamed from a :class:`cryolab.io.ParticleSet`, half-map FSC, :class:`Reconstruction`.
- :mod:`~cryolab.reconstruct.symmetry`: :func:`symmetry_operators` for Cn, Dn, T, O, I (RELION's
  axes).
- :mod:`~cryolab.reconstruct.fbp`: :func:`filtered_backprojection` (ramp filter, for teaching).

Conventions: docs/conventions.md (poses ``A`` map → view, origins ``image(x) = P(x + o)``, the
CTF sign, shells ``round(|k| N)``).
"""

from cryolab.reconstruct.backproject import INSERT_METHODS, PartialReconstruction, backproject_chunk
from cryolab.reconstruct.driver import (REGULARISATIONS, Reconstruction, default_workers, half_set_assignment,
                                        reconstruct_from_particles, reconstruct_halves)
from cryolab.reconstruct.fbp import filtered_backprojection, ramp_filter_rfft
from cryolab.reconstruct.finalize import (DEFAULT_WIENER_CONSTANT, FINALIZE_METHODS, finalize, mask_outside_sphere,
                                          regularised_division, relion_gridding_weights, ssnr_from_fsc, table_to_map)
from cryolab.reconstruct.symmetry import as_symmetry_operators, symmetry_operators, symmetry_order

__all__ = [
    "DEFAULT_WIENER_CONSTANT",
    "FINALIZE_METHODS",
    "INSERT_METHODS",
    "PartialReconstruction",
    "REGULARISATIONS",
    "Reconstruction",
    "as_symmetry_operators",
    "backproject_chunk",
    "default_workers",
    "filtered_backprojection",
    "finalize",
    "half_set_assignment",
    "mask_outside_sphere",
    "ramp_filter_rfft",
    "reconstruct_from_particles",
    "reconstruct_halves",
    "regularised_division",
    "relion_gridding_weights",
    "ssnr_from_fsc",
    "symmetry_operators",
    "symmetry_order",
    "table_to_map",
]
