"""One partition per variant in the variants file (``PATX_VARIANTS``, default ``variants.toml``).

Read when the code location loads: a variant added to the file appears as a partition after
"Reload definitions" in the UI, and at once for shell runs.
"""

import dagster as dg

from patx_core.variants import load_variants

VARIANTS = load_variants()

variant_partitions = dg.StaticPartitionsDefinition(list(VARIANTS))
