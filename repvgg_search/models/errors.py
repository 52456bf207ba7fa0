"""Errors of the generator: an architecture or block design outside what is allowed, a model with no deploy form."""

from __future__ import annotations

from ..errors import BadInputError


class ArchError(BadInputError):
    """An architecture field (or a block-variant field) holds a value outside what is allowed; the message names
    the field and the allowed values."""


class NotReparameterizableError(BadInputError):
    """The model has no deploy form (its block variant cannot be fused, e.g. ReLU inside the branches), or it is
    not a model this package built."""
