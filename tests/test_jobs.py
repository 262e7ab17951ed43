"""Job scripts: rank counts follow the config, scripts are valid shell, bad options get exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpcasync.cli.main import main
from tests.conftest import make_config


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hpcasync jobscript` creates the job's log directory in the current directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(make_config().to_toml())
    return path


@pytest.mark.parametrize("scheduler, launch", [("slurm", "srun --ntasks=10"), ("pbs", "mpiexec -n 10")])
def test_scripts_launch_agents_plus_monitor(tmp_path: Path, config: Path, scheduler: str, launch: str) -> None:
    out = tmp_path / "job.sh"
    assert main(["jobscript", str(config), "--scheduler", scheduler, "--nodes", "2", "--partition", "short",
                 "--set", "algorithm.alpha=0.02", "-o", str(out)]) == 0
    text = out.read_text()
    assert launch in text and "--set algorithm.alpha=0.02" in text and "short" in text
    subprocess.run(["bash", "-n", str(out)], check=True)


def test_array_script_has_one_task_per_listed_config(tmp_path: Path, config: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"{config}\n{config}\n{config}\n")
    out = tmp_path / "array.sh"
    assert main(["jobscript", str(config), "--scheduler", "slurm-array", "--list", str(listing),
                 "-o", str(out)]) == 0
    assert "#SBATCH --array=0-2" in out.read_text()
    subprocess.run(["bash", "-n", str(out)], check=True)


@pytest.mark.parametrize("args, words", [(["--time", "90"], "--time '90': expected HH:MM:SS"),
                                         (["--nodes", "11"], "more nodes than the 10 ranks"),
                                         (["--scheduler", "slurm-array"], "needs --list")])
def test_bad_options(config: Path, capsys, args: list[str], words: str) -> None:
    assert main(["jobscript", str(config), *args]) == 2
    assert words in capsys.readouterr().err
