"""An output folder that appears whole or not at all.

Files are written into a hidden staging folder beside the target; on success each is moved into
the output folder with an atomic rename, and ``run.json`` records the arguments, the cryolab
version and the time. On any error the staging folder is removed, leaving no partial output.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


class OutputFolder:
    """Context manager staging a command's outputs; ``out.path("name.mrc")`` gives where to write."""

    def __init__(self, outdir: str | os.PathLike, *, command: str, args=None):
        self.outdir = Path(outdir)
        self.command = command
        self.arguments = {k: _jsonable(v) for k, v in vars(args).items() if not k.startswith("_")} if args is not None else {}
        self.staging: Path | None = None
        self.started = None

    def __enter__(self) -> "OutputFolder":
        self.outdir.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.outdir.name}.staging-", dir=self.outdir.parent))
        self.started = _dt.datetime.now(_dt.timezone.utc)
        return self

    def path(self, name: str) -> Path:
        """Where to write output file ``name`` (relative to the output folder; subfolders allowed)."""
        p = self.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def _write_run_json(self) -> None:
        from cryolab import __version__

        record = {
            "command": f"cryolab {self.command}",
            "argv": sys.argv[1:],
            "arguments": self.arguments,
            "cryolab_version": __version__,
            "started": self.started.isoformat(),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        }
        self.path("run.json").write_text(json.dumps(record, indent=2) + "\n")

    def _commit(self) -> None:
        self._write_run_json()
        self.outdir.mkdir(parents=True, exist_ok=True)
        for src in sorted(self.staging.rglob("*")):
            if src.is_dir():
                continue
            dst = self.outdir / src.relative_to(self.staging)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)  # atomic on one filesystem

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
        return False
