"""Settings: the config dataclasses (every default once), the two TOML files that name datasets and
variants, and the grid that resolves a (dataset, variant) pair into configs and paths."""
