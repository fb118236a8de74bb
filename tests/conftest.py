"""Test-wide settings: one torch thread (tiny nets on a shared 2-core machine run 10-100x
faster single-threaded)."""

import torch

torch.set_num_threads(1)
