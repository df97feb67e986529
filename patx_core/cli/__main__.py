"""``python -m patx_core.cli``: the ``patx`` console script without an installed entry point."""

from patx_core.cli import main

raise SystemExit(main())
