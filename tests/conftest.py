"""Shared fixtures; the Hypothesis profiles."""

import os

import pytest
import torch
from hypothesis import settings

# CI runs a fixed sequence of examples (HYPOTHESIS_PROFILE=ci: the same draws on every run, so a
# submission is judged on its code, not on its luck); locally the draws are random, so each run
# explores new cases.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one torch thread is faster (and far faster on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
