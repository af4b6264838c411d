"""Particles from any supported metadata: a table, a lazy image stack and a pixel size.

:func:`read_particles` dispatches on the file name: a RELION ``.star`` file, a cryoSPARC ``.cs``
file, or an ``.mrcs`` stack with cryoDRGN pose/CTF pickles beside it. Image paths in the metadata
resolve as docs/conventions.md ("Files") says: relative paths are tried under, in order, the
project directory the user names, the current directory (RELION's rule), then the metadata
file's folder and each of its parents; an unresolvable path is an InputError naming what was
tried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryolab.errors import InputError
from cryolab.io.cryodrgn import (
    cryodrgn_ctf_to_table,
    cryodrgn_poses_to_table,
    read_cryodrgn_ctf,
    read_cryodrgn_poses,
)
from cryolab.io.cryosparc import read_cryosparc
from cryolab.io.mrc import ImageStack, open_stack
from cryolab.io.star import format_image_names, parse_image_names, read_star, require_columns
from cryolab.io.tables import pixel_size_from_table

__all__ = ["ParticleSet", "read_particles", "images_from_table", "resolve_image_path"]


@dataclass(frozen=True)
class ParticleSet:
    """Particles: metadata, images and their pixel size, which always travel together.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per particle, RELION column names (see :func:`cryolab.io.read_star`).
    images : ImageStack
        Lazy float32 images ``(N, ny, nx)``; row ``i`` of ``table`` is ``images[i]``.
    pixel_size_A : float
        Pixel size of the images in Å.
    """

    table: pd.DataFrame
    images: ImageStack
    pixel_size_A: float

    def __len__(self) -> int:
        return len(self.table)


def _search_folders(source: Path | None, project_dir) -> list[Path]:
    folders: list[Path] = []
    if project_dir is not None:
        folders.append(Path(os.fspath(project_dir)))
    folders.append(Path.cwd())
    if source is not None:
        here = source.resolve().parent
        folders += [here, *here.parents]
    return list(dict.fromkeys(folders))


def resolve_image_path(name: str, *, source=None, project_dir=None) -> Path:
    """Find the file an image path in metadata refers to.

    Parameters
    ----------
    name : str
        The path as written in the metadata (``rlnImageName`` after the ``@``, ``blob/path``).
    source : str or Path, optional
        The metadata file; its folder and the folder's parents are searched.
    project_dir : str or Path, optional
        Searched first (``--project-dir``); then the current directory.
    """
    source = None if source is None else Path(os.fspath(source))
    path = Path(name)
    if path.is_absolute():
        if path.is_file():
            return path
        raise InputError(f"image file {name} not found", source)
    folders = _search_folders(source, project_dir)
    for folder in folders:
        candidate = folder / path
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(f) for f in folders)
    raise InputError(f"cannot find image file {name!r} under any of: {tried}", source)


def images_from_table(table: pd.DataFrame, *, project_dir=None, pixel_size_A: float | None = None) -> ImageStack:
    """A lazy :class:`ImageStack` over the images a particle table's ``rlnImageName`` refers to.

    ``pixel_size_A`` defaults to the table's (single) ``rlnImagePixelSize``. Raises InputError
    for missing columns, unresolvable files and image numbers beyond a stack's length.
    """
    source = table.attrs.get("cryolab_source")
    source = None if source is None else Path(source)
    require_columns(table, ["rlnImageName"], "images")
    frames, names = parse_image_names(table["rlnImageName"].to_numpy(), source=source)
    resolved = {n: resolve_image_path(n, source=source, project_dir=project_dir) for n in dict.fromkeys(names)}
    paths = [resolved[n] for n in names]
    if pixel_size_A is None and "rlnImagePixelSize" in table.columns and len(table):
        pixel_size_A = pixel_size_from_table(table)
    stack = ImageStack.from_references(paths, frames, pixel_size_A=pixel_size_A, source=source)
    if "rlnImageSize" in table.columns and len(table):
        sizes = np.unique(table["rlnImageSize"].to_numpy(np.int64))
        if len(sizes) != 1 or sizes[0] != stack.shape[-1]:
            raise InputError(
                f"rlnImageSize {', '.join(map(str, sizes))} does not match the {stack.shape[-1]}-pixel images",
                source,
            )
    return stack


def _check_count(n_expected: int, n_found: int, what: str, path) -> None:
    if n_found != n_expected:
        raise InputError(f"{what} has {n_found} entries but there are {n_expected} particles", path)


def _apply_pickles(table: pd.DataFrame, *, poses, ctf, box_size, pixel_size_A) -> pd.DataFrame:
    """Replace pose/CTF columns of ``table`` with those from cryoDRGN pickles."""
    table = table.copy()
    if ctf is not None:
        params = read_cryodrgn_ctf(ctf)
        _check_count(len(table), len(params), f"CTF pickle {ctf}", ctf)
        ctf_table = cryodrgn_ctf_to_table(params)
        for column in ctf_table.columns:
            if column not in ("rlnImageSize", "rlnImagePixelSize"):
                table[column] = ctf_table[column].to_numpy()
    if poses is not None:
        rot, trans = read_cryodrgn_poses(poses)
        _check_count(len(table), len(rot), f"pose pickle {poses}", poses)
        pose_table = cryodrgn_poses_to_table(rot, trans, box_size=box_size, pixel_size_A=pixel_size_A)
        for column in pose_table.columns:
            table[column] = pose_table[column].to_numpy()
    return table


def _pixel_size_from_ctf_pickle(ctf, box_size: int) -> float | None:
    params = read_cryodrgn_ctf(ctf)
    if len(params) == 0:
        return None
    D, apix = float(params[0, 0]), float(params[0, 1])
    # cryoDRGN's rule for downsampled images: Apix scales with D0 / D
    return apix * D / box_size if D > 0 and apix > 0 else None


def read_particles(
    path,
    *,
    project_dir=None,
    pixel_size_A: float | None = None,
    poses=None,
    ctf=None,
) -> ParticleSet:
    """Read particles: metadata table, lazy images and pixel size.

    Parameters
    ----------
    path : str or Path
        ``.star`` (RELION 3.0/3.1/5), ``.cs`` (cryoSPARC) or ``.mrcs``/``.mrc`` (an image stack
        whose metadata come from cryoDRGN pickles given as ``poses`` and ``ctf``).
    project_dir : str or Path, optional
        Folder that relative image paths are tried under first (``--project-dir``).
    pixel_size_A : float, optional
        Pixel size in Å; replaces the metadata's (required where there is none).
    poses, ctf : str or Path, optional
        cryoDRGN pose / CTF pickles; their values replace the table's pose / CTF columns.

    Returns
    -------
    ParticleSet

    Raises
    ------
    InputError
        Unknown file type; missing columns; unresolvable image files; image numbers beyond a
        stack; a pickle whose count differs from the number of particles; mixed pixel sizes.
    """
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix in (".star", ".cs"):
        if suffix == ".star":
            table = read_star(path, pixel_size_A=pixel_size_A)
        else:
            table = read_cryosparc(path, pixel_size_A=pixel_size_A)
        images = images_from_table(table, project_dir=project_dir)
        if poses is not None or ctf is not None:
            attrs = dict(table.attrs)
            px = pixel_size_from_table(table)
            table = _apply_pickles(table, poses=poses, ctf=ctf, box_size=images.shape[-1], pixel_size_A=px)
            table.attrs = attrs
    elif suffix in (".mrcs", ".mrc"):
        images = open_stack(path, pixel_size_A=pixel_size_A)
        n, _, box = images.shape
        px = pixel_size_A
        if px is None and ctf is not None:
            px = _pixel_size_from_ctf_pickle(ctf, box)
        if px is None:
            px = images.pixel_size_A
        if px is None:
            raise InputError(
                "no pixel size: the MRC header says 0 and no CTF pickle gives one; "
                "give one (pixel_size_A=, --pixel-size)",
                path,
            )
        images = open_stack(path, pixel_size_A=px)
        table = pd.DataFrame(
            {
                "rlnImageName": format_image_names(np.arange(n), [str(path)] * n),
                "rlnImagePixelSize": np.full(n, float(px)),
                "rlnImageSize": np.full(n, box, dtype=np.int64),
            }
        )
        table = _apply_pickles(table, poses=poses, ctf=ctf, box_size=box, pixel_size_A=float(px))
        table.attrs = {"cryolab_source": str(path), "cryolab_format": "cryodrgn", "cryolab_optics_columns": []}
    elif suffix == ".pkl":
        raise InputError(
            "a cryoDRGN .pkl holds poses or CTF, not images: give the image stack (.mrcs) as the "
            "path and the pickles as poses= / ctf=",
            path,
        )
    else:
        raise InputError(f"unknown particle file type {suffix or '(none)'!r}; expected .star, .cs or .mrcs", path)
    return ParticleSet(table=table, images=images, pixel_size_A=float(images.pixel_size_A))
