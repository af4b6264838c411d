"""Thin helpers from a particle table (RELION column names) to the tensors algorithms take.

The table is what :func:`cryolab.io.read_star`, :func:`cryolab.io.read_cryosparc` and
:func:`cryolab.io.read_particles` return; these helpers only pick columns, check they are there
and convert units/representations (docs/conventions.md: rotations as RELION matrices ``A``,
shifts ``rlnOriginXAngst/YAngst`` in Å, CTF in RELION's units).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cryolab.errors import InputError
from cryolab.rotations import relion_euler_to_matrix
from cryolab.io.star import require_columns

__all__ = ["POSE_COLUMNS", "CTF_COLUMNS", "poses_from_table", "ctf_from_table", "pixel_size_from_table"]

POSE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")

#: Table column -> key in :func:`ctf_from_table`'s result, and the default where optional.
CTF_COLUMNS = (
    ("rlnDefocusU", "defocus_u_A", None),
    ("rlnDefocusV", "defocus_v_A", None),
    ("rlnDefocusAngle", "defocus_angle_deg", None),
    ("rlnVoltage", "voltage_kV", None),
    ("rlnSphericalAberration", "cs_mm", None),
    ("rlnAmplitudeContrast", "amplitude_contrast", None),
    ("rlnPhaseShift", "phase_shift_deg", 0.0),
    ("rlnCtfBfactor", "bfactor_A2", 0.0),
    ("rlnCtfScalefactor", "scale", 1.0),
)


def _source(table: pd.DataFrame):
    return table.attrs.get("cryolab_source")


def poses_from_table(table: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation matrices and shifts from a particle table.

    Returns
    -------
    rotations : torch.Tensor
        float32 ``(N, 3, 3)``, RELION's ``A(rot, tilt, psi)`` (docs/conventions.md, "Rotations").
    shifts_A : torch.Tensor
        float32 ``(N, 2)``, ``(rlnOriginXAngst, rlnOriginYAngst)`` in Å; zeros where the table
        has no origin columns (RELION's default).

    Raises
    ------
    InputError
        No angle columns (for a cryoSPARC table: "no poses (alignments3D/pose)"), or only one
        of the two origin columns.
    """
    if not all(c in table.columns for c in POSE_COLUMNS):
        if table.attrs.get("cryolab_format") == "cryosparc":
            raise InputError("no poses (alignments3D/pose)", _source(table))
        require_columns(table, POSE_COLUMNS, "poses")
    angles = torch.from_numpy(table[list(POSE_COLUMNS)].to_numpy(np.float64, copy=True))
    if not torch.isfinite(angles).all():
        raise InputError("pose angles contain missing or non-finite values", _source(table))
    rotations = relion_euler_to_matrix(angles).to(torch.float32)
    origin = ["rlnOriginXAngst", "rlnOriginYAngst"]
    if any(c in table.columns for c in origin):
        require_columns(table, origin, "shifts")
        shifts = torch.from_numpy(table[origin].to_numpy(np.float64, copy=True)).to(torch.float32)
    else:
        shifts = torch.zeros(len(table), 2, dtype=torch.float32)
    return rotations, shifts


def ctf_from_table(table: pd.DataFrame) -> dict[str, torch.Tensor]:
    """CTF parameters from a particle table, one float32 ``(N,)`` tensor per parameter.

    Keys: ``defocus_u_A``, ``defocus_v_A``, ``defocus_angle_deg``, ``voltage_kV``, ``cs_mm``,
    ``amplitude_contrast``, ``phase_shift_deg`` (0 if absent), ``bfactor_A2`` (0 if absent),
    ``scale`` (1 if absent) — RELION's units and conventions, unchanged.
    """
    require_columns(table, [c for c, _, default in CTF_COLUMNS if default is None], "CTF")
    out = {}
    for column, key, default in CTF_COLUMNS:
        if column in table.columns:
            values = table[column].to_numpy(np.float64, copy=True)
        else:
            values = np.full(len(table), default)
        out[key] = torch.from_numpy(values).to(torch.float32)
    return out


def pixel_size_from_table(table: pd.DataFrame, *, rtol: float = 1e-4) -> float:
    """The one pixel size (Å) of all particles (``rlnImagePixelSize``).

    Raises InputError where the column is missing or particles differ in pixel size (several
    optics groups with different pixel sizes: select one group first).
    """
    require_columns(table, ["rlnImagePixelSize"], "the pixel size")
    px = table["rlnImagePixelSize"].to_numpy(np.float64)
    if len(px) == 0:
        raise InputError("no particles", _source(table))
    if not np.all(np.isfinite(px) & (px > 0)):
        raise InputError("rlnImagePixelSize has missing or non-positive values", _source(table))
    lo, hi = float(px.min()), float(px.max())
    if hi - lo > rtol * hi:
        values = ", ".join(f"{v:g}" for v in np.unique(px)[:6])
        raise InputError(
            f"particles have different pixel sizes ({values} Å); select one optics group first",
            _source(table),
        )
    return float(np.median(px))
