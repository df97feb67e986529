"""The variants file: named configurations that a user adds without touching code.

``PATX_VARIANTS`` names the file (default: ``variants.toml`` at the repository root).
"""

from __future__ import annotations

import os
from pathlib import Path

from patx_core.storage.artifacts import PathLike, as_path
from patx_core.settings.config import VariantConfig, read_named_tables
from patx_core.storage.paths import REPO_ROOT

DEFAULT_VARIANTS_FILE = REPO_ROOT / "variants.toml"


def variants_path() -> Path:
    return as_path(os.environ.get("PATX_VARIANTS") or DEFAULT_VARIANTS_FILE)


def load_variants(path: PathLike | None = None) -> dict[str, VariantConfig]:
    """Parse and validate every variant; errors name the file, the variant and the field."""
    path = as_path(path) if path is not None else variants_path()
    return read_named_tables(path, "variant", "PATX_VARIANTS", VariantConfig.from_dict)


def get_variant(name: str, path: PathLike | None = None) -> VariantConfig:
    variants = load_variants(path)
    if name not in variants:
        raise KeyError(f"unknown variant {name!r}; defined: {sorted(variants)}")
    return variants[name]
