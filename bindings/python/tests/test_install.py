"""How the package finds libkestrel: bundled by pip, or named by KESTREL_LIBRARY."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import kestrel

from conftest import INSTALLED

ROOT = Path(os.environ.get("KESTREL_TEST_ROOT", Path(__file__).resolve().parents[3]))
PROBE = "import kestrel; print(kestrel.library_path); print(kestrel.library_version())"


@pytest.mark.skipif(not INSTALLED, reason="run by run-tests.sh after pip install")
def test_pip_installed_package_loads_its_bundled_library() -> None:
    package = Path(kestrel.__file__).parent
    assert "site-packages" in package.parts, package
    assert kestrel.library_path == package / "libkestrel.so"
    assert kestrel.library_path.is_file()
    wheel = next(package.parent.glob("kestrel-*.dist-info")) / "WHEEL"
    assert "Tag: py3-none-" in wheel.read_text()  # platform wheel, any Python 3
    assert kestrel.library_version() == "0.1.0"


def run_probe(env_library: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KESTREL_LIBRARY=env_library)
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd="/")


def test_kestrel_library_environment_variable_wins() -> None:
    built = ROOT / "target" / "release" / "libkestrel.so"
    if not built.is_file():
        pytest.skip("no target/release/libkestrel.so (run make lib)")
    out = run_probe(str(built))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == str(built)


def test_missing_library_is_a_clear_import_error(tmp_path) -> None:
    out = run_probe(str(tmp_path / "nope.so"))
    assert out.returncode != 0
    assert "ImportError: KESTREL_LIBRARY=" in out.stderr and "does not exist" in out.stderr


@pytest.mark.skipif(not INSTALLED, reason="run by run-tests.sh (needs the repository and cargo)")
def test_pip_install_into_a_fresh_venv(tmp_path) -> None:
    """What a user does on a new machine: a new venv, pip install ./bindings/python (the build
    hook runs cargo in the repository's target/, a no-op when built), import kestrel."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("KESTREL_LIBRARY", "PYTHONPATH")}
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT / "bindings" / "python")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    out = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    path, version = out.stdout.split()
    assert Path(path).is_relative_to(venv) and path.endswith("site-packages/kestrel/libkestrel.so")
    assert version == "0.1.0"
