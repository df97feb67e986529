"""patx_dagster: orchestration only. Every asset unpacks config and calls ``patx_core.pipeline``."""

from patx_dagster.definitions import defs

__all__ = ["defs"]
