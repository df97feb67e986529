"""The grid a run works on (datasets × variants) and the artifact root, as one typed resource.

Tests pass one pointing at tmp files and dirs; the code location's is configured from the
environment.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from patx_core.settings.grid import Grid, GridCell
from patx_core.storage import paths as core_paths


class GridResource(dg.ConfigurableResource):
    """Datasets file, variants file and artifact root; empty strings mean "from the environment".

    The partitions (which datasets and variants exist) are read from ``$PATX_DATASETS`` and
    ``$PATX_VARIANTS`` when the code location loads; ``datasets_file``/``variants_file`` only change
    the *settings* a partition key resolves to, which is how tests run a known partition such as
    ``nasdaq|smoke`` on their own data.

    The grid is parsed once per process that initializes the resource: under the in-process
    executor that is once per run, so every step sees the settings the run started with even if
    ``variants.toml`` is edited while it trains. Under the multiprocess and Celery executors each
    step's process initializes its own copy and reads the files as they are when that step starts:
    an edit during such a run reaches its later steps, and the evaluation's training-data check
    (``pipeline.evaluation._require_same_training_data``) is what refuses a model judged on settings it was
    not trained with. Outside a run (a plain ``GridResource()`` in a script or a test) each call
    re-reads the files.
    """

    datasets_file: str = Field(default="", description="Datasets TOML; empty = $PATX_DATASETS or datasets.toml")
    variants_file: str = Field(default="", description="Variants TOML; empty = $PATX_VARIANTS or variants.toml")
    data_dir: str = Field(default="", description="Artifact root; empty = $PATX_DATA_DIR or ./data")

    _loaded: Grid | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Dagster calls this on its own copy of the resource, once per run (and once per schedule
        # or sensor evaluation), so the cached grid never outlives the run that loaded it.
        self._loaded = self._load()

    def _load(self) -> Grid:
        return Grid.load(datasets_file=self.datasets_file or None, variants_file=self.variants_file or None,
                         data_root=self.root())

    def root(self) -> str:
        """The artifact root: ``data_dir``, else ``$PATX_DATA_DIR``, else ``./data``."""
        return self.data_dir or str(core_paths.data_dir())

    def settings(self) -> Grid:
        """The datasets and variants this run works on (loaded when the run started)."""
        return self._loaded if self._loaded is not None else self._load()

    def cell(self, key: str) -> GridCell:
        """The (dataset, variant) cell of a partition key ``<dataset>|<variant>``."""
        return self.settings().cell_for_key(str(key))
