"""`python -m repvgg_search.analysis`: the report command (the same as `python -m repvgg_search.analysis.report`)."""

from .cli import main

raise SystemExit(main())
