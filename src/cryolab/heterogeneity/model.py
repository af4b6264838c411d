"""A cryoDRGN-style variational autoencoder: image encoder, Fourier-space coordinate decoder, rendering.

The generative model (Zhong, Bepler, Berger & Davis 2021) says that particle ``i`` is an image
of a map ``V(· ; z_i)`` whose latent coordinate ``z_i`` (``zdim`` numbers) has a standard normal
prior. The map is never stored on a grid: a *coordinate network* ``f(k, z)`` returns its Fourier
transform at any 3D frequency ``k``, and an image is rendered by the projection-slice theorem
(docs/conventions.md, "Rotations and projection"):

    F_image(kx, ky) = CTF(k) · exp(2πi k·origin) · f(Aᵀ (kx, ky, 0), z_i),

with RELION's matrix ``A`` (map → view frame) and origin ``rlnOriginX/YAngst`` — the same
forward model as :func:`cryolab.projection.project_fourier`. An *encoder* (an MLP over the
masked, CTF-phase-flipped, centred image) returns the approximate posterior
``q(z | image) = Normal(mu, exp(logvar))``; training maximises the evidence lower bound,
a Gaussian likelihood of the image's Fourier coefficients minus ``β`` times ``KL(q || prior)``
(:mod:`cryolab.heterogeneity.training`).

Representation choices
----------------------
- **Fourier domain, complex output, Hermitian by construction.** The network returns two real
  numbers ``(a, b)`` read as ``F(k) = a + ib`` on the half-space ``kx ≥ 0`` (the half the 3D
  rfft stores); a point with ``kx < 0`` is evaluated at ``-k`` and conjugated,
  ``F(k) = conj F(-k)``. Every map the network describes is therefore real. (cryoDRGN evaluates
  the same two outputs and combines them into Hartley values ``a − b``, ``a + b``: an equivalent
  representation.)
- **Only what an image constrains is evaluated**: the rfft half-plane of each image inside the
  disc ``|k| ≤ (D//2)/D`` cycles/pixel (:func:`cryolab.projection.band_limit`), about
  ``π D² / 8`` points per image instead of ``D²``; the likelihood weights each half-plane point
  by the number of full-plane Fourier coefficients it stands for (2, or 1 on the ``kx = 0``
  column and the Nyquist point), so the sum equals the full-plane sum (Parseval).
- **Units.** Coordinates ``k`` are in cycles/pixel of the training box ``D`` (images are
  optionally Fourier-cropped from ``N`` to ``D`` pixels, :attr:`HetModelConfig.downsample`).
  The network works in *normalised units*: an image's unnormalised rfft (``rfft_centered``,
  origin at pixel ``D//2``) divided by ``D · data_scale``, where ``data_scale`` (a buffer, set
  from the data before training) is the RMS pixel value of the training images, so that targets
  have unit mean power. :meth:`HetVAE.decode_slices` and
  :func:`cryolab.heterogeneity.volumes.generate_volumes` undo the scaling: rendered images are
  in the units of the input images and generated maps project onto them.
- **Positional encoding** of ``k`` before the MLP: sines and cosines of ``ω · k`` for a set of
  angular frequencies ``ω`` (radians per cycle/pixel, i.e. ``2π`` times a real-space distance
  in pixels). ``gaussian`` (the default, as cryoDRGN's): ``3 · pe_dim`` random 3D frequency
  vectors, each component ``Normal(0, (feat_sigma · D/2)²)`` (Tancik et al. 2020);
  ``geom_lowf`` (cryoDRGN's earlier default): per axis, ``pe_dim`` frequencies in geometric
  progression from 1 to ``D/2``; ``geom_full``: from 1 to ``π D`` (a distance up to half the
  box). Fitting one map of adenylate kinase (24³, 400 noise-free CTF images, 6 epochs) the
  mean FSC with the truth reached 0.82 (gaussian), 0.73 (geom_full) and 0.63 (geom_lowf).
- **The latent** ``z`` is concatenated to the encoding; since only the first layer sees it,
  its contribution ``W_z z`` is computed once per image and added to every point's
  ``W_pe pe(k)`` — the same network as with ``z`` repeated at every point (the ``zdim`` columns
  of one weight matrix), without the repetition.
- **Residual MLPs** (as cryoDRGN's ``ResidLinearMLP``): ``Linear(in, w) → ReLU →
  layers × [h + Linear(h) → ReLU] → Linear(w, out)``; ``layers`` counts the ``w × w`` layers.

References
----------
E. D. Zhong, T. Bepler, B. Berger, J. H. Davis, "CryoDRGN: reconstruction of heterogeneous
cryo-EM structures using neural networks", Nat. Methods 18 (2021) 176 (and the cryoDRGN code,
``cryodrgn/models.py``); D. P. Kingma, M. Welling, "Auto-encoding variational Bayes", ICLR 2014
(the reparameterisation trick); M. Tancik et al., "Fourier features let networks learn high
frequency functions in low dimensional domains", NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier import fftfreq_grid

__all__ = [
    "HetModelConfig",
    "HetVAE",
    "ResidualMLP",
    "PE_TYPES",
    "disc_half_plane",
    "encoder_mask",
    "positional_frequencies",
    "positional_encoding",
    "slice_coordinates",
    "render_images",
]

#: Positional encodings the decoder knows (module docstring).
PE_TYPES = ("gaussian", "geom_lowf", "geom_full")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HetModelConfig:
    """Architecture of a :class:`HetVAE` and the geometry of the images it was built for.

    Attributes
    ----------
    box_size
        ``N``: size of the input particle images in pixels.
    pixel_size_A
        Pixel size of the input images in Å.
    zdim
        Latent dimension; 0 gives a homogeneous neural reconstruction (no encoder).
    encoder_layers, encoder_width
        Number of ``width × width`` residual layers and their width in the encoder.
    decoder_layers, decoder_width
        The same for the decoder.
    pe_type
        ``"gaussian"`` (default), ``"geom_lowf"`` or ``"geom_full"`` (module docstring).
    pe_dim
        Frequencies per axis of the positional encoding (``6 · pe_dim`` features); default
        ``D // 2`` with ``D`` the training box.
    feat_sigma
        Scale of the ``gaussian`` encoding's random frequencies (in units of ``D/2``).
    domain
        ``"fourier"``: the decoder returns complex Fourier coefficients (the one representation
        implemented; named as cryoDRGN's ``--domain``).
    downsample
        Training box ``D < N`` in pixels: images are Fourier-cropped to ``D`` (pixel size grows
        by ``N / D``); None trains at ``N``.
    enc_mask_radius
        Radius in pixels (of the training box) of the disc of pixels the encoder sees; default
        ``D / 2``.
    """

    box_size: int
    pixel_size_A: float
    zdim: int = 8
    encoder_layers: int = 3
    encoder_width: int = 256
    decoder_layers: int = 3
    decoder_width: int = 256
    pe_type: str = "gaussian"
    pe_dim: int | None = None
    feat_sigma: float = 0.5
    domain: str = "fourier"
    downsample: int | None = None
    enc_mask_radius: float | None = None

    def __post_init__(self):
        def check(ok: bool, message: str):
            if not ok:
                raise InputError(message)

        check(int(self.box_size) == self.box_size and self.box_size >= 8, f"box size must be an integer >= 8 pixels, got {self.box_size}")
        check(math.isfinite(float(self.pixel_size_A)) and self.pixel_size_A > 0, f"pixel size must be positive (Å), got {self.pixel_size_A}")
        check(int(self.zdim) == self.zdim and self.zdim >= 0, f"zdim must be an integer >= 0, got {self.zdim}")
        for name in ("encoder_layers", "decoder_layers"):
            value = getattr(self, name)
            check(int(value) == value and value >= 0, f"{name} must be an integer >= 0, got {value}")
        for name in ("encoder_width", "decoder_width"):
            value = getattr(self, name)
            check(int(value) == value and value >= 1, f"{name} must be a positive integer, got {value}")
        check(self.pe_type in PE_TYPES, f"pe_type must be one of {PE_TYPES}, got {self.pe_type!r}")
        check(self.domain == "fourier", f"domain must be 'fourier', got {self.domain!r}")
        check(self.feat_sigma > 0, f"feat_sigma must be positive, got {self.feat_sigma}")
        if self.downsample is not None:
            check(int(self.downsample) == self.downsample and 8 <= self.downsample <= self.box_size,
                  f"downsample must be an integer box between 8 and {self.box_size} pixels, got {self.downsample}")
            object.__setattr__(self, "downsample", int(self.downsample))
        d = self.train_box_size
        if self.pe_dim is None:
            object.__setattr__(self, "pe_dim", d // 2)
        check(int(self.pe_dim) == self.pe_dim and self.pe_dim >= 1, f"pe_dim must be a positive integer, got {self.pe_dim}")
        if self.enc_mask_radius is None:
            object.__setattr__(self, "enc_mask_radius", d / 2)
        check(0 < self.enc_mask_radius, f"encoder mask radius must be positive (pixels), got {self.enc_mask_radius}")
        for name in ("box_size", "zdim", "encoder_layers", "decoder_layers", "encoder_width", "decoder_width", "pe_dim"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("pixel_size_A", "feat_sigma", "enc_mask_radius"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def train_box_size(self) -> int:
        """``D``: the box the model works at (``downsample`` or ``box_size``)."""
        return self.box_size if self.downsample is None else self.downsample

    @property
    def train_pixel_size_A(self) -> float:
        """Pixel size in Å at the training box: ``pixel_size_A · N / D``."""
        return self.pixel_size_A * self.box_size / self.train_box_size

    def to_dict(self) -> dict:
        """Plain-number dict (JSON-ready); :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "HetModelConfig":
        """Config from :meth:`to_dict`'s output; unknown keys are an InputError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"unknown model settings {unknown}")
        return cls(**values)

    def differences(self, other: "HetModelConfig") -> dict:
        """``{field: (self's value, other's value)}`` for the fields in which the two differ."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


# --------------------------------------------------------------------------------------------
# Geometry: which Fourier points an image constrains, and where they sit in 3D
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _disc_half_plane_cpu(box_size: int):
    k = fftfreq_grid((box_size, box_size), rfft=True).reshape(-1, 2)  # (kx, ky) cycles/pixel
    radius = (box_size // 2) / box_size  # cryolab.projection.band_limit
    index = torch.nonzero(torch.linalg.vector_norm(k, dim=-1) <= radius * (1 + 1e-6)).squeeze(-1)
    k = k[index]
    # each half-plane point stands for itself and its Friedel partner, except where the partner is
    # in the half-plane too (kx = 0) or is the same coefficient (Nyquist kx = 1/2)
    weights = torch.where((k[:, 0] == 0) | (k[:, 0] == 0.5), 1.0, 2.0)
    return k, index, weights


def disc_half_plane(box_size: int, *, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rfft points of a ``D × D`` image inside the disc ``|k| ≤ (D//2)/D`` and their weights.

    Returns
    -------
    freqs
        float32 ``(M, 2)``: ``(kx, ky)`` in cycles/pixel, ``kx ≥ 0`` (unshifted rfft layout order).
    flat_index
        int64 ``(M,)``: index of each point in the flattened ``(D, D//2 + 1)`` rfft array.
    weights
        float32 ``(M,)``: full-plane coefficients each point stands for (2; 1 where ``kx = 0``
        or ``kx = 1/2``), so ``Σ w |F|²`` over the points is the sum over the full disc.
    """
    k, index, weights = _disc_half_plane_cpu(int(box_size))
    return k.to(device), index.to(device), weights.to(device)


def encoder_mask(box_size: int, radius_px: float, *, device=None) -> torch.Tensor:
    """Boolean ``(D, D)`` disc of pixels within ``radius_px`` of the centre ``D//2`` (the encoder's input)."""
    axis = torch.arange(box_size, device=device, dtype=torch.float32) - box_size // 2
    r2 = axis[:, None] ** 2 + axis[None, :] ** 2
    return r2 <= radius_px**2


def slice_coordinates(rotations, freqs_2d) -> torch.Tensor:
    """3D frequencies ``Aᵀ (kx, ky, 0) = kx · A[0, :] + ky · A[1, :]`` of central-slice points.

    Parameters
    ----------
    rotations
        ``(..., 3, 3)`` RELION matrices ``A`` (map → view frame).
    freqs_2d
        ``(M, 2)`` image frequencies ``(kx, ky)``.

    Returns
    -------
    ``(..., M, 3)`` map frequencies ``(kx, ky, kz)``, in the units of ``freqs_2d``.
    """
    rotations = as_tensor(rotations)
    freqs_2d = as_tensor(freqs_2d, device=rotations.device).to(rotations.dtype)
    return freqs_2d @ rotations[..., :2, :]


def positional_frequencies(config: HetModelConfig, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """The ``(3, F)`` matrix ``Ω`` of angular frequencies of the positional encoding (``F = 3 · pe_dim``).

    ``k @ Ω`` gives the phases (radians) whose sines and cosines encode ``k`` (cycles/pixel of
    the training box). Geometric encodings are block-diagonal (one set of ``pe_dim`` frequencies
    per axis); ``gaussian`` draws ``F`` random vectors from ``generator``.
    """
    d, n = config.train_box_size, config.pe_dim
    if config.pe_type == "gaussian":
        return torch.randn(3, 3 * n, generator=generator) * (config.feat_sigma * (d // 2))
    top = d / 2 if config.pe_type == "geom_lowf" else math.pi * d
    j = torch.arange(n, dtype=torch.float64)
    omega = top * (1.0 / top) ** (j / max(n - 1, 1))  # top … 1, geometric
    return torch.block_diag(*(omega[None, :].float(),) * 3)


def positional_encoding(coords, omega) -> torch.Tensor:
    """``[sin(k Ω), cos(k Ω)]``: ``(..., 3)`` coordinates → ``(..., 2F)`` features."""
    phase = coords @ omega
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


#: Rows of a :class:`ResidualMLP` evaluated together. A chunk's ``(rows × width)`` temporaries
#: then stay in the processor's cache from one product to the next: on the 2-core development
#: machine (AVX2, 1 MB L2 per core, 32 MB L3 shared with other work), 256 × 3 decoder, one
#: thread, forward and backward of 26 k rows (16 images at 64², every disc point) took 17–19 µs
#: of CPU time per row in chunks of 1–4 k rows against 21–22 µs all at once (and 20 against
#: 33 µs of wall time when the machine was quieter).
CHUNK_ROWS = 2048


def _row_chunks(rows: int, n_images: int, chunk_rows: int):
    """Pieces ``(lo, hi, first_image, n_images_in_piece)`` of ``rows`` rows that never straddle two images.

    Rows come in ``n_images`` equal groups (one per image; ``n_images`` 0: no grouping). A piece
    holds whole images when an image has at most ``chunk_rows`` rows, else part of one image.
    """
    if n_images == 0:
        return [(lo, min(lo + chunk_rows, rows), 0, 0) for lo in range(0, rows, chunk_rows)]
    per = rows // n_images
    if per > chunk_rows:
        return [(i * per + lo, i * per + min(lo + chunk_rows, per), i, 1)
                for i in range(n_images) for lo in range(0, per, chunk_rows)]
    step = max(1, chunk_rows // max(per, 1))
    return [(i * per, min(i + step, n_images) * per, i, min(step, n_images - i)) for i in range(0, n_images, step)]


class _ResidualMLPFunction(torch.autograd.Function):
    """Forward and backward of :class:`ResidualMLP` written out, for speed on the CPU.

    The network is evaluated at ~10⁴–10⁵ points per minibatch, so its cost is a few large
    matrix products and a few passes over ``(points × width)`` arrays. Autograd's generic
    version adds passes (bias broadcast copies, copies of in-place updates of views, a separate
    ReLU mask) that cost as much as a matrix product here; this one does per layer one product
    forward, two backward, and three elementwise passes each way, over chunks of
    :data:`CHUNK_ROWS` rows so that each pass reads what the previous one wrote from the cache.
    It saves only the post-ReLU activations (their sign is the ReLU's derivative).
    """

    @staticmethod
    def forward(ctx, x, offset, w_in, b_in, w_out, b_out, *hidden):
        rows, width = x.shape[0], w_in.shape[0]
        n_images = 0 if offset is None else offset.shape[0]
        chunks = _row_chunks(rows, n_images, CHUNK_ROWS)
        activations = [x.new_empty(rows, width) for _ in range(1 + len(hidden) // 2)]
        out = x.new_empty(rows, w_out.shape[0])
        for lo, hi, first, count in chunks:
            h = torch.addmm(b_in, x[lo:hi], w_in.t(), out=activations[0][lo:hi])
            if offset is not None:  # W_z z of each image, added to all its rows
                h.view(count, -1, width).add_(offset[first : first + count, None, :])
            h.relu_()
            for i in range(0, len(hidden), 2):
                h = torch.addmm(h, h, hidden[i].t(), out=activations[1 + i // 2][lo:hi]).add_(hidden[i + 1]).relu_()
            torch.addmm(b_out, h, w_out.t(), out=out[lo:hi])
        ctx.n_images = n_images
        ctx.save_for_backward(x, w_in, w_out, *hidden[0::2], *activations)
        return out

    @staticmethod
    def backward(ctx, g_out):
        x, w_in, w_out, *rest = ctx.saved_tensors
        n_hidden = (len(rest) - 1) // 2
        weights, activations = rest[:n_hidden], rest[n_hidden:]
        needs = ctx.needs_input_grad
        g_out = g_out.contiguous()
        g_w_out = g_out.t() @ activations[-1]
        g_b_out = g_out.sum(0)
        g_w = [torch.zeros_like(w) for w in weights]
        g_b = [w.new_zeros(w.shape[0]) for w in weights]
        g_w_in = torch.zeros_like(w_in)
        g_b_in = w_in.new_zeros(w_in.shape[0])
        g_x = torch.empty_like(x) if needs[0] else None
        g_offset = x.new_zeros(ctx.n_images, w_in.shape[0]) if ctx.n_images and needs[1] else None
        for lo, hi, first, count in _row_chunks(x.shape[0], ctx.n_images, CHUNK_ROWS):
            go = g_out[lo:hi]
            if w_out.shape[0] <= 4:  # (rows × 2) @ (2 × width) is slow as a matrix product; fused passes instead
                g = go[:, :1] * w_out[0]
                for j in range(1, w_out.shape[0]):
                    g.addcmul_(go[:, j : j + 1], w_out[j])
            else:
                g = go @ w_out
            for layer in range(n_hidden - 1, -1, -1):
                g = torch.ops.aten.threshold_backward(g, activations[layer + 1][lo:hi], 0)  # ReLU'
                g_w[layer].addmm_(g.t(), activations[layer][lo:hi])
                g_b[layer] += g.sum(0)
                g = torch.addmm(g, g, weights[layer])  # through h + W h
            g = torch.ops.aten.threshold_backward(g, activations[0][lo:hi], 0)
            if g_x is not None:
                torch.mm(g, w_in, out=g_x[lo:hi])
            if g_offset is not None:
                g_offset[first : first + count] += g.view(count, -1, g.shape[1]).sum(1)
            g_w_in.addmm_(g.t(), x[lo:hi])
            g_b_in += g.sum(0)
        g_hidden = [t for pair in zip(g_w, g_b) for t in pair]
        return (g_x, g_offset, g_w_in if needs[2] else None, g_b_in if needs[3] else None, g_w_out, g_b_out, *g_hidden)


class ResidualMLP(nn.Module):
    """``Linear(in, w) → ReLU → layers × [h + Linear(h) → ReLU] → Linear(w, out)``.

    ``forward(x, offset)`` adds ``offset`` ``(B, w)`` to the first layer's output before its
    ReLU, row ``b`` to the ``b``-th of ``B`` equal groups of rows of ``x``: the decoder passes
    ``W_z z`` there, one row per image, shared by all its points. The arithmetic is that of the
    ``nn.Linear`` layers it holds, with a hand-written backward (:class:`_ResidualMLPFunction`).
    """

    def __init__(self, in_dim: int, width: int, layers: int, out_dim: int):
        super().__init__()
        self.input = nn.Linear(in_dim, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.output = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(..., in)`` → ``(..., out)``; ``offset`` ``(B, width)`` with ``B`` dividing the rows."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        if offset is not None and (offset.dim() != 2 or flat.shape[0] % offset.shape[0]):
            raise InputError(f"offset of shape {tuple(offset.shape)} does not divide {flat.shape[0]} rows")
        params = []
        for layer in self.hidden:
            params += [layer.weight, layer.bias]
        out = _ResidualMLPFunction.apply(flat.contiguous(), offset, self.input.weight, self.input.bias,
                                         self.output.weight, self.output.bias, *params)
        return out.reshape(*lead, out.shape[-1])

    def reference_forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """The same network with plain autograd operations (tests compare the two)."""
        lead = x.shape[:-1]
        h = self.input(x.reshape(-1, x.shape[-1]))
        if offset is not None:
            h = (h.reshape(offset.shape[0], -1, h.shape[-1]) + offset[:, None, :]).reshape(h.shape)
        h = torch.relu(h)
        for layer in self.hidden:
            h = torch.relu(h + layer(h))
        out = self.output(h)
        return out.reshape(*lead, out.shape[-1])


class HetVAE(nn.Module):
    """Encoder ``q(z | image)`` and coordinate decoder ``f(k, z)`` of a cryoDRGN-style VAE.

    Parameters
    ----------
    config
        Architecture and image geometry (:class:`HetModelConfig`).

    Attributes
    ----------
    encoder
        :class:`ResidualMLP` from the pixels in :func:`encoder_mask` to ``2 · zdim`` numbers
        (``mu`` then ``logvar``); None when ``zdim == 0``.
    decoder
        :class:`ResidualMLP` from ``6 · pe_dim`` positional features to ``(Re, Im)``.
    latent_projection
        ``Linear(zdim, decoder_width, bias=False)``: the ``z`` columns of the decoder's first
        layer; None when ``zdim == 0``.
    omega
        Buffer ``(3, 3 · pe_dim)``: :func:`positional_frequencies`.
    data_scale
        Buffer (scalar): RMS pixel value of the training images (module docstring, "Units");
        1 until training sets it.

    Notes
    -----
    Module parameters are initialised from torch's global random state (fork it and seed it for
    reproducible models, as :func:`cryolab.heterogeneity.training.train_vae` does).
    """

    def __init__(self, config: HetModelConfig):
        super().__init__()
        self.config = config
        d = config.train_box_size
        if config.zdim > 0:
            mask = encoder_mask(d, config.enc_mask_radius)
            n_pixels = int(mask.sum())
            self.register_buffer("encoder_pixels", torch.nonzero(mask.reshape(-1)).squeeze(-1), persistent=False)
            self.encoder = ResidualMLP(n_pixels, config.encoder_width, config.encoder_layers, 2 * config.zdim)
            self.latent_projection = nn.Linear(config.zdim, config.decoder_width, bias=False)
        else:
            self.encoder = None
            self.latent_projection = None
        self.register_buffer("omega", positional_frequencies(config))
        self.decoder = ResidualMLP(self.omega.shape[1] * 2, config.decoder_width, config.decoder_layers, 2)
        self.register_buffer("data_scale", torch.ones(()))
        freqs, index, weights = disc_half_plane(d)
        self.register_buffer("disc_freqs", freqs, persistent=False)
        self.register_buffer("disc_index", index, persistent=False)
        self.register_buffer("disc_weights", weights, persistent=False)

    @property
    def zdim(self) -> int:
        return self.config.zdim

    @property
    def device(self) -> torch.device:
        return self.omega.device

    # -- encoder --------------------------------------------------------------------------------

    def encode(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters of ``z`` for encoder-ready images.

        Parameters
        ----------
        images
            ``(B, D, D)`` real images at the training box, centred (shifts undone),
            CTF-phase-flipped and divided by ``data_scale`` — as
            :func:`cryolab.heterogeneity.training.prepare_batch` makes them.

        Returns
        -------
        mu, logvar
            ``(B, zdim)`` each: mean and log-variance of ``q(z | image)``; ``(B, 0)`` when
            ``zdim == 0``.
        """
        images = as_tensor(images, device=self.device)
        b = images.shape[0]
        if self.encoder is None:
            empty = images.new_zeros(b, 0)
            return empty, empty
        d = self.config.train_box_size
        if tuple(images.shape[1:]) != (d, d):
            raise InputError(f"encoder expects images of {d}x{d} pixels, got shape {tuple(images.shape)}")
        out = self.encoder(images.reshape(b, -1)[:, self.encoder_pixels])
        return out[:, : self.zdim], out[:, self.zdim :]

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample ``z = mu + exp(logvar / 2) · ε``, ``ε ~ Normal(0, I)``: the reparameterisation trick.

        Writing the sample as a deterministic function of ``(mu, logvar)`` and independent noise
        lets gradients of the reconstruction flow back into the encoder (Kingma & Welling 2014).
        ``ε`` is drawn on the CPU from ``generator`` (reproducible on any device).
        """
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    # -- decoder --------------------------------------------------------------------------------

    def decode_real_imag(self, coords: torch.Tensor, z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of ``f(k, z)`` in normalised units (module docstring).

        Parameters
        ----------
        coords
            ``(B, M, 3)`` (or ``(M, 3)`` with ``B`` from ``z``) frequencies ``(kx, ky, kz)`` in
            cycles/pixel of the training box.
        z
            ``(B, zdim)`` latent coordinates; None (or ``(B, 0)``) when ``zdim == 0``.

        Returns
        -------
        re, im
            ``(B, M)`` each (``(M,)`` for ``(M, 3)`` coordinates without ``z``). Points with
            ``kx < 0`` are evaluated at ``-k`` and conjugated: ``f`` is Hermitian.
        """
        coords = as_tensor(coords, device=self.device)
        flip = coords[..., 0] < 0
        re, im = self.half_space_field(torch.where(flip[..., None], -coords, coords), z)
        if re.dim() > flip.dim():
            flip = flip.expand(re.shape)
        return re, torch.where(flip, -im, im)

    def half_space_field(self, coords: torch.Tensor, z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network itself: ``(Re f, Im f)`` at frequencies with ``kx ≥ 0`` (no folding).

        Same shapes as :meth:`decode_real_imag`, which folds ``kx < 0`` onto this half-space.
        """
        features = positional_encoding(coords, self.omega)
        offset = None
        if self.zdim > 0:
            if z is None or z.shape[-1] != self.zdim:
                raise InputError(f"the model needs z of shape (B, {self.zdim}), got {None if z is None else tuple(z.shape)}")
            z = as_tensor(z, device=self.device)
            if features.dim() == 2:
                features = features.expand(z.shape[0], *features.shape)
            offset = self.latent_projection(z)
        out = self.decoder(features, offset)
        return out[..., 0], out[..., 1]

    def decode_points(self, coords, z=None) -> torch.Tensor:
        """Complex ``f(k, z)`` in normalised units at 3D frequencies; see :meth:`decode_real_imag`."""
        re, im = self.decode_real_imag(coords, z)
        return torch.complex(re, im)

    def decode_slices(self, z, rotations, *, ctf=None, shifts_A=None) -> torch.Tensor:
        """Rendered images in Fourier space: CTF · phase ramp · decoder on the rotated central slice.

        Parameters
        ----------
        z
            ``(B, zdim)`` latent coordinates (None when ``zdim == 0``).
        rotations
            ``(B, 3, 3)`` RELION matrices ``A`` (``cryolab.io.poses_from_table``).
        ctf
            Optional CTF: values ``(B, D, D//2 + 1)`` in the unshifted rfft layout, or
            :class:`cryolab.ctf.CTFParams` with batch shape ``(B,)`` (evaluated at the training
            pixel size with :func:`cryolab.ctf.ctf_2d`).
        shifts_A
            Optional ``(B, 2)`` origins ``rlnOriginX/YAngst`` (Å), applied with
            :func:`cryolab.projection.apply_shifts_rfft`.

        Returns
        -------
        complex64 ``(B, D, D//2 + 1)``: the unshifted rfft (origin at pixel ``D//2``) of the
        rendered images in the units of the training images, zero outside the disc; compare
        with ``rfft_centered(image)``, or make images with
        :func:`cryolab.projection.central_slices_to_images` (:func:`render_images`).
        """
        from cryolab.ctf import CTFParams, ctf_2d
        from cryolab.projection import apply_shifts_rfft

        rotations = as_tensor(rotations, device=self.device)
        if rotations.dim() == 2:
            rotations = rotations[None]
        b, d = rotations.shape[0], self.config.train_box_size
        coords = slice_coordinates(rotations, self.disc_freqs)
        re, im = self.decode_real_imag(coords, z)
        scale = d * self.data_scale
        values = torch.complex(re, im).expand(b, -1) * scale
        out = torch.zeros(b, d * (d // 2 + 1), dtype=values.dtype, device=self.device)
        out[:, self.disc_index] = values
        out = out.reshape(b, d, d // 2 + 1)
        if shifts_A is not None:
            out = apply_shifts_rfft(out, as_tensor(shifts_A, device=self.device), self.config.train_pixel_size_A)
        if ctf is not None:
            if isinstance(ctf, CTFParams):
                ctf = ctf_2d(ctf, (d, d), self.config.train_pixel_size_A, rfft=True)
            out = out * as_tensor(ctf, device=self.device).to(torch.float32)
        return out


def render_images(model: HetVAE, z, rotations, *, ctf=None, shifts_A=None) -> torch.Tensor:
    """Real-space ``(B, D, D)`` images rendered by ``model`` (centred at ``D//2``, units of the training images).

    :meth:`HetVAE.decode_slices` followed by :func:`cryolab.projection.central_slices_to_images`.
    """
    from cryolab.projection import central_slices_to_images

    d = model.config.train_box_size
    with torch.no_grad():
        slices = model.decode_slices(z, rotations, ctf=ctf, shifts_A=shifts_A)
    return central_slices_to_images(slices, (d, d))
