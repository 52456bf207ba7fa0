"""One error class for bad input; entry points turn exactly that class into a one-line message and exit status 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

EXIT_BAD_INPUT = 2


class BadInputError(ValueError):
    """Input outside what is allowed: a config value, a command-line argument, an API argument or a file the user
    named. The message names the field, the value and what is allowed. Any other exception is a bug or a fault
    of the machine, and keeps its traceback."""


def exit_on_bad_input(run: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a `BadInputError` into `error: <message>` on stderr and exit status 2; anything else propagates."""

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        except BadInputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper


def check_int(value: Any, key: str, minimum: int, note: str = "", error: type[BadInputError] = BadInputError) -> None:
    """Refuse `value` (as `error`, naming `key`) unless it is an integer, not a bool, and >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{key}={value!r} must be an integer >= {minimum}" + (f" ({note})" if note else ""))
