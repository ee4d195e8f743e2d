"""Shared test settings: CPU only, a fixed thread count so float reductions are repeatable."""

import torch

torch.set_num_threads(2)
