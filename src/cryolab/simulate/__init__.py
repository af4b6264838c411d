"""Simulated cryo-EM particle data sets: poses, CTFs, noise, heterogeneity, streamed to disk.

- :mod:`~cryolab.simulate.poses`: uniform SO(3), preferred orientations (von Mises–Fisher),
  tilted-stage geometry, in-plane shifts.
- :mod:`~cryolab.simulate.ctf_sampling`: CTF parameters from ranges or resampled from a real
  data set; the CTF applied on a padded canvas.
- :mod:`~cryolab.simulate.noise`: white Gaussian noise at a stated SNR and mask; electron
  counting at a dose with a detector MTF/DQE model.
- :mod:`~cryolab.simulate.states`: discrete states and trajectories of maps with a latent.
- :mod:`~cryolab.simulate.dataset`: the forward model in chunks, MRCS stacks and a RELION 3.1
  STAR file, reproducible from one seed.

Conventions: docs/conventions.md.
"""

from cryolab.simulate.ctf_sampling import (apply_ctf_padded, read_ctf_table, resample_ctf_params,
                                           sample_ctf_params, with_defocus_offset)
from cryolab.simulate.dataset import (ParticleParameters, SimulationResult, add_noise, calibrate_gaussian_sigma,
                                      clean_images, generator_for, particle_seeds, particle_table, prepare_maps,
                                      simulate_images, write_dataset)
from cryolab.simulate.noise import (GaussianNoise, PoissonNoise, add_gaussian_noise, apply_mtf, detector_mtf,
                                    gaussian_noise_sigma, interaction_constant, mask_description, masked_variance,
                                    measured_snr, poisson_counts, poisson_noise, signal_mask)
from cryolab.simulate.poses import (direction_to_rot_tilt, kappa_from_spread_deg, preferred_orientation_poses,
                                    rot_tilt_to_direction, sample_micrograph_positions, sample_shifts,
                                    sample_von_mises_fisher, stage_tilt_matrix, tilted_stage_poses, uniform_poses)
from cryolab.simulate.states import (MapAssignment, sample_discrete_states, sample_latent, single_map,
                                     trajectory_assignment)

__all__ = [
    "GaussianNoise", "MapAssignment", "ParticleParameters", "PoissonNoise", "SimulationResult",
    "add_gaussian_noise", "add_noise", "apply_ctf_padded", "apply_mtf", "calibrate_gaussian_sigma",
    "clean_images", "detector_mtf", "direction_to_rot_tilt", "gaussian_noise_sigma", "generator_for",
    "interaction_constant", "kappa_from_spread_deg", "mask_description", "masked_variance", "measured_snr",
    "particle_seeds", "particle_table", "poisson_counts", "poisson_noise", "preferred_orientation_poses",
    "prepare_maps", "read_ctf_table", "resample_ctf_params", "rot_tilt_to_direction", "sample_ctf_params",
    "sample_discrete_states", "sample_latent", "sample_micrograph_positions", "sample_shifts",
    "sample_von_mises_fisher", "signal_mask", "simulate_images", "single_map", "stage_tilt_matrix",
    "tilted_stage_poses", "trajectory_assignment", "uniform_poses", "with_defocus_offset", "write_dataset",
]
