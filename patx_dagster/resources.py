"""Where the graph reads and writes, as a typed resource (tests pass one pointing at tmp dirs)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from patx_core import paths as core_paths
from patx_core.config import VariantConfig
from patx_core.paths import VariantPaths
from patx_core.variants import get_variant


class PatxStorage(dg.ConfigurableResource):
    """Input file, output root and variants file; empty strings mean "from the environment".

    The partitions (which variants exist) are read from ``$PATX_VARIANTS`` when the code location
    loads; ``variants_file`` only changes the *settings* a partition key resolves to, which is how
    tests run a known partition such as ``smoke`` with a test configuration.
    """

    raw_parquet: str = Field(default="", description="Raw candles; empty = $PATX_RAW_PARQUET or the bundled sample")
    data_dir: str = Field(default="", description="Output root; empty = $PATX_DATA_DIR or ./data")
    variants_file: str = Field(default="", description="Variants TOML; empty = $PATX_VARIANTS or variants.toml")

    def raw_path(self) -> str:
        return self.raw_parquet or str(core_paths.raw_parquet_path())

    def root(self) -> str:
        return self.data_dir or str(core_paths.data_dir())

    def paths(self, variant: str) -> VariantPaths:
        return VariantPaths.for_variant(variant, self.root())

    def variant(self, name: str) -> VariantConfig:
        return get_variant(name, self.variants_file or None)
