"""Storage: atomic artifact writes (local or fsspec URL), the file layout under ``PATX_DATA_DIR``, and
the checkpoint format."""
