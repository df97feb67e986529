"""Arrows point down: storage knows nothing above it, and settings read no data module."""

from __future__ import annotations

import subprocess
import sys


def _imported_after(module: str) -> set[str]:
    code = f"import sys; import {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m for m in out.stdout.split() if m.startswith("patx_core")}


def test_storage_imports_nothing_above_it() -> None:
    package = _imported_after("patx_core")  # what importing the package itself loads (its thread policy)
    for module in ("patx_core.storage.artifacts", "patx_core.storage.paths", "patx_core.storage.locks",
                   "patx_core.storage.jsonsafe"):
        above = {m for m in _imported_after(module) - package if not m.startswith("patx_core.storage")}
        assert not above, (module, above)


def test_settings_import_no_data_module() -> None:
    # the datasets file's intervals and staleness are parsed by settings.durations, not data.intervals
    for module in ("patx_core.settings.config", "patx_core.settings.datasets", "patx_core.settings.variants",
                   "patx_core.settings.grid"):
        assert not {m for m in _imported_after(module) if m.startswith("patx_core.data")}, module
