"""2D classification by maximum-likelihood expectation-maximization (RELION Class2D, ML2D).

- :mod:`~cryolab.classify2d.teaching`: Nelson's treatment in plain real space — one template
  with unknown shifts (1D), then several classes (2D) — with the likelihood written out.
- :mod:`~cryolab.classify2d.model`: settings, state, batches, sufficient statistics.
- :mod:`~cryolab.classify2d.em`: the full method in Fourier space — :func:`e_step`,
  :func:`m_step` and the driver :func:`run_em`.
- :mod:`~cryolab.classify2d.sampling`: offset grids, in-plane rotation of images and weights.
- :mod:`~cryolab.classify2d.data`: batches from memory or streamed from disk.

Conventions: docs/conventions.md (``rlnAnglePsi``, ``rlnOriginXAngst/YAngst``, RELION CTF).
"""

from cryolab.classify2d.data import batches_from_particles, batches_from_tensors
from cryolab.classify2d.em import (Class2DResult, ExpectationContext, IterationRecord,
                                   e_step, initial_state, m_step, prepare_expectation, reseed_empty_classes,
                                   run_em)
from cryolab.classify2d.model import (Class2DSettings, Class2DState, Class2DStats, ParticleAssignments,
                                      ParticleBatch)
from cryolab.classify2d.sampling import offset_grid_A, rotate_images

__all__ = [
    "Class2DResult", "Class2DSettings", "Class2DState", "Class2DStats", "ExpectationContext", "IterationRecord",
    "ParticleAssignments", "ParticleBatch", "batches_from_particles", "batches_from_tensors",
    "e_step", "reseed_empty_classes", "initial_state", "m_step", "offset_grid_A", "prepare_expectation",
    "rotate_images", "run_em",
]
