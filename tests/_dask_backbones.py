"""Backbone factories for the Dask tests; a module of its own so that worker processes
import it by name (they get the test process's ``sys.path``)."""

import os
import time

import torch
from torch import nn

N_FEATURES = 8


class SlowTiny(nn.Module):
    """A seeded conv net (identical weights in every process) that can sleep per batch."""

    def __init__(self, delay=0.0):
        super().__init__()
        self.delay = delay
        self.num_features = N_FEATURES
        self.conv = nn.Conv2d(3, N_FEATURES, 3, stride=2)

    def forward(self, x):
        if self.delay:
            time.sleep(self.delay)
        return self.conv(x).mean(dim=(2, 3))


def tiny_factory(log=None, delay=0.0):
    """Build ``SlowTiny``; with ``log``, append this process's id to that file (one line
    per model built, to count loads across processes)."""
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    torch.manual_seed(0)
    return SlowTiny(delay).eval()


def model_loads():
    """This process's count of embedders built, by configuration (peal_sk.distributed)."""
    from peal_sk.distributed._dask import _LOADS

    return dict(_LOADS)
