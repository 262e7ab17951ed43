"""LEAF Shakespeare (Caldas et al. 2018): next-character sequences, read by the torch problem.

The reader is ``hpcasync.problems.nn.data.shakespeare`` (the sequences become index tensors for
the ``char-lstm`` model); this entry makes ``data.name = "shakespeare"`` a known name and tells
any other problem, in one line, that it needs ``problem.name = "torch"``.
"""

from __future__ import annotations

from typing import Any

from hpcasync.data.dataset import Dataset, register_dataset
from hpcasync.errors import UserError


@register_dataset("shakespeare", kind="classification", needs_dir=True)
def _shakespeare(cfg: Any, seed: int) -> Dataset:
    raise UserError("config field data.name 'shakespeare': character sequences are read by the torch problem "
                    "only; use problem.name = 'torch' with problem.model = 'char-lstm'")
