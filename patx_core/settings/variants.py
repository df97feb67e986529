"""The variants file: named configurations that a user adds without touching code.

``PATX_VARIANTS`` names the file (default: ``variants.toml`` at the repository root).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

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


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} has no TOML form here")
        return repr(value)  # shortest round-tripping form: 0.001, 1e-05 and 3.0 are all TOML floats
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string uses JSON's escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    raise ValueError(f"{where}: cannot write {type(value).__name__} {value!r} to TOML")


def variant_toml(variant: VariantConfig) -> str:
    """``variant`` as one complete table of a variants file: ``load_variants`` reads it back equal.

    Every field is written, defaults included, so the table means the same after a default
    changes. ``None`` fields are left out: TOML has no null, and every field that may be
    ``None`` defaults to it.
    """
    values = variant.to_dict()
    search = values.pop("search", None)
    lines = [f"[{variant.name}]"]
    lines += [f"{k} = {_toml_value(values.pop(k), k)}" for k in ("description", "nightly")]
    for section, fields in values.items():
        lines.append(f"[{variant.name}.{section}]")
        lines += [f"{k} = {_toml_value(v, f'{section}.{k}')}" for k, v in fields.items() if v is not None]
    if search is not None:
        space = search.pop("space")
        lines.append(f"[{variant.name}.search]")
        lines += [f"{k} = {_toml_value(v, f'search.{k}')}" for k, v in search.items()]
        lines.append(f"[{variant.name}.search.space]")
        lines += [f"{json.dumps(name)} = {{" + ", ".join(f"{k} = {_toml_value(v, name)}" for k, v in spec.items())
                  + "}" for name, spec in space.items()]
    return "\n".join(lines) + "\n"
