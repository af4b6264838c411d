"""Training a :class:`~cryolab.heterogeneity.model.HetVAE`: loss, one step, epochs, checkpoints.

One step, by hand::

    batch = prepare_batch(model, data, indices)          # read, crop, centre, normalise, CTF
    terms = train_step(model, optimizer, batch, beta=beta, generator=g)

:func:`train_epoch` runs the steps over a random permutation of the particles, and
:func:`train_vae` is the driver: epochs, latent means after each epoch, a checkpoint after each
epoch, resumption.

The objective (Zhong et al. 2021; Kingma & Welling 2014)
---------------------------------------------------------
For a minibatch, with ``y`` an image's Fourier coefficients on the disc half-plane (normalised
units, :mod:`cryolab.heterogeneity.model`), ``c`` its CTF, ``f`` the decoder on the particle's
central slice and ``w`` the Hermitian weights (:func:`~cryolab.heterogeneity.model.disc_half_plane`),

    reconstruction = Σ_k w_k |y_k − c_k f(A_iᵀ k, z_i)|² / Σ_k w_k,    z_i = mu_i + σ_i ε,
    KL = −½ Σ_j (1 + logvar_ij − mu_ij² − exp(logvar_ij)),
    loss = mean_i(reconstruction) + β · mean_i(KL) / Σ_k w_k.

The reconstruction is the mean squared error per Fourier coefficient, i.e. a Gaussian
log-likelihood with white noise: for images normalised to noise standard deviation 1
(docs/conventions.md, "Image contrast and noise") it is about 1 for pure noise, and
``β = 1/2`` makes the loss the negative evidence lower bound divided by the number of
coefficients. ``β`` has the meaning of cryoDRGN's ``--beta`` (mean squared error plus
``β · KL / n_pixels``), whose default ``1/zdim`` we share. Particle shifts are undone on the data
(multiplying the image transform by the conjugate of its phase ramp, which leaves the squared
error unchanged) instead of applied to the rendering, so the encoder sees centred particles.

Fourier-point subsampling. The decoder costs nearly all of the time (three ``width × width``
products per Fourier point, forward and twice backward), so by default each minibatch
evaluates it at a quarter of the disc points (``pixel_fraction``; a new draw per minibatch,
the same points for its images; :func:`sample_fourier_points`): the lowest frequencies always,
a uniform random subset of the others, each term divided by its probability of being drawn,
so that the reconstruction term stays an unbiased estimate of the full one. At SNR 0.1 the
gradient's noise is dominated by the images' noise, so fewer points per step lose little:
per unit of time the latent space and the map improved faster than with all points, or
half of them (benchmarks/vae.py).

Data
----
Images are read ``batch_size`` at a time from the lazy stack (random minibatches of indices;
nothing else is held unless ``preload``), Fourier-cropped to the training box, normalised by
``data_scale`` (RMS pixel value of the first 1000 images, stored in the model) and, for the
encoder, phase-flipped by the sign of the CTF, as cryoDRGN does, and shown as a real-space
image.

Checkpoints
-----------
``checkpoints/epoch_001.pt`` … (1-based), written atomically after every epoch with
``torch.save``: ``{"format", "epoch", "config", "model", "optimizer", "rng_state", "history"}``
— plain tensors, numbers and strings, read back with ``torch.load(weights_only=True)`` (no
arbitrary code). Resuming restores the model, Adam's moments and the random generator, so a
resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cryolab._progress import progress
from cryolab._tensor import as_tensor
from cryolab.ctf import CTFParams, ctf_2d
from cryolab.errors import InputError
from cryolab.threads import choose_num_threads  # noqa: F401 (re-exported by cryolab.heterogeneity)
from cryolab.fourier import fourier_crop_rfft, irfft_centered, rfft_centered
from cryolab.heterogeneity.model import HetModelConfig, HetVAE, disc_half_plane, slice_coordinates
from cryolab.projection import apply_shifts_rfft

__all__ = [
    "CHECKPOINT_FORMAT",
    "EpochStats",
    "LossTerms",
    "ParticleData",
    "TrainingResult",
    "VAEBatch",
    "checkpoint_path",
    "choose_num_threads",
    "encode_particles",
    "estimate_data_scale",
    "find_checkpoint",
    "load_checkpoint",
    "loss_terms",
    "prepare_batch",
    "read_checkpoint",
    "sample_fourier_points",
    "save_checkpoint",
    "train_epoch",
    "train_step",
    "train_vae",
]

#: Tag stored in every checkpoint; anything else is refused.
CHECKPOINT_FORMAT = "cryolab-hetvae-1"

#: Number of leading images whose RMS sets ``data_scale``.
DATA_SCALE_IMAGES = 1000

#: Adam's decay rates of its running means of the gradient and of its square. The second is
#: 0.99 rather than torch's 0.999: the squared gradients fall by two to three orders of
#: magnitude within the first ~50 steps (the initial decoder is far from the data; measured on
#: adenylate kinase, benchmarks/vae.py), and with 0.999 the running mean remembers those first
#: steps for ~1000 steps, which shrinks every step well below ``lr`` for the first epochs; with
#: 0.99 it forgets them within a few hundred. On that benchmark (4000 particles, SNR 0.1; 5
#: paired runs of 2 epochs, discrete and continuous) it raised the state AUC or the
#: correlation with the true coordinate in every run (e.g. |r| 0.64 → 0.68 and 0.66 → 0.70).
ADAM_BETAS = (0.9, 0.99)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParticleData:
    """Particle images with their poses, shifts and CTFs — what training reads from.

    Attributes
    ----------
    images
        ``(N, n, n)``: a lazy :class:`cryolab.io.ImageStack` (read per batch) or a tensor in
        memory.
    rotations
        float32 ``(N, 3, 3)`` RELION matrices ``A``.
    shifts_A
        float32 ``(N, 2)`` origins ``rlnOriginX/YAngst`` in Å.
    ctf
        :class:`cryolab.ctf.CTFParams` with batch shape ``(N,)``, or None (no CTF).
    pixel_size_A
        Pixel size of the images in Å.
    """

    images: object
    rotations: torch.Tensor
    shifts_A: torch.Tensor
    ctf: CTFParams | None
    pixel_size_A: float
    source: str | None = field(default=None, repr=False)

    def __post_init__(self):
        shape = tuple(self.images.shape)
        if len(shape) != 3 or shape[1] != shape[2]:
            raise InputError(f"particle images must be a stack of square images (N, n, n), got {shape}", self.source)
        n = shape[0]
        rot = as_tensor(self.rotations, dtype=torch.float32)
        shifts = torch.zeros(n, 2) if self.shifts_A is None else as_tensor(self.shifts_A, dtype=torch.float32)
        if tuple(rot.shape) != (n, 3, 3):
            raise InputError(f"{n} images but rotations of shape {tuple(rot.shape)}", self.source)
        if tuple(shifts.shape) != (n, 2):
            raise InputError(f"{n} images but shifts of shape {tuple(shifts.shape)}", self.source)
        if self.ctf is not None and tuple(self.ctf.batch_shape) not in ((n,), ()):
            raise InputError(f"{n} images but CTF parameters for {tuple(self.ctf.batch_shape)}", self.source)
        if not (self.pixel_size_A and self.pixel_size_A > 0):
            raise InputError(f"pixel size must be positive (Å), got {self.pixel_size_A}", self.source)
        object.__setattr__(self, "rotations", rot)
        object.__setattr__(self, "shifts_A", shifts)
        object.__setattr__(self, "pixel_size_A", float(self.pixel_size_A))

    @classmethod
    def from_particles(cls, particles, *, use_ctf: bool = True, preload: bool = False) -> "ParticleData":
        """From :func:`cryolab.io.read_particles`' result: poses and CTF from the table's RELION columns.

        Raises InputError for particles without poses, or without CTF parameters unless
        ``use_ctf`` is False; ``preload`` reads all images into memory.
        """
        from cryolab.io import poses_from_table

        table = particles.table
        source = table.attrs.get("cryolab_source")
        rotations, shifts = poses_from_table(table)
        ctf = None
        if use_ctf:
            missing = [c for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle") if c not in table.columns]
            if missing:
                raise InputError(f"particles have no CTF parameters (missing {', '.join(missing)}); "
                                 "give them (--ctf) or train without CTF (--no-ctf)", source)
            try:
                ctf = CTFParams.from_table(table)
            except InputError as exc:
                raise InputError(exc.problem, source) from None
        images = particles.images
        if preload:
            images = torch.from_numpy(np.ascontiguousarray(images[:]))
            _check_finite(images, np.arange(len(images)), source)
        return cls(images, rotations, shifts, ctf, particles.pixel_size_A, source=None if source is None else str(source))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def box_size(self) -> int:
        return int(self.images.shape[-1])

    def read(self, indices) -> torch.Tensor:
        """float32 ``(B, n, n)`` images at ``indices`` (a 1D integer array), checked for NaN/inf."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.images, torch.Tensor):
            return self.images[torch.from_numpy(idx)].to(torch.float32)
        images = torch.from_numpy(self.images[idx])
        _check_finite(images, idx, self.source)
        return images


def _check_finite(images: torch.Tensor, indices, source) -> None:
    finite = torch.isfinite(images).reshape(images.shape[0], -1).all(dim=1)
    if not bool(finite.all()):
        bad = int(np.asarray(indices)[int(torch.nonzero(~finite)[0])])
        raise InputError(f"particle {bad + 1} (1-based) has NaN or infinite pixel values", source)


@dataclass(frozen=True)
class VAEBatch:
    """A minibatch ready for :func:`loss_terms` (on the model's device).

    Attributes
    ----------
    indices
        int64 ``(B,)`` particle indices.
    rotations
        ``(B, 3, 3)`` matrices ``A``.
    target_re, target_im
        ``(B, M)`` the centred images' Fourier coefficients on the disc half-plane, normalised.
    ctf
        ``(B, M)`` CTF values there, or None.
    encoder_images
        ``(B, D, D)`` centred, phase-flipped, normalised real-space images (None if ``zdim == 0``).
    """

    indices: torch.Tensor
    rotations: torch.Tensor
    target_re: torch.Tensor
    target_im: torch.Tensor
    ctf: torch.Tensor | None
    encoder_images: torch.Tensor | None


def _training_spectra(images: torch.Tensor, config: HetModelConfig) -> torch.Tensor:
    """Unshifted rfft ``(B, D, D//2 + 1)`` at the training box; cropping keeps pixel values (× (D/n)²)."""
    n, d = images.shape[-1], config.train_box_size
    spectra = rfft_centered(images, 2)
    if d != n:
        spectra = fourier_crop_rfft(spectra, (n, n), d) * ((d / n) ** 2)
    return spectra


def estimate_data_scale(data: ParticleData, config: HetModelConfig, *, n_images: int = DATA_SCALE_IMAGES,
                        batch_size: int = 256) -> float:
    """RMS pixel value of the first ``n_images`` images at the training box, within the disc band.

    ``sqrt(mean_i Σ_k w_k |F_ik|² / (D² Σ_k w_k))`` — Parseval's mean square pixel value of the
    band-limited image; 1 for images of white noise with standard deviation 1.
    """
    _, index, weights = disc_half_plane(config.train_box_size)
    d = config.train_box_size
    total, count = 0.0, 0
    for lo in range(0, min(n_images, len(data)), batch_size):
        idx = np.arange(lo, min(lo + batch_size, n_images, len(data)))
        spectra = _training_spectra(data.read(idx), config).reshape(len(idx), -1)[:, index]
        total += float(((spectra.abs() ** 2) @ weights).sum()) / (d * d * float(weights.sum()))
        count += len(idx)
    scale = math.sqrt(total / max(count, 1))
    if not (scale > 0 and math.isfinite(scale)):
        raise InputError(f"the images have no signal to normalise by (RMS {scale})", data.source)
    return scale


def prepare_batch(model: HetVAE, data: ParticleData, indices) -> VAEBatch:
    """Read particles ``indices`` and turn them into a :class:`VAEBatch` for ``model``.

    Steps: rfft of the centred images, Fourier crop to the training box, shifts undone
    (:func:`cryolab.projection.apply_shifts_rfft` with ``-origin``), division by
    ``D · data_scale``, the disc half-plane points; CTF values from :func:`cryolab.ctf.ctf_2d`
    at the training pixel size; encoder images by phase flipping with the CTF's sign.
    """
    config = model.config
    device = model.device
    idx = np.asarray(indices, dtype=np.int64)
    tidx = torch.from_numpy(idx)
    d = config.train_box_size
    images = data.read(idx).to(device)
    if images.shape[-1] != config.box_size:
        raise InputError(f"the model was built for {config.box_size}-pixel images, these are {images.shape[-1]} pixels", data.source)
    spectra = _training_spectra(images, config)
    shifts = data.shifts_A[tidx]
    if bool((shifts != 0).any()):
        spectra = apply_shifts_rfft(spectra, -shifts.to(device), config.train_pixel_size_A)
    ctf = None
    if data.ctf is not None:
        params = data.ctf[tidx] if len(data.ctf.batch_shape) else data.ctf
        ctf = ctf_2d(params.to(device), (d, d), config.train_pixel_size_A, rfft=True).to(torch.float32)
        if ctf.dim() == 2:
            ctf = ctf.expand(len(idx), -1, -1)
    b = len(idx)
    scale = model.data_scale
    points = spectra.reshape(b, -1)[:, model.disc_index] / (d * scale)
    encoder_images = None
    if config.zdim > 0:
        flipped = spectra if ctf is None else spectra * torch.where(ctf < 0, -1.0, 1.0)
        encoder_images = irfft_centered(flipped, (d, d)) / scale
    return VAEBatch(
        indices=tidx,
        rotations=data.rotations[tidx].to(device),
        target_re=points.real.contiguous(),
        target_im=points.imag.contiguous(),
        ctf=None if ctf is None else ctf.reshape(b, -1)[:, model.disc_index].contiguous(),
        encoder_images=encoder_images,
    )


# --------------------------------------------------------------------------------------------
# Loss and one step
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossTerms:
    """The objective of one minibatch (tensors; ``loss`` carries the graph)."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


#: Share of the Fourier points drawn for a minibatch (:func:`sample_fourier_points`) that are
#: the lowest frequencies, taken every time.
LOW_FREQUENCY_SHARE = 0.25


@lru_cache(maxsize=16)
def _disc_points_by_frequency(box_size: int) -> torch.Tensor:
    freqs, _, _ = disc_half_plane(box_size)
    return torch.argsort(torch.linalg.vector_norm(freqs, dim=-1), stable=True)


def sample_fourier_points(box_size: int, fraction: float, *,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random subset of the disc points of a ``D × D`` image and each one's probability of being in it.

    ``count = ceil(fraction · M)`` of the ``M`` points of
    :func:`~cryolab.heterogeneity.model.disc_half_plane`: the ``LOW_FREQUENCY_SHARE · count``
    points of lowest ``|k|`` always (probability 1), and a uniformly random subset of the
    others for the rest (each with probability ``(count − n_low) / (M − n_low)``). Dividing
    each drawn point's term by its probability gives an unbiased estimate of a sum over all
    points (Horvitz & Thompson 1952). Why the lowest frequencies always: they carry most of a
    particle's signal, so early in training their residuals, and their terms of the gradient,
    are the largest; drawing them at random would add the most variance (stratified sampling).
    On adenylate kinase at SNR 0.1 (benchmarks/vae.py; ``fraction`` 0.25, lr 1e-3, Adam β₂
    0.999) it learned the latent space faster than a uniform draw of the same size: state AUC
    after one epoch 0.953 against 0.933 and after two 0.991 against 0.984 (4 seeds each;
    drawing always the ~105 points within 8 pixels of the origin, this share to within a few
    points); on the continuous variant, correlation with the true coordinate after two
    epochs 0.64 and 0.66 against 0.52 and 0.54 (2 seeds). A larger share (half) was no better.

    Parameters
    ----------
    box_size
        ``D`` in pixels.
    fraction
        In ``(0, 1]``; 1 returns every point with probability 1.
    generator
        Source of the random draw.

    Returns
    -------
    indices
        int64 ``(count,)`` into the disc points (``disc_half_plane``'s order), lowest frequencies first.
    probability
        float32 ``(count,)`` inclusion probability of each.
    """
    if not 0 < fraction <= 1:
        raise InputError(f"pixel fraction must be in (0, 1], got {fraction}")
    order = _disc_points_by_frequency(int(box_size))
    m = order.numel()
    count = max(1, math.ceil(fraction * m))
    if count >= m:
        return torch.arange(m), torch.ones(m)
    n_low = int(LOW_FREQUENCY_SHARE * count)
    n_rest = count - n_low
    pick = torch.randperm(m - n_low, generator=generator)[:n_rest]
    indices = torch.cat([order[:n_low], order[n_low:][pick]])
    probability = torch.cat([torch.ones(n_low), torch.full((n_rest,), n_rest / (m - n_low))])
    return indices, probability


def loss_terms(model: HetVAE, batch: VAEBatch, *, beta: float, generator: torch.Generator | None = None,
               sample: bool = True, pixel_fraction: float = 1.0) -> LossTerms:
    """The loss of the module docstring for one minibatch.

    Parameters
    ----------
    model, batch
        The VAE and a :func:`prepare_batch` result.
    beta
        Weight of the KL term (per Fourier coefficient, as cryoDRGN's ``--beta``).
    generator
        Source of the reparameterisation noise ``ε``.
    sample
        If False, decode ``z = mu`` (no noise): for evaluation.
    pixel_fraction
        Evaluate the decoder at this fraction of the disc points only, the same for all images
        of the minibatch (:func:`sample_fourier_points`, drawn from ``generator``): each
        point's squared error is divided by its probability of being drawn, so the
        reconstruction term is an unbiased estimate of the full one, at about
        ``pixel_fraction`` times the decoder's cost. 1 (default) uses all points.
    """
    z = None
    if model.zdim > 0:
        mu, logvar = model.encode(batch.encoder_images)
        z = model.reparameterize(mu, logvar, generator) if sample else mu
    else:
        mu = logvar = batch.target_re.new_zeros(batch.target_re.shape[0], 0)
    freqs, w = model.disc_freqs, model.disc_weights
    target_re, target_im, ctf = batch.target_re, batch.target_im, batch.ctf
    if pixel_fraction < 1.0:
        keep, probability = sample_fourier_points(model.config.train_box_size, pixel_fraction, generator=generator)
        keep = keep.to(freqs.device)
        freqs, w = freqs[keep], w[keep] / probability.to(w.device)  # Horvitz–Thompson weights
        target_re, target_im = target_re[:, keep], target_im[:, keep]
        ctf = None if ctf is None else ctf[:, keep]
    coords = slice_coordinates(batch.rotations, freqs)
    re, im = model.decode_real_imag(coords, z)
    if ctf is not None:
        re = re * ctf
        im = im * ctf
    squared = (target_re - re) ** 2 + (target_im - im) ** 2
    w_total = model.disc_weights.sum()
    reconstruction = (squared @ w) / w_total  # (B,)
    kl = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar), dim=-1)  # (B,); 0 for zdim 0
    loss = reconstruction.mean() + beta * kl.mean() / w_total
    return LossTerms(loss, reconstruction.detach(), kl.detach(), mu.detach(), logvar.detach())


def train_step(model: HetVAE, optimizer: torch.optim.Optimizer, batch: VAEBatch, *, beta: float,
               generator: torch.Generator | None = None, pixel_fraction: float = 1.0) -> LossTerms:
    """One gradient step on a minibatch: loss, backward, optimiser step. Returns the batch's terms."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    terms = loss_terms(model, batch, beta=beta, generator=generator, pixel_fraction=pixel_fraction)
    if not torch.isfinite(terms.loss):
        raise FloatingPointError("the loss became NaN or infinite; try a smaller learning rate (--lr)")
    terms.loss.backward()
    optimizer.step()
    return terms


# --------------------------------------------------------------------------------------------
# Epochs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochStats:
    """Means over the particles of one epoch, and its duration."""

    epoch: int
    loss: float
    reconstruction: float
    kl: float
    seconds: float

    def as_dict(self) -> dict:
        return {"epoch": self.epoch, "loss": self.loss, "reconstruction": self.reconstruction, "kl": self.kl,
                "seconds": self.seconds}


def train_epoch(model: HetVAE, optimizer: torch.optim.Optimizer, data: ParticleData, *, epoch: int, batch_size: int,
                beta: float, generator: torch.Generator, pixel_fraction: float = 1.0, bar=None) -> EpochStats:
    """One pass over all particles in a random order (from ``generator``), ``batch_size`` at a time."""
    start = time.perf_counter()
    order = torch.randperm(len(data), generator=generator).numpy()
    sums = np.zeros(3)
    for lo in range(0, len(order), batch_size):
        batch = prepare_batch(model, data, order[lo : lo + batch_size])
        terms = train_step(model, optimizer, batch, beta=beta, generator=generator, pixel_fraction=pixel_fraction)
        b = len(batch.indices)
        w_sum = float(model.disc_weights.sum())
        kl = float(terms.kl.mean())
        recon = float(terms.reconstruction.mean())
        sums += b * np.array([recon + beta * kl / w_sum, recon, kl])
        if bar is not None:
            bar.update(b)
            bar.set_postfix(epoch=epoch, loss=f"{recon + beta * kl / w_sum:.4f}", refresh=False)
    means = sums / max(len(order), 1)
    return EpochStats(epoch, float(means[0]), float(means[1]), float(means[2]), time.perf_counter() - start)


def encode_particles(model: HetVAE, data: ParticleData, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Latent means and log-variances ``(N, zdim)`` (float32 numpy) of all particles, in input order."""
    n = len(data)
    if model.zdim == 0:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.float32)
    was_training = model.training
    model.eval()
    mus, logvars = [], []
    try:
        with torch.no_grad():
            for lo in range(0, n, batch_size):
                batch = prepare_batch(model, data, np.arange(lo, min(lo + batch_size, n)))
                mu, logvar = model.encode(batch.encoder_images)
                mus.append(mu.cpu())
                logvars.append(logvar.cpu())
    finally:
        model.train(was_training)
    return torch.cat(mus).numpy(), torch.cat(logvars).numpy()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def checkpoint_path(folder, epoch: int) -> Path:
    """``folder/epoch_001.pt`` for epoch 1 (1-based)."""
    return Path(folder) / f"epoch_{int(epoch):03d}.pt"


def find_checkpoint(folder, epoch: int | None = None) -> Path:
    """The checkpoint of ``epoch`` in ``folder``, or the last one; InputError where there is none."""
    folder = Path(folder)
    if epoch is not None:
        path = checkpoint_path(folder, epoch)
        if not path.is_file():
            raise InputError(f"no checkpoint for epoch {epoch}", path)
        return path
    found = sorted((int(m.group(1)), p) for p in folder.glob("epoch_*.pt") if (m := re.fullmatch(r"epoch_(\d+)\.pt", p.name)))
    if not found:
        raise InputError("no checkpoints (epoch_NNN.pt) to resume from", folder)
    return found[-1][1]


def save_checkpoint(path, model: HetVAE, optimizer: torch.optim.Optimizer | None, *, epoch: int,
                    generator: torch.Generator | None = None, history: list | None = None) -> Path:
    """Write a checkpoint atomically (module docstring for its contents)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "rng_state": None if generator is None else generator.get_state(),
        "history": list(history or []),
    }
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_checkpoint(path) -> dict:
    """The checkpoint's contents, read with ``torch.load(weights_only=True)`` and checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one holding objects weights_only refuses
        raise InputError(f"not a cryolab checkpoint (torch.load with weights_only refused it: {type(exc).__name__})",
                         path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"not a cryolab heterogeneity checkpoint (expected format {CHECKPOINT_FORMAT!r})", path)
    return state


def _model_from_state(state: dict, path) -> tuple[HetVAE, HetModelConfig]:
    try:
        config = HetModelConfig.from_dict(dict(state["config"]))
    except (InputError, TypeError, KeyError) as exc:
        raise InputError(f"checkpoint has an unreadable model configuration: {exc}", path) from None
    model = HetVAE(config)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"checkpoint weights do not fit its architecture: {first[1].strip() if len(first) > 1 else first[0]}", path) from None
    return model, config


def load_checkpoint(path, *, config: HetModelConfig | None = None, device="cpu") -> tuple[HetVAE, HetModelConfig, int]:
    """Model, configuration and epoch from a checkpoint.

    Parameters
    ----------
    path
        ``checkpoints/epoch_NNN.pt``.
    config
        If given, the architecture the caller expects: a checkpoint of another architecture is
        refused with an InputError naming the differences.
    device
        Where to put the model.

    Returns
    -------
    (model, config, epoch) — the model in eval mode.
    """
    state = read_checkpoint(path)
    _check_same_architecture(state, config, path)
    model, saved = _model_from_state(state, path)
    model.to(device).eval()
    return model, saved, int(state["epoch"])


def _check_same_architecture(state: dict, config: HetModelConfig | None, path) -> None:
    if config is None:
        return
    try:
        saved = HetModelConfig.from_dict(dict(state["config"]))
    except (InputError, TypeError, KeyError) as exc:
        raise InputError(f"checkpoint has an unreadable model configuration: {exc}", path) from None
    diff = saved.differences(config)
    if diff:
        text = ", ".join(f"{k} {a} (checkpoint) vs {b}" for k, (a, b) in diff.items())
        raise InputError(f"checkpoint is of another architecture: {text}", path)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    """What :func:`train_vae` returns: the model, per-epoch statistics and the final latents."""

    model: HetVAE
    history: list
    z_mu: np.ndarray
    z_logvar: np.ndarray
    epoch: int


def train_vae(
    data: ParticleData,
    config: HetModelConfig,
    *,
    epochs: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    beta: float | None = None,
    seed: int = 0,
    device="cpu",
    checkpoint_dir=None,
    resume_from=None,
    pixel_fraction: float = 0.25,
    on_epoch: Callable | None = None,
    show_progress: bool = True,
) -> TrainingResult:
    """Train a :class:`HetVAE` for ``epochs`` epochs (in total, counting resumed ones).

    Parameters
    ----------
    data
        The particles (:class:`ParticleData`).
    config
        Architecture; its ``box_size`` must be the images'.
    epochs
        Last epoch to train (1-based). A run resumed after epoch ``e`` trains ``e+1 … epochs``.
    batch_size, lr
        Minibatch size and Adam learning rate (Adam with :data:`ADAM_BETAS`). The default 1e-3
        separated the states of benchmarks/vae.py in fewer steps than 5e-4 (``pixel_fraction``
        0.25 drawn uniformly, Adam β₂ 0.999: state AUC after one epoch 0.931 against 0.915,
        mean of 3 seeds) and as fast as
        2e-3, with better maps than 2e-3 (FSC-AUC after two epochs 0.40 against 0.38).
    beta
        KL weight (module docstring); default ``1 / zdim``.
    seed
        Seeds the model's initial weights and the generator of minibatch orders and
        reparameterisation noise: the same seed gives the same result.
    device
        ``"cpu"``, ``"cuda"`` or a torch device.
    checkpoint_dir
        Folder for ``epoch_NNN.pt`` after every epoch (None: none written).
    resume_from
        A checkpoint to continue from; its architecture must equal ``config`` (InputError).
    pixel_fraction
        Fraction of each minibatch's Fourier points the decoder is evaluated at
        (:func:`sample_fourier_points`, :func:`loss_terms`); 1 uses them all. The default 0.25
        makes an epoch about 4× cheaper than 1. On adenylate kinase (4000 images at 64², SNR
        0.1, 256×3 networks, benchmarks/vae.py; one thread, CPU time) these defaults reached a
        better latent space and map per unit of time than the earlier ones (0.5 drawn
        uniformly, lr 5e-4): after ~200 s state AUC 1.000 and map FSC-AUC 0.51 (6 epochs)
        against 0.997 and 0.49 (3 epochs). 0.125 separated the states sooner (AUC 0.985 after
        36 s against 0.949 after 38 s) but gave no better maps (FSC-AUC 0.45–0.51 against
        0.46–0.51 from 100 to 200 s), with fewer points per image to spare on small boxes.
    on_epoch
        Called after every epoch as ``on_epoch(stats, z_mu, z_logvar, model)`` (:class:`EpochStats`,
        ``(N, zdim)`` arrays of the latent means/log-variances of all particles in input order,
        and the model, which the callback must not modify).
    show_progress
        Progress bar with ETA over all remaining minibatches.

    Returns
    -------
    TrainingResult
    """
    if int(epochs) != epochs or epochs < 1:
        raise InputError(f"the number of epochs must be a positive integer, got {epochs}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"learning rate must be positive, got {lr}")
    if data.box_size != config.box_size:
        raise InputError(f"the model is configured for {config.box_size}-pixel images but the particles are {data.box_size} pixels",
                         data.source)
    if not 0 < pixel_fraction <= 1:
        raise InputError(f"pixel fraction must be in (0, 1], got {pixel_fraction}")
    if beta is None:
        beta = 1.0 / config.zdim if config.zdim > 0 else 0.0
    if not (beta >= 0 and math.isfinite(beta)):
        raise InputError(f"beta must be >= 0, got {beta}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was requested but torch sees no GPU; use --device cpu")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HetVAE(config)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=ADAM_BETAS)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    history: list = []
    first = 1
    if resume_from is not None:
        state = read_checkpoint(resume_from)
        _check_same_architecture(state, config, resume_from)
        loaded, _ = _model_from_state(state, resume_from)
        model.load_state_dict(loaded.state_dict())
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
            for group in optimizer.param_groups:
                group["lr"] = lr
        if state.get("rng_state") is not None:
            generator.set_state(state["rng_state"])
        history = [dict(h) for h in state.get("history", [])]
        first = int(state["epoch"]) + 1
    else:
        model.data_scale.fill_(estimate_data_scale(data, config))

    bar = progress(total=max(epochs - first + 1, 0) * len(data), desc="train-vae", unit="img", enabled=show_progress)
    try:
        for epoch in range(first, epochs + 1):
            stats = train_epoch(model, optimizer, data, epoch=epoch, batch_size=batch_size, beta=beta,
                                generator=generator, pixel_fraction=pixel_fraction, bar=bar)
            history.append(stats.as_dict())
            z_mu, z_logvar = encode_particles(model, data)
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_path(checkpoint_dir, epoch), model, optimizer, epoch=epoch,
                                generator=generator, history=history)
            if on_epoch is not None:
                on_epoch(stats, z_mu, z_logvar, model)
    finally:
        bar.close()
    if first > epochs:
        z_mu, z_logvar = encode_particles(model, data)
    model.eval()
    return TrainingResult(model, history, z_mu, z_logvar, max(epochs, first - 1))
