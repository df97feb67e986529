"""patx_core: the PriceActionTransformer library (data, model, training, evaluation).

Plain Python, no orchestration: everything here is callable from a notebook. Submodules are
imported on use so that, e.g., ``benchmarks.bench`` runs on a GPU box without polars.
"""

__version__ = "0.1.0"
