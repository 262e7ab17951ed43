"""torch threads follow hpcasync.threads' per-rank rule; devices: cpu/auto/cuda choice, local rank,
and the staged (GPU) path of the flat parameters exercised on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (make install-torch: pip install torch==2.13.0)")

from hpcasync import threads  # noqa: E402
from hpcasync.errors import UserError  # noqa: E402
from hpcasync.problems.nn.flat import FlatModule  # noqa: E402
from hpcasync.problems.nn.problem import choose_device, local_rank_from_env  # noqa: E402


@pytest.fixture
def restore_threads():
    before, chosen = torch.get_num_threads(), threads._chosen
    yield
    torch.set_num_threads(before)
    threads._chosen = chosen


def test_configure_sets_torch_threads_to_the_rank_share(restore_threads) -> None:
    n, _ = threads.configure(local_ranks=64)  # more ranks than cores: one thread each
    assert n == 1 and torch.get_num_threads() == 1
    threads._chosen = 2
    assert threads.configure_torch() == 2 and torch.get_num_threads() == 2


def test_configure_torch_without_configure_uses_one_rank_rule(restore_threads, monkeypatch) -> None:
    threads._chosen = None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.configure_torch() == threads.threads_per_rank(1)[0] == 1


def test_device_choice(monkeypatch) -> None:
    assert choose_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert choose_device("auto") == torch.device("cpu")
        with pytest.raises(UserError, match="problem.device = 'cuda': torch sees no GPU"):
            choose_device("cuda")
    with pytest.raises(UserError, match="problem.device"):
        choose_device("gpu")
    monkeypatch.setenv("MPI_LOCALRANKID", "3")
    assert local_rank_from_env() == 3


def test_gpu_rank_is_local_rank_modulo_devices(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_device("cuda", local_rank=3) == torch.device("cuda", 1)
    assert choose_device("auto", local_rank=4) == torch.device("cuda", 0)


def test_staged_path_gives_the_host_paths_gradient() -> None:
    """The device path (x copied into the module's own buffer, gradient copied back into a host
    staging array) computes what the zero-copy host path does."""
    torch.manual_seed(0)
    template = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    host = FlatModule(template, np.float32)
    staged = FlatModule(__import__("copy").deepcopy(template), np.float32, staged=True)
    x = host.initial_vector()
    gh, gs = host.attach_grad(), staged.attach_grad()
    X, y = torch.randn(8, 5), torch.arange(8) % 3
    for flat in (host, staged):
        flat.bind(x)
        flat.zero_grad()
        torch.nn.functional.cross_entropy(flat.module(X), y).backward()
        flat.grad_to_host()
    np.testing.assert_allclose(gs, gh, rtol=1e-6)
    assert not np.shares_memory(gs, staged.grad_t.numpy())  # a separate host array
    assert staged.check_views()  # parameters inside the device buffer, grads inside the device grad
    x[0] += 1.0  # the staged module holds a copy: it sees x only at the next bind
    assert float(next(staged.module.parameters()).detach().reshape(-1)[0]) != x[0]
    staged.bind(x)
    assert float(next(staged.module.parameters()).detach().reshape(-1)[0]) == x[0]
