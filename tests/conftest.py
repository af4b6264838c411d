"""Shared test fixtures: the shared data folder and quiet progress bars."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("CRYOLAB_PROGRESS", "0")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (real files from public projects, see its PROVENANCE.md)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA
