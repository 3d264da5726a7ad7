import os

import pytest
import torch

# Two cores: keep each test process to one intra-op thread so pytest-xdist's workers don't fight.
torch.set_num_threads(1)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
