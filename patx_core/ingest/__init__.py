"""Ingest: the curated candle store of a dataset and its landing folder (merge, move, quarantine, lock)."""
