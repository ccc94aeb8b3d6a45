"""One version: maturin takes the package's from engine/Cargo.toml (``dynamic = ["version"]``),
and ``gridgate.__version__`` (the CLI, the OpenAPI document) must say the same."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import gridgate

CARGO_TOML = Path(__file__).resolve().parents[2] / "engine" / "Cargo.toml"


def test_package_version_is_the_engine_crate_version() -> None:
    # A pre-release such as 0.2.0-alpha.1 would need PEP 440 spelling (0.2.0a1) here.
    crate = tomllib.loads(CARGO_TOML.read_text(encoding="utf-8"))["package"]["version"]
    assert gridgate.__version__ == crate
    assert version("gridgate") == crate
