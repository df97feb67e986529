"""Serving: scoring new candles with a checkpoint."""
