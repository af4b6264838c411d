"""Movies of maps along a latent trajectory: projections or central sections, as GIF or MP4.

So nobody needs ChimeraX to see what a trajectory does: :func:`trajectory_frames` turns a
sequence of maps ``(M, N, N, N)`` into images — projections along a few viewing directions
(:func:`cryolab.projection.project_fourier`, RELION's convention) or the three central sections
through the box — :func:`frames_to_uint8` tiles the views side by side on one grey scale shared
by *all* frames (so a change of density between frames is a change of brightness, not a
rescaling artefact), and :func:`write_movie` writes them with imageio (GIF via Pillow; MP4 when
the ``imageio-ffmpeg`` package is installed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError

__all__ = [
    "FRAME_KINDS",
    "MOVIE_FORMATS",
    "default_view_rotations",
    "frames_to_uint8",
    "mp4_available",
    "trajectory_frames",
    "write_movie",
]

FRAME_KINDS = ("projection", "slice")
MOVIE_FORMATS = ("gif", "mp4")


def default_view_rotations() -> torch.Tensor:
    """Three views along the map's z, y and x axes: RELION angles (0, 0, 0), (90, 90, 0), (0, 90, 0).

    The viewing direction of ``(rot, tilt, psi)`` is ``(cos rot sin tilt, sin rot sin tilt,
    cos tilt)`` (docs/conventions.md), so these look down z, y and x. Returns ``(3, 3, 3)``.
    """
    from cryolab.rotations import relion_euler_to_matrix

    return relion_euler_to_matrix(torch.tensor([[0.0, 0.0, 0.0], [90.0, 90.0, 0.0], [0.0, 90.0, 0.0]]))


def trajectory_frames(volumes, *, kind: str = "projection", rotations=None, pad_factor: float = 2) -> torch.Tensor:
    """Images of each map of a trajectory: ``(M, N, N, N)`` -> ``(M, V, N, N)``.

    Parameters
    ----------
    volumes : (M, N, N, N)
        Maps along the trajectory, centred at ``N//2``.
    kind : "projection" or "slice"
        ``"projection"``: ``P(x, y) = ∫ V(Aᵀ (x, y, z)) dz`` for each rotation ``A``
        (:func:`cryolab.projection.project_fourier`). ``"slice"``: the three central sections
        ``V[N//2]`` (xy plane), ``V[:, N//2]`` (xz) and ``V[:, :, N//2]`` (yz); ``rotations``
        must then be None.
    rotations : (V, 3, 3), optional
        Views for projections (default :func:`default_view_rotations`).
    pad_factor
        Oversampling of the projector.

    Returns
    -------
    float32 tensor ``(M, V, N, N)``, images ``(y, x)``.
    """
    from cryolab.projection import project_fourier

    vols = as_tensor(volumes)
    if vols.dim() == 3:
        vols = vols[None]
    if vols.dim() != 4 or not (vols.shape[1] == vols.shape[2] == vols.shape[3]) or vols.shape[0] < 1:
        raise InputError(f"maps must be (M, N, N, N), got shape {tuple(vols.shape)}")
    c = vols.shape[-1] // 2
    if kind == "slice":
        if rotations is not None:
            raise InputError("central sections are taken along the map axes; rotations apply to projections only")
        return torch.stack([vols[:, c], vols[:, :, c], vols[:, :, :, c]], dim=1).float()
    if kind != "projection":
        raise InputError(f"frame kind must be one of {', '.join(FRAME_KINDS)}, got {kind!r}")
    rot = default_view_rotations() if rotations is None else as_tensor(rotations)
    if rot.dim() == 2:
        rot = rot[None]
    if rot.shape[-2:] != (3, 3):
        raise InputError(f"rotations must be (V, 3, 3), got shape {tuple(rot.shape)}")
    rot = rot.to(vols.dtype)
    return torch.stack([project_fourier(v, rot, pad_factor=pad_factor) for v in vols]).float()


def frames_to_uint8(frames, *, percentiles: tuple[float, float] = (0.5, 99.5), min_panel_px: int = 128, gap_px: int = 2,
                    position_bar_px: int = 4) -> np.ndarray:
    """Tile each frame's views side by side as 8-bit grey images: ``(M, V, H, W)`` -> ``(M, H', W')``.

    Each view is scaled to 0…255 with one range for all frames — the ``percentiles`` of that
    view over the whole movie — so brightness is comparable across frames. Panels smaller than
    ``min_panel_px`` are enlarged by an integer factor (nearest neighbour, no smoothing) and
    separated by ``gap_px`` black columns. Rows are flipped so that ``y`` points up, as in
    :func:`cryolab.plot.image_grid` (``origin="lower"``). Below the panels a bar
    ``position_bar_px`` high fills from left to right to show where along the trajectory a frame
    is (frame ``i`` of ``M`` fills ``(i + 1) / M``); it also keeps identical maps from becoming
    identical frames, which GIF writers merge.
    """
    f = as_tensor(frames).detach().cpu().double().numpy()
    if f.ndim == 3:
        f = f[:, None]
    if f.ndim != 4 or f.shape[0] < 1:
        raise InputError(f"frames must be (M, V, H, W), got shape {f.shape}")
    m, v, h, w = f.shape
    scale = max(1, int(np.ceil(min_panel_px / max(h, w))))
    panels = []
    for k in range(v):
        lo, hi = np.percentile(f[:, k], percentiles)
        if not hi > lo:
            hi = lo + 1.0
        p = np.clip((f[:, k] - lo) / (hi - lo), 0, 1)[:, ::-1]
        p = np.repeat(np.repeat(p, scale, axis=1), scale, axis=2)
        panels.append(p)
        if k < v - 1 and gap_px > 0:
            panels.append(np.zeros((m, h * scale, gap_px)))
    tiled = np.concatenate(panels, axis=2)
    if position_bar_px > 0:
        width = tiled.shape[2]
        filled = np.round((np.arange(m) + 1) / m * width).astype(int)
        bar = (np.arange(width)[None, :] < filled[:, None]).astype(np.float64)
        bar = np.repeat(bar[:, None, :], position_bar_px, axis=1)
        tiled = np.concatenate([tiled, np.zeros((m, gap_px, width)), bar], axis=1)
    return np.round(tiled * 255).astype(np.uint8)


def mp4_available() -> bool:
    """Whether MP4 can be written (the optional ``imageio-ffmpeg`` package is installed)."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def write_movie(path, frames, *, fps: float = 5.0, bounce: bool = False) -> int:
    """Write 8-bit frames ``(M, H, W)`` (:func:`frames_to_uint8`) as a looping GIF or an MP4.

    The format follows the file extension (``.gif`` or ``.mp4``). MP4 needs the optional
    ``imageio-ffmpeg`` package (InputError otherwise) and is padded to a multiple of 16 pixels,
    as H.264 encoders require. With ``bounce``, the frames play forward then backward
    (``0 … M-1 … 1``), which loops without a jump. Written atomically.

    Returns
    -------
    int
        Number of frames written.
    """
    import imageio.v3 as iio

    path = Path(os.fspath(path))
    f = np.asarray(frames)
    if f.ndim != 3 or f.shape[0] < 1 or f.dtype != np.uint8:
        raise InputError(f"movie frames must be uint8 (M, H, W), got {f.dtype} shape {f.shape}")
    if not fps > 0:
        raise InputError(f"frames per second must be positive, got {fps}")
    if bounce and f.shape[0] > 2:
        f = np.concatenate([f, f[-2:0:-1]])
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MOVIE_FORMATS:
        raise InputError(f"movie file must end in .gif or .mp4, got {path.name}", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        if fmt == "gif":
            # Pillow merges identical consecutive frames (frames_to_uint8's position bar prevents that)
            iio.imwrite(tmp, f, extension=".gif", duration=int(round(1000 / fps)), loop=0)
        else:
            if not mp4_available():
                raise InputError("writing MP4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); use GIF instead")
            h, w = f.shape[1:]
            f = np.pad(f, ((0, 0), (0, -h % 16), (0, -w % 16)))
            rgb = np.repeat(f[..., None], 3, axis=-1)
            iio.imwrite(tmp, rgb, extension=".mp4", fps=float(fps), codec="libx264", macro_block_size=16)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return int(f.shape[0])
