"""`python -m repvgg_search.profile`."""

from .cli import main

main()
