"""Conformational heterogeneity: a cryoDRGN-style variational autoencoder and its latent space.

- :mod:`~cryolab.heterogeneity.model`: :class:`HetModelConfig`, :class:`HetVAE` (image encoder,
  Fourier-space coordinate decoder with positional encoding), rendering of particle images.
- :mod:`~cryolab.heterogeneity.training`: the loss (Gaussian likelihood + β·KL), one step,
  epochs, checkpoints (``checkpoints/epoch_001.pt``), :func:`train_vae`, :func:`load_checkpoint`.
- :mod:`~cryolab.heterogeneity.volumes`: maps at latent coordinates, :func:`generate_volumes`,
  :func:`write_volumes`.

Conventions: docs/conventions.md. Commands: ``cryolab train-vae``, ``cryolab eval-vol``.
"""

from cryolab.heterogeneity.model import (HetModelConfig, HetVAE, disc_half_plane, positional_encoding,
                                         positional_frequencies, render_images, slice_coordinates)
from cryolab.heterogeneity.training import (EpochStats, LossTerms, ParticleData, TrainingResult, VAEBatch,
                                            checkpoint_path, choose_num_threads, encode_particles, estimate_data_scale, find_checkpoint,
                                            load_checkpoint, loss_terms, prepare_batch, read_checkpoint, sample_fourier_points,
                                            save_checkpoint, train_epoch, train_step, train_vae)
from cryolab.heterogeneity.volumes import generate_volumes, volume_pixel_size_A, write_volumes

__all__ = [
    "EpochStats", "HetModelConfig", "HetVAE", "LossTerms", "ParticleData", "TrainingResult", "VAEBatch",
    "checkpoint_path", "choose_num_threads", "disc_half_plane", "encode_particles", "estimate_data_scale", "find_checkpoint",
    "generate_volumes", "load_checkpoint", "loss_terms", "positional_encoding", "positional_frequencies",
    "prepare_batch", "read_checkpoint", "render_images", "sample_fourier_points", "save_checkpoint", "slice_coordinates", "train_epoch",
    "train_step", "train_vae", "volume_pixel_size_A", "write_volumes",
]
