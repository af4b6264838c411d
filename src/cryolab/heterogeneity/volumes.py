"""Maps from a trained :class:`~cryolab.heterogeneity.model.HetVAE`: the decoder on the 3D Fourier grid.

For latent coordinate ``z`` the map's transform is the decoder ``f(k, z)`` itself, so a map of
box ``n`` is the decoder evaluated on the rfft grid of an ``n³`` box and inverse transformed:

    V_n = irfftn_centered( f(k · n / D, z) · D · data_scale · (n / D)³ ),   |k · n / D| ≤ (D//2)/D,

with ``k`` in cycles/voxel of the ``n`` box and ``D`` the training box (units in
:mod:`cryolab.heterogeneity.model`). At ``n = D`` this is the map whose projections
``Σ_z V`` reproduce the training images; another ``n`` gives the same map Fourier-padded (or
cropped) to ``n`` with sample values preserved (:func:`cryolab.fourier.fourier_pad`'s scaling),
at pixel size ``pixel_size_A · N / n``. Frequencies beyond the training band are zero. Only the
``kx ≥ 0`` half of the grid is evaluated; the decoder is Hermitian by construction, so the map
is real (``irfftn`` symmetrises the ``kx = 0`` plane). The map is centred at ``n // 2``
(docs/conventions.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import fftfreq_grid, irfft_centered
from cryolab.heterogeneity.model import HetVAE

__all__ = ["generate_volumes", "volume_pixel_size_A", "write_volumes"]


def volume_pixel_size_A(model: HetVAE, box_size: int | None = None) -> float:
    """Pixel size (Å) of maps generated at ``box_size`` (default: the training box)."""
    n = model.config.train_box_size if box_size is None else int(box_size)
    return model.config.pixel_size_A * model.config.box_size / n


def _grid_points(n: int, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """rfft-grid frequencies of an ``n³`` box in cycles/voxel of the training box ``d``, within its band."""
    k = fftfreq_grid((n, n, n), rfft=True, device=device).reshape(-1, 3) * (n / d)
    radius = (d // 2) / d
    index = torch.nonzero(torch.linalg.vector_norm(k, dim=-1) <= radius * (1 + 1e-6)).squeeze(-1)
    return k[index], index


def generate_volumes(model: HetVAE, z=None, *, box_size: int | None = None, batch_size: int = 32768) -> torch.Tensor:
    """Real-space maps ``(M, n, n, n)`` of the decoder at latent coordinates ``z`` (module docstring).

    Parameters
    ----------
    model
        A trained :class:`HetVAE` (e.g. from :func:`cryolab.heterogeneity.training.load_checkpoint`).
    z
        ``(M, zdim)`` latent coordinates (a single ``(zdim,)`` vector is one map). For a
        homogeneous model (``zdim == 0``) None gives one map.
    box_size
        ``n``: box of the maps in voxels; default the training box ``D``. The voxel size is
        :func:`volume_pixel_size_A`.
    batch_size
        Fourier points evaluated per decoder call (sets the memory, not the result).

    Returns
    -------
    float32 ``(M, n, n, n)`` maps centred at ``n // 2``, on the model's device, in the units of
    the training images (their projections reproduce the images at ``n = D``).
    """
    zdim = model.config.zdim
    if z is None:
        if zdim > 0:
            raise InputError(f"the model has a {zdim}-dimensional latent space: give z of shape (M, {zdim})")
        z = torch.zeros(1, 0)
    z = as_tensor(z, dtype=torch.float32, device=model.device)
    if z.dim() == 1:
        z = z[None] if zdim > 0 or z.numel() == 0 else z[:, None]
    if z.dim() != 2 or z.shape[1] != zdim:
        raise InputError(f"z must have shape (M, {zdim}), got {tuple(z.shape)}")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    d = model.config.train_box_size
    n = d if box_size is None else int(box_size)
    if n < 2:
        raise InputError(f"box size must be at least 2 voxels, got {box_size}")
    coords, index = _grid_points(n, d, model.device)
    scale = d * model.data_scale * (n / d) ** 3
    maps = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for latent in z:
                values = torch.zeros(n * n * (n // 2 + 1), dtype=torch.complex64, device=model.device)
                for lo in range(0, coords.shape[0], batch_size):
                    part = coords[lo : lo + batch_size]
                    re, im = model.decode_real_imag(part[None], latent[None] if zdim > 0 else None)
                    values[index[lo : lo + batch_size]] = torch.complex(re.reshape(-1), im.reshape(-1)) * scale
                maps.append(irfft_centered(values.reshape(n, n, n // 2 + 1), (n, n, n)))
    finally:
        model.train(was_training)
    return torch.stack(maps)


def write_volumes(volumes, outdir, pixel_size_A: float, *, prefix: str = "vol", start: int = 0) -> list[Path]:
    """Write maps as ``{prefix}_000.mrc``, ``{prefix}_001.mrc``, … (MRC mode 2 with voxel size).

    Parameters
    ----------
    volumes
        ``(M, n, n, n)`` maps (numpy or torch).
    outdir
        Folder (created).
    pixel_size_A
        Voxel size in Å written to every header (:func:`volume_pixel_size_A`).
    prefix, start
        File names ``{prefix}_{start + i:03d}.mrc``.

    Returns
    -------
    The written paths, in order.
    """
    from cryolab.io import write_mrc

    volumes = as_tensor(volumes, dtype=torch.float32)
    if volumes.dim() == 3:
        volumes = volumes[None]
    if volumes.dim() != 4:
        raise InputError(f"volumes must have shape (M, n, n, n), got {tuple(volumes.shape)}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    arrays = volumes.detach().cpu().numpy()
    return [write_mrc(outdir / f"{prefix}_{start + i:03d}.mrc", np.ascontiguousarray(v), pixel_size_A) for i, v in enumerate(arrays)]
