"""RELION STAR particle files: one pandas table per file, optics merged onto particle rows.

Reading (via starfile) accepts RELION 3.0 (one loop, per-particle optics, ``rlnOriginX/Y`` in
pixels), 3.1 and 5 (``data_optics`` + ``data_particles``, ``rlnOriginX/YAngst`` in Å). The table
that comes back always has RELION column names without the leading underscore, one row per
particle, the optics-group columns copied onto every row, ``rlnImagePixelSize`` (Å) on every row
and shifts as ``rlnOriginXAngst``/``rlnOriginYAngst`` (docs/conventions.md, "Shifts"): a 3.0
pixel shift is multiplied by the pixel size on reading.

Writing produces RELION 3.1 format (``# version 30001``, ``data_optics`` then
``data_particles``), splitting the optics columns back out by ``rlnOpticsGroup``. Columns
cryolab does not know survive a read/write round trip; floats are written with the shortest
representation that reads back exactly. Writes are atomic.

Table metadata (``table.attrs``): ``cryolab_source`` (the file read), ``cryolab_format``
(``"relion3.0"``, ``"relion3.1"``, ``"relion5"``, ``"cryosparc"``, ``"cryodrgn"``) and
``cryolab_optics_columns`` (the columns that came from ``data_optics``, written back there).
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryolab.errors import InputError

__all__ = [
    "OPTICS_COLUMNS",
    "read_star",
    "write_star",
    "parse_image_names",
    "format_image_names",
    "require_columns",
]

#: RELION labels that belong in ``data_optics`` (3.1 and later). Columns listed in
#: ``table.attrs["cryolab_optics_columns"]`` are written there too.
OPTICS_COLUMNS = (
    "rlnOpticsGroup",
    "rlnOpticsGroupName",
    "rlnMtfFileName",
    "rlnMicrographOriginalPixelSize",
    "rlnMicrographPixelSize",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
    "rlnCtfDataAreCtfPremultiplied",
    "rlnCtfDataArePhaseFlipped",
    "rlnBeamTiltX",
    "rlnBeamTiltY",
    "rlnOddZernike",
    "rlnEvenZernike",
    "rlnMagMat00",
    "rlnMagMat01",
    "rlnMagMat10",
    "rlnMagMat11",
)

_STAR_VERSION = re.compile(r"^#\s*version\s+(\d+)")
_NEEDS_QUOTES = re.compile(r"^$|\s|^[#_;'\"]|^(data_|loop_|save_|global_|stop_)", re.IGNORECASE)


def require_columns(table: pd.DataFrame, columns, what: str) -> None:
    """Raise InputError naming every column of ``columns`` missing from ``table``.

    ``what`` says what the columns are needed for ("poses", "CTF", "images"); the error names
    the file the table was read from (``table.attrs["cryolab_source"]``).
    """
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)} needed for {what}",
            table.attrs.get("cryolab_source"),
        )


def _star_version(path: Path) -> int | None:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for _, line in zip(range(200), fh):
            m = _STAR_VERSION.match(line.strip())
            if m:
                return int(m.group(1))
    return None


def _read_blocks(path: Path) -> dict:
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises a variety of parser errors
        raise InputError(f"cannot parse STAR file: {type(exc).__name__}: {exc}", path) from exc
    if not isinstance(blocks, dict) or not blocks:
        raise InputError("no data blocks found in STAR file", path)
    return blocks


def _particle_block(blocks: dict, path: Path) -> pd.DataFrame:
    if isinstance(blocks.get("particles"), pd.DataFrame):
        return blocks["particles"]
    loops = [(name, b) for name, b in blocks.items() if isinstance(b, pd.DataFrame) and name != "optics"]
    if not loops:
        raise InputError("no particle table (loop_ block) in STAR file", path)
    for _, block in loops:
        if "rlnImageName" in block.columns:
            return block
    return loops[0][1]


def _merge_optics(particles: pd.DataFrame, optics: pd.DataFrame, path: Path) -> pd.DataFrame:
    if "rlnOpticsGroup" not in optics.columns:
        raise InputError("data_optics has no rlnOpticsGroup column", path)
    if optics["rlnOpticsGroup"].duplicated().any():
        raise InputError("data_optics defines an optics group twice", path)
    extra = [c for c in optics.columns if c not in particles.columns]
    if "rlnOpticsGroup" not in particles.columns:
        if len(optics) != 1:
            raise InputError(
                f"particles have no rlnOpticsGroup but data_optics defines {len(optics)} groups", path
            )
        merged = particles.copy()
        for c in extra:
            merged[c] = optics[c].iloc[0]
        merged["rlnOpticsGroup"] = optics["rlnOpticsGroup"].iloc[0]
        return merged
    unknown = sorted(set(particles["rlnOpticsGroup"]) - set(optics["rlnOpticsGroup"]))
    if unknown:
        raise InputError(
            f"optics group(s) {', '.join(map(str, unknown))} used by particles but not defined in data_optics",
            path,
        )
    merged = particles.merge(optics[["rlnOpticsGroup", *extra]], on="rlnOpticsGroup", how="left", sort=False)
    merged.index = particles.index
    return merged


def _check_pixel_size(value: float, path) -> float:
    if value is None or not np.isfinite(value) or value <= 0:
        raise InputError(f"pixel size must be a positive number of Å, got {value}", path)
    return float(value)


def _add_pixel_size(table: pd.DataFrame, pixel_size_A, path: Path) -> None:
    if pixel_size_A is not None:
        pixel_size_A = _check_pixel_size(pixel_size_A, path)
        if "rlnImagePixelSize" in table.columns:
            file_px = table["rlnImagePixelSize"].to_numpy(dtype=np.float64)
            if np.any(np.abs(file_px - pixel_size_A) > 1e-3 * pixel_size_A):
                warnings.warn(
                    f"{path}: given pixel size {pixel_size_A} Å replaces rlnImagePixelSize "
                    f"{np.unique(file_px)} from the file",
                    stacklevel=3,
                )
        table["rlnImagePixelSize"] = pixel_size_A
        return
    if "rlnImagePixelSize" in table.columns:
        px = table["rlnImagePixelSize"].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(px) & (px > 0)):
            raise InputError("rlnImagePixelSize has missing or non-positive values", path)
        return
    if "rlnDetectorPixelSize" in table.columns and "rlnMagnification" in table.columns:
        # RELION 3.0: detector pixel in µm and magnification; Å = µm * 1e4 / mag
        px = table["rlnDetectorPixelSize"].to_numpy(np.float64) * 1e4 / table["rlnMagnification"].to_numpy(np.float64)
        if not np.all(np.isfinite(px) & (px > 0)):
            raise InputError("rlnDetectorPixelSize / rlnMagnification give no valid pixel size", path)
        table["rlnImagePixelSize"] = px
        return
    raise InputError(
        "no pixel size: the file has neither rlnImagePixelSize nor rlnDetectorPixelSize and "
        "rlnMagnification; give one (pixel_size_A=, --pixel-size)",
        path,
    )


def _origins_to_angstrom(table: pd.DataFrame) -> None:
    """RELION 3.0 ``rlnOriginX/Y/Z`` (pixels) -> ``rlnOriginX/Y/ZAngst`` (Å); drop the pixel columns."""
    px = table["rlnImagePixelSize"].to_numpy(np.float64)
    for axis in "XYZ":
        old, new = f"rlnOrigin{axis}", f"rlnOrigin{axis}Angst"
        if old in table.columns:
            if new not in table.columns:
                position = table.columns.get_loc(old)
                table.insert(position, new, table[old].to_numpy(np.float64) * px)
            del table[old]


def read_star(path, *, pixel_size_A: float | None = None) -> pd.DataFrame:
    """Read a RELION 3.0, 3.1 or 5 particle STAR file into one table.

    Parameters
    ----------
    path : str or Path
        The STAR file.
    pixel_size_A : float, optional
        Pixel size in Å. Needed where the file has none (neither ``rlnImagePixelSize`` nor
        ``rlnDetectorPixelSize`` with ``rlnMagnification``); where it has one, the given value
        replaces it (with a warning if they differ).

    Returns
    -------
    pandas.DataFrame
        One row per particle, RELION column names (no leading underscore), optics columns
        merged onto every row, ``rlnImagePixelSize`` on every row, shifts in
        ``rlnOriginXAngst``/``rlnOriginYAngst`` (Å). ``rlnImageName`` is kept as written
        (``000001@path.mrcs``, 1-based); paths are resolved by :func:`cryolab.io.read_particles`.

    Raises
    ------
    InputError
        File missing or unparsable; no particle loop; optics groups undefined; no pixel size.
    """
    path = Path(os.fspath(path))
    blocks = _read_blocks(path)
    particles = _particle_block(blocks, path)
    table = particles.copy().reset_index(drop=True)
    optics = blocks.get("optics")
    version = _star_version(path)
    optics_columns: list[str] = []
    if isinstance(optics, pd.DataFrame):
        table = _merge_optics(table, optics.reset_index(drop=True), path)
        optics_columns = list(optics.columns)
    _add_pixel_size(table, pixel_size_A, path)
    _origins_to_angstrom(table)
    if optics_columns:
        fmt = "relion5" if version is not None and version >= 50000 else "relion3.1"
    else:
        fmt = "relion3.0"
    table.attrs = {
        "cryolab_source": str(path),
        "cryolab_format": fmt,
        "cryolab_optics_columns": optics_columns,
    }
    return table


def parse_image_names(names, *, source=None) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rlnImageName`` values ``000001@path.mrcs`` into 0-based frames and paths.

    A name without ``@`` refers to the single image (or first image) of that file.

    Returns
    -------
    frames : np.ndarray
        int64, 0-based image number in each file.
    paths : np.ndarray
        object array of path strings, as written.
    """
    s = pd.Series(np.asarray(names, dtype=object), dtype=object).astype(str)
    parts = s.str.split("@", n=1, expand=True)
    if parts.shape[1] == 1:
        parts[1] = None
    has_at = parts[1].notna()
    paths = np.where(has_at, parts[1], parts[0]).astype(object)
    numbers = pd.to_numeric(parts[0].where(has_at, "1"), errors="coerce")
    bad = numbers.isna() | (numbers < 1) | (numbers != np.floor(numbers)) | (pd.Series(paths) == "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"bad rlnImageName {s.iloc[i]!r} (expected 000001@path.mrcs, 1-based)", source)
    return numbers.to_numpy(dtype=np.int64) - 1, paths


def format_image_names(frames, paths) -> np.ndarray:
    """``rlnImageName`` strings ``000001@path`` from 0-based ``frames`` and ``paths``."""
    frames = np.asarray(frames, dtype=np.int64) + 1
    return np.array([f"{n:06d}@{p}" for n, p in zip(frames, paths)], dtype=object)


# --------------------------------------------------------------------------------------------
# writing


def _format_column(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(np.int64).astype(str)
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values):
        # floats: the shortest decimal that reads back exactly (float32: float32's shortest)
        return values.astype(str).astype(object).fillna("nan")
    text = values.astype(object).map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))

    def quote(v: str) -> str:
        if "\n" in v:
            raise InputError(f"cannot write a STAR value containing a newline: {v!r}")
        if not _NEEDS_QUOTES.search(v):
            return v
        return f'"{v}"' if '"' not in v else f"'{v}'"

    return text.map(quote)


def _loop_text(block: str, table: pd.DataFrame) -> str:
    lines = ["", "# version 30001", "", f"data_{block}", "", "loop_"]
    lines += [f"_{name} #{i}" for i, name in enumerate(table.columns, start=1)]
    if len(table):
        cols = [_format_column(table[c]) for c in table.columns]
        rows = cols[0].str.cat(cols[1:], sep=" ") if len(cols) > 1 else cols[0]
        lines += rows.tolist()
    return "\n".join(lines) + "\n\n"


def _split_optics(table: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    declared = set(table.attrs.get("cryolab_optics_columns", [])) | set(OPTICS_COLUMNS)
    optics_cols = [c for c in table.columns if c in declared and c != "rlnOpticsGroup"]
    has_group = "rlnOpticsGroup" in table.columns
    keys = (["rlnOpticsGroup"] if has_group else []) + optics_cols
    if keys:
        group_of_row = table.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    else:
        group_of_row = np.zeros(len(table), dtype=np.int64)
    n_groups = int(group_of_row.max()) + 1 if len(table) else 0
    first = np.unique(group_of_row, return_index=True)[1]
    optics = table.iloc[first][optics_cols].reset_index(drop=True)
    if has_group:
        old = table["rlnOpticsGroup"].to_numpy()[first]
        consistent = len(np.unique(table["rlnOpticsGroup"].to_numpy())) == n_groups
        if consistent:
            numbers = old.astype(np.int64)
        else:
            numbers = np.arange(1, n_groups + 1)
            warnings.warn(
                f"{path}: optics columns vary within rlnOpticsGroup; particles regrouped into "
                f"{n_groups} optics groups",
                stacklevel=3,
            )
    else:
        numbers = np.arange(1, n_groups + 1)
    optics.insert(0, "rlnOpticsGroup", numbers)
    if "rlnOpticsGroupName" not in optics.columns:
        optics.insert(1, "rlnOpticsGroupName", [f"opticsGroup{n}" for n in numbers])
    elif optics["rlnOpticsGroupName"].duplicated().any():  # regrouped: names must stay distinct
        optics["rlnOpticsGroupName"] = [f"opticsGroup{n}" for n in numbers]
    particle_cols = [c for c in table.columns if c not in optics_cols]
    particles = table[particle_cols].copy()
    particles["rlnOpticsGroup"] = numbers[group_of_row]
    if not has_group:
        particles = particles[[c for c in particle_cols if c != "rlnOpticsGroup"] + ["rlnOpticsGroup"]]
    return optics.sort_values("rlnOpticsGroup", kind="stable").reset_index(drop=True), particles.reset_index(drop=True)


def write_star(path, table: pd.DataFrame) -> Path:
    """Write a particle table as a RELION 3.1 STAR file (``# version 30001``), atomically.

    Optics columns (the RELION optics labels in :data:`OPTICS_COLUMNS` and any column listed in
    ``table.attrs["cryolab_optics_columns"]``) go to ``data_optics``, one row per optics group;
    every other column goes to ``data_particles``. Groups are the table's ``rlnOpticsGroup``
    where the optics columns are constant within each group; otherwise (or where there is no
    ``rlnOpticsGroup``) each distinct combination of optics values becomes a group, numbered
    from 1 in order of first appearance.

    Parameters
    ----------
    path : str or Path
        Output ``.star`` file.
    table : pandas.DataFrame
        RELION column names, without the leading underscore.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(os.fspath(path))
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"write_star needs a pandas DataFrame, got {type(table).__name__}")
    bad = [c for c in table.columns if not isinstance(c, str) or not c or re.search(r"\s", c)]
    if bad:
        raise InputError(f"column names must be non-empty strings without spaces: {bad}", path)
    optics, particles = _split_optics(table, path)
    text = _loop_text("optics", optics) + _loop_text("particles", particles)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
