"""Our refusals through Pulumi's dynamic-provider host as one line.

The host (pulumi.dynamic) answers any exception with `traceback.format_exc()`, so a refusal that
names its reason in one sentence reached the operator under a dozen lines of stack. For the
bundle's own errors (BundleError: refused, drift, connection), the stack is left out, which
format_exc does when sys.tracebacklimit is 0; any other exception keeps its full traceback, since
that is a bug to report. The limit is process-wide: it is cleared again on entry to every
operation, so at worst a concurrent operation's unexpected error loses its stack, never its line.

Even without its stack, format_exc puts the class in front of the sentence
(`x402db.errors.Refused: ...`), which reads as a crash. traceback prints an exception whose text
is empty as its type's name alone, and a builtins type without its module: so the sentence is
re-raised as the name of such a type.
"""

from __future__ import annotations

import functools
import sys

from ..errors import BundleError


def _sentence(exc: BundleError) -> BundleError:
    bare = type(type(exc).__name__, (type(exc),), {"__module__": "builtins", "__str__": lambda self: ""})
    bare.__qualname__ = " ".join(str(exc).split()) or type(exc).__name__
    return bare(*exc.args)


def one_line(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        sys.__dict__.pop("tracebacklimit", None)
        try:
            return method(*args, **kwargs)
        except BundleError as exc:
            sys.tracebacklimit = 0
            raise _sentence(exc) from None

    return wrapper


def one_line_methods(cls):
    """Wraps the provider operations a class defines itself."""
    for name in ("check", "diff", "create", "read", "update", "delete"):
        if name in cls.__dict__:
            setattr(cls, name, one_line(cls.__dict__[name]))
    return cls
