"""Hyper-parameter search on validation: Optuna trials that never read the test split.

:mod:`patx_core.search.study` runs a variant's ``[NAME.search]`` as a resumable Optuna study;
:mod:`patx_core.search.outputs` writes what it found (``trials.parquet``, ``search.md``,
``best.toml``). The winner is judged on test once, by an ordinary materialization of the tuned
variant.
"""
