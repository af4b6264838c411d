"""Execute every lab notebook (notebooks/*.py, `# %%` cells) end to end; each ends in assertions."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(notebook, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", CRYOLAB_PROGRESS="0", CRYOLAB_NOTEBOOK_OUT=str(tmp_path))
    result = subprocess.run([sys.executable, str(notebook)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{notebook.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
