"""patx_core: the PriceActionTransformer library (data, model, training, evaluation).

Plain Python, no orchestration: everything here is callable from a notebook. Submodules are
imported on use so that, e.g., ``benchmarks.bench`` runs on a GPU box without polars.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # Imported on first use, so `import patx_core` stays free of torch.
    if name == "train_many":
        from patx_core.model.fused import train_many

        return train_many
    raise AttributeError(f"module 'patx_core' has no attribute {name!r}")
