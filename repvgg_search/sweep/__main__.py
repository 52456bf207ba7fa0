"""`python -m repvgg_search.sweep`."""

from .cli import main

main()
