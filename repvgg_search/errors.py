"""One error class for bad input; entry points turn exactly that class into a one-line message and exit status 2,
and a machine's resource error (a full disk, a quota, a read-only file system) into one line naming the file and
exit status 1."""

from __future__ import annotations

import errno
import functools
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
# The OS errors that are the machine's resources, not a bug: one line naming the file, no traceback.
RESOURCE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large",
}


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or during, innermost last."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def resource_error(exc: BaseException) -> str | None:
    """The one line of a resource error anywhere in `exc`'s chain (`no space left on device writing PATH (OSError
    ENOSPC)`), or None when it is not one."""
    for cause in causes(exc):
        if isinstance(cause, OSError) and cause.errno in RESOURCE_ERRNOS:
            code = errno.errorcode[cause.errno]
            return f"{RESOURCE_ERRNOS[cause.errno]} writing {cause.filename or 'a record'} (OSError {code})"
    return None


class BadInputError(ValueError):
    """Input outside what is allowed: a config value, a command-line argument, an API argument or a file the user
    named. The message names the field, the value and what is allowed. Any other exception is a bug or a fault
    of the machine, and keeps its traceback."""


def exit_on_bad_input(run: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a `BadInputError` into `error: <message>` on stderr and exit status 2, a resource error (full disk,
    quota, read-only file system) into `error: <the file and the errno>` and exit status 1; anything else
    propagates with its traceback."""

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        except BadInputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except OSError as err:
            line = resource_error(err)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            sys.exit(EXIT_FAILED)

    return wrapper


def check_int(value: Any, key: str, minimum: int, note: str = "", error: type[BadInputError] = BadInputError) -> None:
    """Refuse `value` (as `error`, naming `key`) unless it is an integer, not a bool, and >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{key}={value!r} must be an integer >= {minimum}" + (f" ({note})" if note else ""))


# Names that become folder names (sweep.name, variant.name): a leading letter or digit (so never `.`, `..` or a
# hidden file), then letters, digits, `.`, `_`, `-`; no separator, so the folder stays where the project puts it.
SLUG_RULE = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_SLUG = re.compile(SLUG_RULE)


def check_slug(value: Any, key: str, error: type[BadInputError] = BadInputError) -> None:
    """Refuse `value` (as `error`, naming `key` and the rule) unless it is a safe folder name (`SLUG_RULE`)."""
    if not isinstance(value, str) or _SLUG.fullmatch(value) is None:
        raise error(
            f"{key}={value!r} becomes a folder name and must match {SLUG_RULE} (a letter or digit, then up to 63 "
            "letters, digits, '.', '_' or '-')"
        )
