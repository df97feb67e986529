"""``python -m benchmarks <command>``: see :mod:`benchmarks.bench`."""

from benchmarks.bench import main

raise SystemExit(main())
