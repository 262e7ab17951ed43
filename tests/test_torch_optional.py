"""torch stays optional: importing hpcasync and running a numpy problem never import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpcasync.errors import UserError


def test_import_and_a_numpy_run_do_not_import_torch(tmp_path) -> None:
    code = (
        "import sys\n"
        "import hpcasync, hpcasync.cli.main, hpcasync.problems, hpcasync.problems.nn\n"
        "from hpcasync.engines.sim.runner import simulate\n"
        "from tests.conftest import make_config\n"
        f"simulate(make_config(budget={{'time': 3.0}}), __import__('pathlib').Path({str(tmp_path)!r}))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_torch_problem_without_torch_says_how_to_install(monkeypatch) -> None:
    import hpcasync.problems.nn as nn

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(UserError, match=r"torch is not installed; pip install torch==2.13.0"):
        nn.import_torch()
