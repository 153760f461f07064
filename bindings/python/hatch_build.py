"""Hatchling build hook: builds libkestrel with cargo and puts it in the wheel.

``pip install ./bindings/python`` runs ``cargo build --release --lib`` at the repository root
(two levels up), with the repository's own ``target/`` directory, so it is a no-op when
``make lib`` already ran, and bundles ``target/release/libkestrel.so`` as
``kestrel/libkestrel.so``. The wheel is tagged ``py3-none-<platform>``: no Python extension,
but a native library for this platform.

Environment:
  KESTREL_BUNDLE_LIBRARY  bundle this prebuilt library instead of running cargo
  CARGO                   the cargo to run (else ``cargo`` on PATH, else ~/.cargo/bin/cargo)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

LIBRARY = {"linux": "libkestrel.so", "darwin": "libkestrel.dylib"}.get(sys.platform, "libkestrel.so")


def _repository_root(start: Path) -> Path | None:
    for parent in [start, *start.parents]:
        cargo_toml = parent / "Cargo.toml"
        if cargo_toml.is_file() and 'name = "kestrel"' in cargo_toml.read_text():
            return parent
    return None


def _cargo() -> str:
    for candidate in (os.environ.get("CARGO"), shutil.which("cargo"), str(Path.home() / ".cargo/bin/cargo")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError(
        "cargo was not found (looked at $CARGO, PATH and ~/.cargo/bin): install Rust "
        "(https://rustup.rs) or set KESTREL_BUNDLE_LIBRARY to a prebuilt libkestrel"
    )


def build_library(project: Path) -> Path:
    """Builds libkestrel (or takes $KESTREL_BUNDLE_LIBRARY) and returns its path."""
    prebuilt = os.environ.get("KESTREL_BUNDLE_LIBRARY")
    if prebuilt:
        path = Path(prebuilt)
        if not path.is_file():
            raise RuntimeError(f"KESTREL_BUNDLE_LIBRARY={prebuilt} does not exist")
        return path
    root = _repository_root(project.resolve())
    if root is None:
        raise RuntimeError(
            f"the kestrel Rust sources were not found above {project} (build from the "
            "repository, e.g. pip install ./bindings/python, or set KESTREL_BUNDLE_LIBRARY)"
        )
    target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
    if not target.is_absolute():
        target = root / target
    command = [_cargo(), "build", "--release", "--lib"]
    print(f"kestrel: {' '.join(command)} (in {root})", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=root, check=True)
    library = target / "release" / LIBRARY
    if not library.is_file():
        raise RuntimeError(f"cargo finished but {library} is missing")
    return library


class CustomBuildHook(BuildHookInterface):
    """Bundles the native library and marks the wheel platform-specific."""

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return  # an editable install loads the library from the repository's target/
        library = build_library(Path(self.root))
        build_data["force_include"][str(library)] = f"kestrel/{LIBRARY}"
        build_data["pure_python"] = False
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        build_data["tag"] = f"py3-none-{platform}"
