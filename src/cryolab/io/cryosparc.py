"""cryoSPARC ``.cs`` particle files (numpy structured arrays) as RELION-style particle tables.

Conversions (checked in tests/test_io_cryosparc.py against files from cryoSPARC, cryoDRGN's
parsers and the RELION metadata of the same particles):

- **Rotation.** ``alignments3D/pose`` is a rotation vector ``v`` (axis × angle, radians). Its
  matrix ``R(v)`` (Rodrigues; SciPy ``Rotation.from_rotvec(v).as_matrix()``) is the transpose
  of RELION's ``A`` (docs/conventions.md, "Rotations"): ``A = R(v)ᵀ = R(−v)``. cryoDRGN's
  ``parse_pose_csparc`` (expmap, then transpose) and pyem's ``csparc2star`` (whose expmap is
  ``R(v)ᵀ`` followed by RELION's Euler decomposition) agree; cryoDRGN's ``pose.cs.pkl`` matches
  ``R(v)ᵀ`` to float32 rounding.
- **Shift.** ``alignments3D/shift`` is in pixels of ``alignments3D/psize_A`` with RELION's sign:
  ``rlnOriginXAngst, rlnOriginYAngst = shift * alignments3D/psize_A`` (``blob/psize_A`` where the
  alignment carries no pixel size).
- **CTF.** ``df1_A, df2_A`` -> ``rlnDefocusU, rlnDefocusV`` (Å); ``df_angle_rad`` and
  ``phase_shift_rad`` -> degrees; ``accel_kv``, ``cs_mm``, ``amp_contrast``, ``bfactor``,
  ``scale`` -> ``rlnVoltage``, ``rlnSphericalAberration``, ``rlnAmplitudeContrast``,
  ``rlnCtfBfactor``, ``rlnCtfScalefactor``.
- **Images.** ``blob/path`` (a leading ``>``, cryoSPARC's mark for imported files, removed) and
  0-based ``blob/idx`` -> ``rlnImageName = f"{idx + 1:06d}@{path}"``; ``blob/psize_A`` ->
  ``rlnImagePixelSize``; ``blob/shape`` -> ``rlnImageSize``.
- ``ctf/exp_group_id`` -> ``rlnOpticsGroup`` (1, 2, … in sorted order of the ids; the id is kept
  in ``rlnOpticsGroupName = "exp_group_<id>"``); ``alignments3D/split`` -> ``rlnRandomSubset``
  (1 or 2); ``alignments3D/class`` -> ``rlnClassNumber`` (1-based).

A file without ``alignments3D/pose`` (an import or extraction job) gives a table without the
angle and origin columns; :func:`cryolab.io.poses_from_table` then raises InputError "no poses
(alignments3D/pose)".
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryolab.errors import InputError
from cryolab.rotations import matrix_to_relion_euler, matrix_to_rotvec, rotvec_to_matrix

__all__ = ["read_cryosparc", "cryosparc_rotvec_to_matrix", "matrix_to_cryosparc_rotvec"]

_CTF = (
    ("ctf/df1_A", "rlnDefocusU", 1.0),
    ("ctf/df2_A", "rlnDefocusV", 1.0),
    ("ctf/df_angle_rad", "rlnDefocusAngle", 180.0 / np.pi),
    ("ctf/accel_kv", "rlnVoltage", 1.0),
    ("ctf/cs_mm", "rlnSphericalAberration", 1.0),
    ("ctf/amp_contrast", "rlnAmplitudeContrast", 1.0),
    ("ctf/phase_shift_rad", "rlnPhaseShift", 180.0 / np.pi),
    ("ctf/bfactor", "rlnCtfBfactor", 1.0),
    ("ctf/scale", "rlnCtfScalefactor", 1.0),
)


def cryosparc_rotvec_to_matrix(rotvec) -> torch.Tensor:
    """RELION matrices ``A`` ``(..., 3, 3)`` from cryoSPARC pose rotation vectors ``(..., 3)``.

    ``A = R(v)ᵀ`` where ``R(v)`` is the Rodrigues matrix of ``v`` (see the module docstring).
    Returns a float64 tensor for float64 input, else float32.
    """
    return rotvec_to_matrix(rotvec).transpose(-1, -2)


def matrix_to_cryosparc_rotvec(matrix) -> torch.Tensor:
    """cryoSPARC pose rotation vectors ``(..., 3)`` from RELION matrices ``A`` ``(..., 3, 3)``."""
    m = matrix if isinstance(matrix, torch.Tensor) else torch.as_tensor(np.asarray(matrix))
    return matrix_to_rotvec(m.transpose(-1, -2))


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"not a cryoSPARC .cs file (numpy structured array): {exc}", path) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read cryoSPARC .cs file: {exc}", path) from exc
    if not isinstance(data, np.ndarray) or data.dtype.names is None or data.ndim != 1:
        raise InputError("not a cryoSPARC .cs file (expected a 1D numpy structured array)", path)
    return data


def _pixel_size(data: np.ndarray, names, pixel_size_A, path: Path) -> np.ndarray:
    if pixel_size_A is not None:
        if not np.isfinite(pixel_size_A) or pixel_size_A <= 0:
            raise InputError(f"pixel size must be a positive number of Å, got {pixel_size_A}", path)
        return np.full(len(data), float(pixel_size_A))
    for field in ("blob/psize_A", "alignments3D/psize_A"):
        if field in names:
            px = data[field].astype(np.float64)
            if np.all(np.isfinite(px) & (px > 0)):
                return px
    raise InputError("no pixel size (blob/psize_A); give one (pixel_size_A=, --pixel-size)", path)


def read_cryosparc(path, *, pixel_size_A: float | None = None) -> pd.DataFrame:
    """Read a cryoSPARC particle ``.cs`` file into a RELION-style particle table.

    Parameters
    ----------
    path : str or Path
        The ``.cs`` file (a numpy structured array, read with ``allow_pickle=False``).
    pixel_size_A : float, optional
        Image pixel size in Å, replacing ``blob/psize_A`` (needed where the file has none).

    Returns
    -------
    pandas.DataFrame
        The columns :func:`cryolab.io.read_star` returns, as far as the file has them: see the
        module docstring for each conversion. Pose columns (``rlnAngleRot/Tilt/Psi``,
        ``rlnOriginXAngst/YAngst``) only where the file has ``alignments3D/pose``.

    Raises
    ------
    InputError
        Missing or unreadable file; not a structured array; no pixel size.
    """
    path = Path(os.fspath(path))
    data = _load(path)
    names = set(data.dtype.names)
    n = len(data)
    columns: dict[str, np.ndarray] = {}
    if "blob/path" in names and "blob/idx" in names:
        paths = np.char.decode(data["blob/path"].astype("S"), "utf-8") if n else np.array([], dtype=str)
        paths = np.array([p[1:] if p.startswith(">") else p for p in paths], dtype=object)
        frames = data["blob/idx"].astype(np.int64) + 1
        columns["rlnImageName"] = np.array([f"{i:06d}@{p}" for i, p in zip(frames, paths)], dtype=object)
    for field, column, factor in _CTF:
        if field in names:
            columns[column] = data[field].astype(np.float64) * factor
    px = _pixel_size(data, names, pixel_size_A, path)
    if "ctf/exp_group_id" in names:
        ids = data["ctf/exp_group_id"].astype(np.int64)
        unique, rank = np.unique(ids, return_inverse=True)
        columns["rlnOpticsGroup"] = rank.astype(np.int64) + 1
        columns["rlnOpticsGroupName"] = np.array([f"exp_group_{i}" for i in unique], dtype=object)[rank]
    columns["rlnImagePixelSize"] = px
    if "blob/shape" in names:
        shape = np.asarray(data["blob/shape"]).reshape(n, -1)
        if n and np.any(shape[:, 0] != shape[:, -1]):
            raise InputError("non-square particle images (blob/shape) are not supported", path)
        columns["rlnImageSize"] = shape[:, -1].astype(np.int64)
    if "alignments3D/pose" in names:
        pose = np.asarray(data["alignments3D/pose"], dtype=np.float64).reshape(n, 3)
        A = cryosparc_rotvec_to_matrix(torch.from_numpy(pose))
        euler = matrix_to_relion_euler(A).numpy()
        columns["rlnAngleRot"] = euler[:, 0]
        columns["rlnAngleTilt"] = euler[:, 1]
        columns["rlnAnglePsi"] = euler[:, 2]
        if "alignments3D/shift" in names:
            align_px = px
            if "alignments3D/psize_A" in names:
                candidate = data["alignments3D/psize_A"].astype(np.float64)
                if np.all(np.isfinite(candidate) & (candidate > 0)):
                    align_px = candidate  # the pixel size the shifts were measured in
            shift = np.asarray(data["alignments3D/shift"], dtype=np.float64).reshape(n, 2)
            columns["rlnOriginXAngst"] = shift[:, 0] * align_px
            columns["rlnOriginYAngst"] = shift[:, 1] * align_px
        if "alignments3D/split" in names:
            columns["rlnRandomSubset"] = data["alignments3D/split"].astype(np.int64) + 1
        if "alignments3D/class" in names:
            columns["rlnClassNumber"] = data["alignments3D/class"].astype(np.int64) + 1
    table = pd.DataFrame(columns)
    table.attrs = {
        "cryolab_source": str(path),
        "cryolab_format": "cryosparc",
        "cryolab_optics_columns": [],
    }
    return table
