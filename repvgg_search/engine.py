"""Deprecated alias of `repvgg_search.training` (renamed: it holds the training recipe and loops); removed in 0.3."""

import warnings

from .training import *  # noqa: F403
from .training import __all__  # noqa: F401

warnings.warn(
    "repvgg_search.engine is now repvgg_search.training; the old name goes in 0.3", DeprecationWarning, stacklevel=2
)
