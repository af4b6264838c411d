"""Fourier transforms, frequency grids, shells, resampling and filters (docs/conventions.md)."""

from cryolab.fourier.grids import fftfreq_grid, fftfreq_magnitude

__all__ = ["fftfreq_grid", "fftfreq_magnitude"]
