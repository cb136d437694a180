"""What `pip install newsflow` puts in site-packages: one name, `newsflow`, and no warning."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def site_packages(environment: Path) -> Path:
    [found] = environment.glob("lib/python*/site-packages")
    return found


def test_the_wheel_installs_only_newsflow(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPOSITORY),
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "would be ignored" not in built.stdout + built.stderr, "packaging warning"
    [wheel] = (tmp_path / "dist").glob("newsflow-*.whl")

    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    before = {p.name for p in site_packages(environment).iterdir()}
    python = environment / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    added = {p.name for p in site_packages(environment).iterdir()} - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"newsflow"}
    assert not (site_packages(environment) / "newsflow" / "__init__.py").exists()  # a namespace
    assert {p.name for p in (site_packages(environment) / "newsflow").iterdir()} == {
        "deployments",
        "evaluation",
        "flows",
        "tasks",
    }
    assert (site_packages(environment) / "newsflow" / "flows" / "samples" / "huelga.json").is_file()
    assert (environment / "bin" / "newsflow").is_file()
