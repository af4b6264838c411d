"""MRC maps and image stacks: whole-file reading, atomic writing and a lazy, memory-mapped stack.

Conventions (docs/conventions.md, "Files" and "Arrays"): arrays are C order as mrcfile returns
them — images ``(y, x)``, stacks ``(n, y, x)``, volumes ``(z, y, x)`` — and always come back as
float32. The voxel size in the header is the pixel size in Å; a header voxel size of 0 means
"unknown" and is returned as ``None``, so the caller must supply one (``--pixel-size``). The
header origin (Å, ``(x, y, z)``) is returned when it is not zero and written back when given.

Readable modes: 0 (int8), 1 (int16), 2 (float32), 6 (uint16), 12 (float16). Files are written in
mode 2 only, atomically (a temporary name in the same folder, then ``os.replace``). Old headers
(no ``MAP`` id string, zero machine stamp — common in RELION 2 and cryoDRGN stacks) are read in
mrcfile's permissive mode; a file whose data block is shorter than its header promises is an
:class:`~cryolab.errors.InputError`.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import mrcfile
from mrcfile.utils import data_shape_from_header
import numpy as np
import pandas as pd

from cryolab.errors import InputError

__all__ = ["MRCData", "read_mrc", "write_mrc", "ImageStack", "open_stack"]

#: MRC modes cryolab reads, with mrcfile's numpy dtype for each.
READABLE_MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}


@dataclass(frozen=True)
class MRCData:
    """Contents of an MRC file.

    Attributes
    ----------
    data : np.ndarray
        float32, ``(y, x)`` for an image, ``(z, y, x)`` for a volume or ``(n, y, x)`` for a stack.
    pixel_size_A : float or None
        Voxel size in Å from the header (x spacing); ``None`` where the header says 0.
    origin_A : tuple of float or None
        Header origin ``(x, y, z)`` in Å; ``None`` where it is zero.
    """

    data: np.ndarray
    pixel_size_A: float | None
    origin_A: tuple[float, float, float] | None


@dataclass(frozen=True)
class _Header:
    """What cryolab needs from an MRC header, plus whether mrcfile had to be permissive."""

    shape: tuple[int, ...]  # (ny, nx) or (nz, ny, nx), as mrcfile's data has it
    mode: int
    pixel_size_A: float | None
    origin_A: tuple[float, float, float] | None
    permissive: bool

    @property
    def n_images(self) -> int:
        return 1 if len(self.shape) == 2 else self.shape[0]

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.shape[-2], self.shape[-1]


def _path(path) -> Path:
    return Path(os.fspath(path))


def _pixel_size_from(mrc, path: Path) -> float | None:
    vs = mrc.voxel_size
    x, y = float(vs.x), float(vs.y)
    if x == 0 and y == 0:
        return None
    if not (np.isfinite(x) and np.isfinite(y)) or x <= 0 or y <= 0:
        raise InputError(f"invalid voxel size in MRC header ({x}, {y})", path)
    if abs(x - y) > 1e-3 * max(x, y):
        raise InputError(f"non-square pixels in MRC header (x {x:g} Å, y {y:g} Å) are not supported", path)
    return x


def _origin_from(mrc) -> tuple[float, float, float] | None:
    o = mrc.header.origin
    origin = (float(o.x), float(o.y), float(o.z))
    return None if all(v == 0 for v in origin) else origin


def _open(path: Path, opener, **kwargs):
    """Open with mrcfile, strictly first and permissively for old or odd headers.

    Returns ``(mrc, permissive)``. A file that is missing, truncated or not MRC at all raises
    InputError naming the file and the problem.
    """
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        return opener(path, mode="r", **kwargs), False
    except ValueError:
        pass  # invalid or old header: try permissively below
    except OSError as exc:
        raise InputError(f"cannot read MRC file: {exc}", path) from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = opener(path, mode="r", permissive=True, **kwargs)
        except (ValueError, OSError) as exc:
            raise InputError(f"truncated or corrupt MRC file: {exc}", path) from exc
    problems = "; ".join(dict.fromkeys(str(w.message) for w in caught))
    header = mrc.header
    mode = int(header.mode)
    if mode not in READABLE_MODES:
        mrc.close()
        raise InputError(f"unsupported or corrupt MRC header (mode {mode}; {problems})", path)
    if not kwargs.get("header_only") and mrc.data is None:
        mrc.close()
        raise InputError(f"truncated or corrupt MRC file ({problems})", path)
    return mrc, True


def _header_of(mrc, path: Path, permissive: bool) -> _Header:
    h = mrc.header
    mode = int(h.mode)
    if mode not in READABLE_MODES:
        raise InputError(
            f"unsupported MRC mode {mode} (cryolab reads modes {sorted(READABLE_MODES)})", path
        )
    nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
    if min(nx, ny, nz) < 1:
        raise InputError(f"corrupt MRC header: dimensions ({nx}, {ny}, {nz})", path)
    shape = tuple(int(v) for v in data_shape_from_header(h))  # as mrcfile's data
    if len(shape) == 4:
        raise InputError(f"volume stacks (ispg {int(h.ispg)}) are not supported", path)
    expected = 1024 + int(h.nsymbt) + nx * ny * nz * np.dtype(READABLE_MODES[mode]).itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise InputError(
            f"truncated MRC file: header promises {nx}x{ny}x{nz} mode-{mode} data "
            f"({expected} bytes) but the file has {actual} bytes",
            path,
        )
    return _Header(shape, mode, _pixel_size_from(mrc, path), _origin_from(mrc), permissive)


def _read_header(path) -> _Header:
    path = _path(path)
    mrc, permissive = _open(path, mrcfile.open, header_only=True)
    with mrc:
        return _header_of(mrc, path, permissive)


def read_mrc(path) -> MRCData:
    """Read a whole MRC/MRCS file into memory as float32.

    Parameters
    ----------
    path : str or Path
        An MRC map, image or image stack (modes 0, 1, 2, 6, 12).

    Returns
    -------
    MRCData
        ``data`` float32 in C order (``(y, x)``, ``(z, y, x)`` or ``(n, y, x)``),
        ``pixel_size_A`` (``None`` where the header voxel size is 0) and ``origin_A``.

    Raises
    ------
    InputError
        Missing, truncated or corrupt file; unsupported mode; non-square pixels.
    """
    path = _path(path)
    mrc, permissive = _open(path, mrcfile.open)
    with mrc:
        header = _header_of(mrc, path, permissive)
        data = np.array(mrc.data, dtype=np.float32, copy=True)
    return MRCData(data=data, pixel_size_A=header.pixel_size_A, origin_A=header.origin_A)


def write_mrc(path, data, pixel_size_A: float, *, origin_A=None) -> Path:
    """Write ``data`` as a mode-2 (float32) MRC file, atomically.

    Parameters
    ----------
    path : str or Path
        Output file. A ``.mrcs`` name with 3D data is written as an image stack (ispg 0).
    data : array-like
        ``(y, x)``, ``(z, y, x)`` or ``(n, y, x)``; numpy array or torch tensor.
    pixel_size_A : float
        Voxel size in Å, written to the header (all three axes).
    origin_A : sequence of 3 floats, optional
        Header origin ``(x, y, z)`` in Å; 0 when not given.

    Returns
    -------
    Path
        The written file. The data go to a temporary name in the same folder first and are
        renamed into place, so a reader never sees a half-written file.
    """
    path = _path(path)
    if hasattr(data, "detach"):  # torch tensor
        data = data.detach().cpu().numpy()
    array = np.ascontiguousarray(np.asarray(data), dtype=np.float32)
    if array.ndim not in (2, 3):
        raise InputError(f"MRC data must be 2D or 3D, got shape {array.shape}", path)
    if pixel_size_A is None or not np.isfinite(pixel_size_A) or pixel_size_A <= 0:
        raise InputError(f"pixel size must be a positive number of Å, got {pixel_size_A}", path)
    if origin_A is not None and len(origin_A) != 3:
        raise InputError(f"origin must be (x, y, z) in Å, got {origin_A}", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(array)
            if path.suffix.lower() == ".mrcs" and array.ndim == 3:
                mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size_A)
            if origin_A is not None:
                mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = (float(v) for v in origin_A)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class ImageStack:
    """A lazy stack of 2D images over one or many MRC files, read through memory maps.

    Only the requested images are read from disk; nothing is loaded when the stack is created
    except the file headers. Images come back as float32 numpy arrays ``(..., y, x)``.

    Build one with :func:`open_stack` (all images of some files, in order) or
    :meth:`ImageStack.from_references` (one ``(file, frame)`` pair per image, as in a STAR or
    cryoSPARC particle table).

    Parameters
    ----------
    files : sequence of str or Path
        The distinct MRC files.
    file_index, frame_index : array-like of int
        For each image, its file (index into ``files``) and its 0-based number in that file.
    pixel_size_A : float, optional
        Overrides the header voxel size.
    source : str or Path, optional
        The metadata file the references came from, named in error messages.
    max_open_files : int
        How many memory maps to keep open at once.

    Attributes
    ----------
    shape : tuple
        ``(n_images, ny, nx)``.
    pixel_size_A : float or None
        Pixel size in Å: the one given, else the first file's header (``None`` where it is 0).
    files : tuple of Path
        The distinct files, in order of first use.

    Notes
    -----
    Indexing follows numpy: an int gives ``(ny, nx)``; a slice, an integer array or a boolean
    mask gives ``(k, ny, nx)``. At most ``max_open_files`` memory maps are kept open (least
    recently used are closed). The object pickles without its open maps, so it can be handed to
    worker processes.
    """

    def __init__(
        self,
        files: Sequence,
        file_index,
        frame_index,
        *,
        pixel_size_A: float | None = None,
        source=None,
        max_open_files: int = 64,
    ):
        self._files = tuple(_path(f) for f in files)
        self._file_index = np.asarray(file_index, dtype=np.int64).reshape(-1)
        self._frame_index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
        self._source = None if source is None else _path(source)
        if self._file_index.shape != self._frame_index.shape:
            raise ValueError("file_index and frame_index must have the same length")
        if len(self._files) == 0 and len(self._file_index) > 0:
            raise ValueError("images refer to files, but no files were given")
        if len(self._file_index) and (self._file_index.min() < 0 or self._file_index.max() >= len(self._files)):
            raise ValueError("file_index out of range")
        self._headers = tuple(_read_header(f) for f in self._files)
        self._check(pixel_size_A)
        self._max_open = max(1, int(max_open_files))
        self._open: OrderedDict[int, object] = OrderedDict()

    # construction helpers ------------------------------------------------------------------
    @classmethod
    def from_references(cls, paths, frames, *, pixel_size_A=None, source=None, max_open_files=64):
        """One image per ``(paths[i], frames[i])``; ``frames`` are 0-based image numbers in each file."""
        codes, unique = pd.factorize(np.asarray([os.fspath(p) for p in paths], dtype=object))
        return cls(
            list(unique),  # in order of first use
            codes,
            frames,
            pixel_size_A=pixel_size_A,
            source=source,
            max_open_files=max_open_files,
        )

    def _check(self, pixel_size_A):
        if self._headers:
            ny0, nx0 = self._headers[0].image_shape
            for f, h in zip(self._files, self._headers):
                ny, nx = h.image_shape
                if (ny, nx) != (ny0, nx0):
                    raise InputError(
                        f"images are {nx}x{ny} but those of {self._files[0]} are {nx0}x{ny0}", f
                    )
        counts = np.array([h.n_images for h in self._headers], dtype=np.int64)
        if len(self._frame_index):
            beyond = (self._frame_index < 0) | (self._frame_index >= counts[self._file_index])
            if beyond.any():
                i = int(np.flatnonzero(beyond)[0])
                f = self._file_index[i]
                raise InputError(
                    f"image {self._frame_index[i] + 1} (1-based) of {self._files[f]} requested "
                    f"but that stack has {counts[f]} images",
                    self._source or self._files[f],
                )
        if pixel_size_A is not None:
            if not np.isfinite(pixel_size_A) or pixel_size_A <= 0:
                raise InputError(f"pixel size must be a positive number of Å, got {pixel_size_A}", self._source)
            self._pixel_size_A = float(pixel_size_A)
        else:
            sizes = [(f, h.pixel_size_A) for f, h in zip(self._files, self._headers) if h.pixel_size_A is not None]
            for f, px in sizes[1:]:
                if abs(px - sizes[0][1]) > 1e-4 * sizes[0][1]:
                    raise InputError(
                        f"header pixel size {px:g} Å differs from {sizes[0][1]:g} Å in {sizes[0][0]}; "
                        "give the pixel size explicitly",
                        f,
                    )
            self._pixel_size_A = sizes[0][1] if sizes else None

    # sequence protocol ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        ny, nx = self._headers[0].image_shape if self._headers else (0, 0)
        return (len(self._file_index), ny, nx)

    @property
    def dtype(self):
        return np.dtype(np.float32)

    @property
    def pixel_size_A(self) -> float | None:
        return self._pixel_size_A

    @property
    def files(self) -> tuple[Path, ...]:
        return self._files

    @property
    def file_index(self) -> np.ndarray:
        """Index into :attr:`files` of each image (read-only view)."""
        v = self._file_index.view()
        v.flags.writeable = False
        return v

    @property
    def frame_index(self) -> np.ndarray:
        """0-based image number of each image inside its file (read-only view)."""
        v = self._frame_index.view()
        v.flags.writeable = False
        return v

    def __len__(self) -> int:
        return len(self._file_index)

    def __repr__(self) -> str:
        n, ny, nx = self.shape
        return (
            f"ImageStack({n} images of {nx}x{ny} from {len(self._files)} file(s), "
            f"pixel_size_A={self._pixel_size_A})"
        )

    def _positions(self, key) -> tuple[np.ndarray, bool]:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if i < -n or i >= n:
                raise IndexError(f"image index {i} out of range for a stack of {n} images")
            return np.array([i % n]), True
        if isinstance(key, slice):
            return np.arange(n)[key], False
        if hasattr(key, "detach"):
            key = key.detach().cpu().numpy()
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask of shape {idx.shape} for a stack of {n} images")
            return np.flatnonzero(idx), False
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64), False
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"image indices must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64).reshape(-1)
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"image index out of range for a stack of {n} images")
        return idx % n, False

    def __getitem__(self, key) -> np.ndarray:
        pos, scalar = self._positions(key)
        out = self._read(pos)
        return out[0] if scalar else out

    def _read(self, pos: np.ndarray) -> np.ndarray:
        _, ny, nx = self.shape
        out = np.empty((len(pos), ny, nx), dtype=np.float32)
        if len(pos) == 0:
            return out
        fids = self._file_index[pos]
        frames = self._frame_index[pos]
        for fid in np.unique(fids):
            sel = np.flatnonzero(fids == fid)
            data = self._mmap(int(fid)).data
            if data.ndim == 2:
                out[sel] = data  # a single-image file: every frame index is 0
            else:
                out[sel] = data[frames[sel]]  # fancy indexing reads only these frames
        return out

    def _mmap(self, fid: int):
        mrc = self._open.get(fid)
        if mrc is not None:
            self._open.move_to_end(fid)
            return mrc
        path = self._files[fid]
        if self._headers[fid].permissive:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mrc = mrcfile.mmap(path, mode="r", permissive=True)
        else:
            try:
                mrc = mrcfile.mmap(path, mode="r")
            except (ValueError, OSError) as exc:
                raise InputError(f"cannot memory-map MRC file: {exc}", path) from exc
        if mrc.data is None:
            mrc.close()
            raise InputError("truncated or corrupt MRC file", path)
        self._open[fid] = mrc
        if len(self._open) > self._max_open:
            _, old = self._open.popitem(last=False)
            old.close()
        return mrc

    def iter_chunks(self, batch_size: int, *, indices=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(positions, images)`` in order, ``batch_size`` images at a time.

        ``positions`` (int64) are the indices into this stack of the images in the chunk, so
        they line up with the rows of the particle table; ``images`` is ``(k, ny, nx)`` float32.
        ``indices`` restricts the iteration to a subset (in the given order).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pos = np.arange(len(self)) if indices is None else self._positions(indices)[0]
        for start in range(0, len(pos), batch_size):
            chunk = pos[start : start + batch_size]
            yield chunk, self._read(chunk)

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, images in self.iter_chunks(256):
            yield from images

    def subset(self, indices) -> ImageStack:
        """A new stack over the images at ``indices`` (no data read; headers are reused)."""
        pos, _ = self._positions(indices)
        new = object.__new__(ImageStack)
        new._files = self._files
        new._headers = self._headers
        new._file_index = self._file_index[pos]
        new._frame_index = self._frame_index[pos]
        new._source = self._source
        new._pixel_size_A = self._pixel_size_A
        new._max_open = self._max_open
        new._open = OrderedDict()
        return new

    # resources -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the open memory maps (the stack stays usable and reopens them on demand)."""
        while self._open:
            _, mrc = self._open.popitem()
            mrc.close()

    def __enter__(self) -> ImageStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state


def open_stack(paths, *, pixel_size_A: float | None = None) -> ImageStack:
    """A lazy :class:`ImageStack` over all images of one or more MRC files, in order.

    Parameters
    ----------
    paths : str, Path or sequence of them
        ``.mrcs`` stacks (or ``.mrc`` files: a 3D file is taken as ``nz`` images, a 2D file as one).
    pixel_size_A : float, optional
        Overrides the header voxel size (needed where the header says 0).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [_path(p) for p in paths]
    headers = [_read_header(p) for p in paths]
    counts = [h.n_images for h in headers]
    file_index = np.repeat(np.arange(len(paths)), counts)
    frame_index = np.concatenate([np.arange(c) for c in counts]) if counts else np.zeros(0, np.int64)
    return ImageStack(paths, file_index, frame_index, pixel_size_A=pixel_size_A)
