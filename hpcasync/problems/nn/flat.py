"""Zero-copy flat parameters: a module's parameters as views into one flat vector.

The agent's x (a 1-D numpy array: the algorithm's state, an MPI window slot, whatever the engine
holds) *is* the model's storage. :meth:`FlatModule.bind` points every parameter's ``.data`` at
a view of ``torch.from_numpy(x)`` (no copy; rebinding only happens when a different array is
passed, checked by its address) and every ``.grad`` at a view of one flat gradient buffer, which
autograd then accumulates into in place. So a gradient step copies no parameters in or out:
there is no ``parameters_to_vector``/``vector_to_parameters`` on the hot path.

Parameter order is ``module.parameters()`` order (shared parameters once). Buffers (BatchNorm
running statistics) are not part of x; see ``problems/nn/evaluation.py`` for their policy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def torch_dtype(dtype: np.dtype | str) -> torch.dtype:
    return _TORCH_DTYPES[np.dtype(dtype)]


def address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


class FlatModule:
    """``module`` with parameters bound to views of a flat x and gradients to a flat g.

    ``dtype`` is the numpy dtype of x (float32 or float64); the module is converted to it.
    ``device`` other than cpu keeps the parameters in a device-resident flat buffer that
    :meth:`bind` fills from x (one host-to-device copy per gradient; the exchanges stay in
    host memory). ``staged=True`` takes that path on the CPU too (how the tests exercise it
    without a GPU).
    """

    def __init__(self, module: nn.Module, dtype: np.dtype | str = np.float32,
                 device: torch.device | str = "cpu", staged: bool | None = None) -> None:
        self.dtype = np.dtype(dtype)
        self.tdtype = torch_dtype(self.dtype)
        self.device = torch.device(device)
        self.module = module.to(device=self.device, dtype=self.tdtype)
        self.params: list[nn.Parameter] = list(self.module.parameters())
        self.shapes = [tuple(p.shape) for p in self.params]
        sizes = [p.numel() for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.dim = int(self.offsets[-1])
        self._bound: np.ndarray | None = None  # the host array the parameters view (keeps it alive)
        self._bound_addr = -1
        self._on_host = self.device.type == "cpu" if staged is None else not staged
        # Device runs: parameters live in one device buffer, filled from x by bind().
        self._dev_x = None if self._on_host else torch.empty(self.dim, dtype=self.tdtype, device=self.device)
        if self._dev_x is not None:
            self._set_data(self._dev_x)
        self.grad_t: torch.Tensor | None = None
        self.grad: np.ndarray = np.empty(0, self.dtype)

    def initial_vector(self) -> np.ndarray:
        """The module's current parameters as a fresh flat numpy array (one copy, at start-up)."""
        out = np.empty(self.dim, self.dtype)
        with torch.no_grad():
            for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:], strict=True):
                out[a:b] = p.detach().reshape(-1).cpu().numpy()
        return out

    def _set_data(self, flat: torch.Tensor) -> None:
        for p, a, b, s in zip(self.params, self.offsets[:-1], self.offsets[1:], self.shapes, strict=True):
            p.data = flat[a:b].view(s)

    def bind(self, x: np.ndarray) -> None:
        """Make the parameters x (host: views of x itself; device: a copy of x on the device)."""
        if x.shape != (self.dim,):
            raise ValueError(f"x has shape {x.shape}, expected ({self.dim},)")
        if not self._on_host:
            assert self._dev_x is not None
            self._dev_x.copy_(torch.from_numpy(self._host(x)), non_blocking=False)
            return
        addr = address(x)
        if addr == self._bound_addr and self._bound is not None and self._bound.dtype == x.dtype:
            return
        x = self._host(x)
        self._set_data(torch.from_numpy(x))
        self._bound = x
        self._bound_addr = address(x)

    def _host(self, x: np.ndarray) -> np.ndarray:
        # A copy only when x cannot be viewed: other dtype, strided, or read-only.
        if x.dtype != self.dtype or not x.flags.c_contiguous or not x.flags.writeable:
            return np.array(x, dtype=self.dtype)
        return x

    def attach_grad(self, pin: bool = False) -> np.ndarray:
        """Point every ``.grad`` at a view of one flat buffer; returns its host numpy view.

        On a device the buffer is device memory and the host copy is a pinned staging array
        (``pin``) filled by :meth:`grad_to_host`.
        """
        g = torch.zeros(self.dim, dtype=self.tdtype, device=self.device)
        for p, a, b, s in zip(self.params, self.offsets[:-1], self.offsets[1:], self.shapes, strict=True):
            p.grad = g[a:b].view(s)
        self.grad_t = g
        if self._on_host:
            self.grad = g.numpy()
        else:
            host = torch.zeros(self.dim, dtype=self.tdtype, pin_memory=pin and torch.cuda.is_available())
            self._grad_host = host
            self.grad = host.numpy()
        return self.grad

    def zero_grad(self) -> None:
        assert self.grad_t is not None
        self.grad_t.zero_()

    def grad_to_host(self) -> None:
        if not self._on_host:
            self._grad_host.copy_(self.grad_t)

    def check_views(self) -> bool:
        """Every parameter's storage inside the bound x and every grad inside the flat g."""
        xs = self._dev_x if not self._on_host else torch.from_numpy(self._bound) if self._bound is not None else None
        if xs is None or self.grad_t is None:
            return False
        return all(_inside(p.data, xs) and p.grad is not None and _inside(p.grad, self.grad_t)
                   for p in self.params)


def _inside(t: torch.Tensor, flat: torch.Tensor) -> bool:
    lo = flat.data_ptr()
    hi = lo + flat.numel() * flat.element_size()
    return lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi
