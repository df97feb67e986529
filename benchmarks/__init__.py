"""The project's performance record, run as ``python -m benchmarks <command>`` (kept out of the library)."""
