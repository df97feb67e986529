"""Where the graph reads and writes, as a typed resource (tests pass one pointing at tmp dirs)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from patx_core.storage import paths as core_paths
from patx_core.settings.grid import Grid, GridCell


class PatxStorage(dg.ConfigurableResource):
    """Datasets file, variants file and output root; empty strings mean "from the environment".

    The partitions (which datasets and variants exist) are read from ``$PATX_DATASETS`` and
    ``$PATX_VARIANTS`` when the code location loads; ``datasets_file``/``variants_file`` only change
    the *settings* a partition key resolves to, which is how tests run a known partition such as
    ``nasdaq|smoke`` on their own data.
    """

    datasets_file: str = Field(default="", description="Datasets TOML; empty = $PATX_DATASETS or datasets.toml")
    variants_file: str = Field(default="", description="Variants TOML; empty = $PATX_VARIANTS or variants.toml")
    data_dir: str = Field(default="", description="Output root; empty = $PATX_DATA_DIR or ./data")

    def root(self) -> str:
        return self.data_dir or str(core_paths.data_dir())

    def grid(self) -> Grid:
        return Grid.load(datasets_file=self.datasets_file or None, variants_file=self.variants_file or None,
                         data_root=self.root())

    def cell(self, key: str) -> GridCell:
        """The (dataset, variant) cell of a partition key ``<dataset>|<variant>``."""
        return self.grid().cell_for_key(str(key))
