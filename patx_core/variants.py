"""The variants file: named configurations that a user adds without touching code.

``PATX_VARIANTS`` names the file (default: ``variants.toml`` at the repository root).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from patx_core.artifacts import PathLike, as_path
from patx_core.config import VariantConfig
from patx_core.paths import REPO_ROOT

DEFAULT_VARIANTS_FILE = REPO_ROOT / "variants.toml"


def variants_path() -> Path:
    return as_path(os.environ.get("PATX_VARIANTS") or DEFAULT_VARIANTS_FILE)


def load_variants(path: PathLike | None = None) -> dict[str, VariantConfig]:
    """Parse and validate every variant; errors name the file, the variant and the field."""
    path = as_path(path) if path is not None else variants_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"variants file {path} does not exist (set PATX_VARIANTS)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"variants file {path} is not valid TOML: {exc}") from None
    if not raw:
        raise ValueError(f"variants file {path} defines no variant")
    variants: dict[str, VariantConfig] = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise ValueError(f"variants file {path}: top-level key {name!r} must be a [table]")
        try:
            variants[name] = VariantConfig.from_dict(name, values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"variants file {path}: {exc}") from None
    return variants


def get_variant(name: str, path: PathLike | None = None) -> VariantConfig:
    variants = load_variants(path)
    if name not in variants:
        raise KeyError(f"unknown variant {name!r}; defined: {sorted(variants)}")
    return variants[name]
