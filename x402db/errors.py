"""One exception family; each carries the exit code every script maps it to. The codes are
defined here once: 0 success, 1 a check or an operation failed or was refused, 2 usage, input,
environment or connection error."""

FAILED_EXIT, USAGE_EXIT = 1, 2


class BundleError(Exception):
    """A failure to report as one sentence; exit code 1 (a check or operation failed)."""

    exit_code = FAILED_EXIT


class Refused(BundleError):
    """The operation would lose data or break an invariant, so nothing was changed."""


class DriftError(Refused):
    """An applied migration's file no longer matches its recorded checksum."""


class UsageError(BundleError):
    """Bad arguments or configuration."""

    exit_code = USAGE_EXIT


class ConnectError(BundleError):
    """The database could not be reached."""

    exit_code = USAGE_EXIT
