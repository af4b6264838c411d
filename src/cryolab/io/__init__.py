"""File formats at cryolab's boundary: MRC, RELION STAR, cryoSPARC .cs, cryoDRGN pickles.

Readers return numpy arrays and pandas tables (docs/conventions.md, "Python API"); every
conversion from another program's convention to cryolab's happens here and nowhere else.
A particle table has RELION column names (no leading underscore), one row per particle, optics
columns on every row, ``rlnImagePixelSize`` (Å) and shifts ``rlnOriginXAngst/YAngst`` (Å);
rotations are RELION's matrices ``A`` (``poses_from_table``).

Bad input raises :class:`cryolab.errors.InputError` naming the file and the problem.
"""

from cryolab.io.cryodrgn import (
    CTF_PKL_COLUMNS,
    RestrictedUnpickler,
    cryodrgn_ctf_to_table,
    cryodrgn_poses_to_table,
    read_cryodrgn_ctf,
    read_cryodrgn_poses,
    table_to_cryodrgn_ctf,
    table_to_cryodrgn_poses,
    write_cryodrgn_ctf,
    write_cryodrgn_poses,
)
from cryolab.io.cryosparc import cryosparc_rotvec_to_matrix, matrix_to_cryosparc_rotvec, read_cryosparc
from cryolab.io.mrc import ImageStack, MRCData, open_stack, read_mrc, write_mrc
from cryolab.io.particles import ParticleSet, images_from_table, read_particles, resolve_image_path
from cryolab.io.star import (
    OPTICS_COLUMNS,
    format_image_names,
    parse_image_names,
    read_star,
    require_columns,
    write_star,
)
from cryolab.io.tables import ctf_from_table, pixel_size_from_table, poses_from_table

__all__ = [
    "CTF_PKL_COLUMNS",
    "ImageStack",
    "MRCData",
    "OPTICS_COLUMNS",
    "ParticleSet",
    "RestrictedUnpickler",
    "cryodrgn_ctf_to_table",
    "cryodrgn_poses_to_table",
    "cryosparc_rotvec_to_matrix",
    "ctf_from_table",
    "format_image_names",
    "images_from_table",
    "matrix_to_cryosparc_rotvec",
    "open_stack",
    "parse_image_names",
    "pixel_size_from_table",
    "poses_from_table",
    "read_cryodrgn_ctf",
    "read_cryodrgn_poses",
    "read_cryosparc",
    "read_mrc",
    "read_particles",
    "read_star",
    "require_columns",
    "resolve_image_path",
    "table_to_cryodrgn_ctf",
    "table_to_cryodrgn_poses",
    "write_cryodrgn_ctf",
    "write_cryodrgn_poses",
    "write_mrc",
    "write_star",
]
