"""Shared fixtures: one local Ray for the whole session, and a tiny synthetic data set prepared once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray (4 logical CPUs on this 2-core box: 2 Train workers plus Ray Data), shut down at the end."""
    import ray

    os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(tmp_path_factory.mktemp("ray-auth") / "auth_token"))
    ray.init(num_cpus=4, include_dashboard=True, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def torch_one_thread():
    """One intra-op thread for tiny CPU models: on the shared 2-core box, two OpenMP threads mostly spin-wait
    for each other (a resnet-10 step measured 20x slower). Restores the previous setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
