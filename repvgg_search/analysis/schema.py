"""Deprecated alias of `repvgg_search.analysis.examples` (it builds example records; the record schema itself is
`repvgg_search.schema`); removed in 0.3."""

import warnings

from .examples import *  # noqa: F403
from .examples import __all__  # noqa: F401

warnings.warn(
    "repvgg_search.analysis.schema is now repvgg_search.analysis.examples; the old name goes in 0.3",
    DeprecationWarning,
    stacklevel=2,
)
