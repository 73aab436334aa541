"""Shared fixtures: paths to the Blender ground truth (tests/data/blender-3diebench) and small meshes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SSL_EQ_FIXTURES", REPO / "tests" / "data")) / "blender-3diebench"


@pytest.fixture(scope="session")
def blender_fixtures() -> Path:
    if not (FIXTURES / "mug.obj").is_file():
        raise FileNotFoundError(f"Blender fixtures not found at {FIXTURES} (set SSL_EQ_FIXTURES)")
    return FIXTURES


@pytest.fixture(scope="session")
def mug_mesh(blender_fixtures):
    from ssl_eq.renderers.sources.meshfiles import load_mesh_file
    mesh = load_mesh_file(blender_fixtures / "mug.obj")
    mesh.face_colors[:] = 0.8
    return mesh


@pytest.fixture(scope="session")
def fixture_latents(blender_fixtures) -> np.ndarray:
    return np.stack([np.load(blender_fixtures / f"latent_{k}.npy") for k in range(8)])
