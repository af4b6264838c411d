"""cryoDRGN pose and CTF pickles, read through a restricted unpickler.

cryoDRGN keeps particle metadata in pickle files. Unpickling runs code named by the file, so
cryolab never calls :func:`pickle.load` on them: :class:`RestrictedUnpickler` admits only what
numpy arrays, tuples, lists, dicts and plain numbers need, and anything else — ``os.system``,
``builtins.eval``, any class — raises InputError "refusing to unpickle <module.name>" before it
is looked up, let alone called.

cryoDRGN's layouts (learnt from its ``parse_pose_star``, ``parse_pose_csparc``,
``parse_ctf_star``, ``parse_ctf_csparc`` commands and checked against its test files):

- **poses** ``pose.pkl``: a tuple ``(rot, trans)`` or just ``rot``. ``rot`` ``(N, 3, 3)`` is
  RELION's matrix ``A`` itself (docs/conventions.md, "Rotations"; cryoDRGN's ``R_from_relion``
  equals ``A``, and its ``pose.star.pkl`` matches ``A`` from the STAR angles to 1e-15).
  ``trans`` ``(N, 2)`` is RELION's origin as a fraction of the box, same sign:
  ``trans = (rlnOriginX, rlnOriginY) [pixels] / D``, i.e.
  ``rlnOriginXAngst = trans_x * D * pixel_size_A``.
- **CTF** ``ctf.pkl``: float32 ``(N, 9)``, columns ``D`` (box, pixels), ``Apix`` (Å),
  ``DefocusU``, ``DefocusV`` (Å), ``DefocusAngle`` (degrees), ``Voltage`` (kV), ``Cs`` (mm),
  amplitude contrast ``w`` and phase shift (degrees) — RELION's values unchanged.

Writing: cryoDRGN reads only pickles, so :func:`write_cryodrgn_poses` and
:func:`write_cryodrgn_ctf` are the one place cryolab writes a pickle-format file (an exception to
"No pickle is written" in docs/conventions.md, which is about cryolab's own files). They write
plain numpy arrays in a tuple, pickle protocol 3, with numpy's functions named by their
``numpy.core`` names so that both numpy 1.x and 2.x load them, and atomically.
"""

from __future__ import annotations

import builtins
import codecs
import importlib
import io
import os
import pickle
import pickletools
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryolab.errors import InputError
from cryolab.rotations import matrix_to_relion_euler

__all__ = [
    "RestrictedUnpickler",
    "CTF_PKL_COLUMNS",
    "read_cryodrgn_poses",
    "read_cryodrgn_ctf",
    "write_cryodrgn_poses",
    "write_cryodrgn_ctf",
    "cryodrgn_poses_to_table",
    "table_to_cryodrgn_poses",
    "cryodrgn_ctf_to_table",
    "table_to_cryodrgn_ctf",
]

#: Columns of a cryoDRGN CTF pickle and the particle-table column each becomes.
CTF_PKL_COLUMNS = (
    ("D", "rlnImageSize"),
    ("Apix", "rlnImagePixelSize"),
    ("DefocusU", "rlnDefocusU"),
    ("DefocusV", "rlnDefocusV"),
    ("DefocusAngle", "rlnDefocusAngle"),
    ("Voltage", "rlnVoltage"),
    ("Cs", "rlnSphericalAberration"),
    ("AmplitudeContrast", "rlnAmplitudeContrast"),
    ("PhaseShift", "rlnPhaseShift"),
)


def _numpy_module(*names):
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(f"none of {names} importable")


def _latin1_encode(text, encoding="latin1"):
    # Protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); nothing else is admitted.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("refusing _codecs.encode with anything but latin1 text")
    return codecs.encode(text, "latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    multiarray = _numpy_module("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = _numpy_module("numpy._core.numeric", "numpy.core.numeric")
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    for name in ("tuple", "list", "dict", "int", "float", "complex", "bool"):
        allowed[("builtins", name)] = getattr(builtins, name)
    allowed[("__builtin__", "tuple")] = tuple  # Python 2 names
    allowed[("__builtin__", "list")] = list
    allowed[("__builtin__", "dict")] = dict
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only numpy arrays, tuples, lists, dicts and plain numbers.

    ``find_class`` answers from a fixed table (numpy's ``_reconstruct``, ``scalar``,
    ``_frombuffer``, ``ndarray``, ``dtype``; builtins ``tuple``, ``list``, ``dict``, ``int``,
    ``float``, ``complex``, ``bool``; latin-1 ``_codecs.encode`` for protocol-2 bytes) and raises
    InputError "refusing to unpickle <module.name>" for anything else, without importing it.
    """

    def __init__(self, file, *, path=None):
        super().__init__(file)
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise InputError(f"refusing to unpickle {module}.{name}", self._path)
        return obj

    def persistent_load(self, pid):
        raise InputError("refusing to unpickle a persistent id", self._path)


def _load(path) -> object:
    path = Path(os.fspath(path))
    if not path.is_file():
        raise InputError("file not found", path)
    with open(path, "rb") as fh:
        try:
            return RestrictedUnpickler(fh, path=path).load()
        except InputError:
            raise
        except Exception as exc:  # truncated or corrupt stream
            raise InputError(f"cannot read pickle: {type(exc).__name__}: {exc}", path) from exc


def _numeric(array, what: str, path) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        kind = type(array).__name__ if not isinstance(array, np.ndarray) else f"array of {array.dtype}"
        raise InputError(f"{what}: got a {kind}, expected a numeric numpy array", path)
    return array


def read_cryodrgn_poses(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a cryoDRGN pose pickle.

    Returns
    -------
    rotations : np.ndarray
        ``(N, 3, 3)``, RELION's matrices ``A`` (see the module docstring).
    shifts_frac : np.ndarray or None
        ``(N, 2)``, RELION's origin ``(x, y)`` as a fraction of the box; ``None`` for a
        rotation-only file.

    Raises
    ------
    InputError
        Missing or corrupt file, a foreign object in the pickle, or arrays of the wrong shape.
    """
    obj = _load(path)
    if isinstance(obj, (tuple, list)):
        if len(obj) not in (1, 2):
            raise InputError(f"pose pickle holds {len(obj)} items, expected (rotations, translations)", path)
        rot = obj[0]
        trans = obj[1] if len(obj) == 2 else None
    else:
        rot, trans = obj, None
    rot = _numeric(rot, "rotations", path)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise InputError(f"rotations have shape {rot.shape}, expected (N, 3, 3)", path)
    if trans is not None:
        trans = _numeric(trans, "translations", path)
        if trans.shape != (rot.shape[0], 2):
            raise InputError(f"translations have shape {trans.shape}, expected ({rot.shape[0]}, 2)", path)
    return rot, trans


def read_cryodrgn_ctf(path) -> np.ndarray:
    """Read a cryoDRGN CTF pickle: ``(N, 9)`` in the column order of :data:`CTF_PKL_COLUMNS`."""
    params = _numeric(_load(path), "CTF parameters", path)
    if params.ndim != 2 or params.shape[1] != 9:
        raise InputError(f"CTF parameters have shape {params.shape}, expected (N, 9)", path)
    return params


def _portable_pickle(obj) -> bytes:
    """Pickle protocol 3 with numpy's globals under their ``numpy.core`` names (numpy 1 and 2 read them)."""
    raw = pickle.dumps(obj, protocol=3)
    rename = {"numpy._core.multiarray": "numpy.core.multiarray", "numpy._core.numeric": "numpy.core.numeric"}
    out = io.BytesIO()
    last = 0
    for op, arg, pos in pickletools.genops(raw):
        if op.name != "GLOBAL":
            continue
        module, name = arg.split(" ", 1)
        end = raw.index(b"\n", raw.index(b"\n", pos + 1) + 1) + 1  # 'c' module '\n' name '\n'
        out.write(raw[last:pos])
        out.write(b"c" + f"{rename.get(module, module)}\n{name}\n".encode("ascii"))
        last = end
    out.write(raw[last:])
    return out.getvalue()


def _write_pickle(path, obj) -> Path:
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(_portable_pickle(obj))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _to_numpy(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def write_cryodrgn_poses(path, rotations, shifts_frac=None) -> Path:
    """Write a cryoDRGN pose pickle ``(rot, trans)`` (or ``rot`` alone when no shifts).

    This writes a pickle because cryoDRGN reads nothing else (docs/conventions.md otherwise says
    "No pickle is written"): plain float32 numpy arrays in a tuple, protocol 3, atomically.

    Parameters
    ----------
    path : str or Path
        Output ``.pkl``.
    rotations : array-like
        ``(N, 3, 3)`` RELION matrices ``A``.
    shifts_frac : array-like, optional
        ``(N, 2)`` RELION origins as a fraction of the box (``origin_px / D``).
    """
    rot = _to_numpy(rotations, np.float32)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise InputError(f"rotations have shape {rot.shape}, expected (N, 3, 3)", path)
    if shifts_frac is None:
        return _write_pickle(path, rot)
    trans = _to_numpy(shifts_frac, np.float32)
    if trans.shape != (rot.shape[0], 2):
        raise InputError(f"shifts have shape {trans.shape}, expected ({rot.shape[0]}, 2)", path)
    return _write_pickle(path, (rot, trans))


def write_cryodrgn_ctf(path, params) -> Path:
    """Write a cryoDRGN CTF pickle: float32 ``(N, 9)`` in the order of :data:`CTF_PKL_COLUMNS`.

    A pickle because cryoDRGN reads nothing else (the exception to "No pickle is written").
    """
    array = _to_numpy(params, np.float32)
    if array.ndim != 2 or array.shape[1] != 9:
        raise InputError(f"CTF parameters have shape {array.shape}, expected (N, 9)", path)
    return _write_pickle(path, array)


# --------------------------------------------------------------------------------------------
# conversions to and from particle tables


def cryodrgn_poses_to_table(rotations, shifts_frac=None, *, box_size: int, pixel_size_A: float) -> pd.DataFrame:
    """Particle-table pose columns from cryoDRGN poses.

    Returns ``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi`` (degrees, RELION's decomposition
    of ``A``) and, when ``shifts_frac`` is given, ``rlnOriginXAngst = shift_x * box_size *
    pixel_size_A`` (same for y).
    """
    rot = torch.from_numpy(_to_numpy(rotations, np.float64))
    euler = matrix_to_relion_euler(rot).numpy()
    table = pd.DataFrame({"rlnAngleRot": euler[:, 0], "rlnAngleTilt": euler[:, 1], "rlnAnglePsi": euler[:, 2]})
    if shifts_frac is not None:
        trans = _to_numpy(shifts_frac, np.float64)
        table["rlnOriginXAngst"] = trans[:, 0] * box_size * pixel_size_A
        table["rlnOriginYAngst"] = trans[:, 1] * box_size * pixel_size_A
    return table


def _box_size(table: pd.DataFrame, box_size, what: str) -> np.ndarray:
    if box_size is not None:
        return np.full(len(table), int(box_size), dtype=np.int64)
    if "rlnImageSize" in table.columns:
        return table["rlnImageSize"].to_numpy(np.int64)
    raise InputError(
        f"no box size for {what}: the table has no rlnImageSize; give box_size",
        table.attrs.get("cryolab_source"),
    )


def table_to_cryodrgn_poses(table: pd.DataFrame, *, box_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cryoDRGN ``(rot (N, 3, 3), trans (N, 2))`` float32 from a particle table.

    ``trans = (rlnOriginXAngst, rlnOriginYAngst) / rlnImagePixelSize / D`` with ``D`` the box
    (``box_size`` or ``rlnImageSize``).
    """
    from cryolab.io.tables import poses_from_table

    from cryolab.io.star import require_columns

    rot, shifts_A = poses_from_table(table)
    require_columns(table, ["rlnImagePixelSize"], "poses")
    px = table["rlnImagePixelSize"].to_numpy(np.float64)
    D = _box_size(table, box_size, "poses").astype(np.float64)
    trans = shifts_A.double().numpy() / (px * D)[:, None]
    return rot.numpy().astype(np.float32), trans.astype(np.float32)


def cryodrgn_ctf_to_table(params) -> pd.DataFrame:
    """Particle-table CTF columns (and ``rlnImageSize``, ``rlnImagePixelSize``) from a ``(N, 9)`` array."""
    array = _to_numpy(params, np.float64)
    table = pd.DataFrame({column: array[:, i] for i, (_, column) in enumerate(CTF_PKL_COLUMNS)})
    table["rlnImageSize"] = np.rint(array[:, 0]).astype(np.int64)
    return table


def table_to_cryodrgn_ctf(table: pd.DataFrame, *, box_size: int | None = None) -> np.ndarray:
    """cryoDRGN ``(N, 9)`` float32 CTF parameters from a particle table (phase shift 0 where absent)."""
    from cryolab.io.star import require_columns

    needed = [c for _, c in CTF_PKL_COLUMNS[1:] if c != "rlnPhaseShift"]
    require_columns(table, needed, "CTF")
    out = np.zeros((len(table), 9), dtype=np.float64)
    out[:, 0] = _box_size(table, box_size, "CTF")
    for i, (_, column) in enumerate(CTF_PKL_COLUMNS[1:], start=1):
        if column in table.columns:
            out[:, i] = table[column].to_numpy(np.float64)
    return out.astype(np.float32)
