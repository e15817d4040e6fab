"""One exception family; each carries the exit code every script maps it to."""


class BundleError(Exception):
    """A failure to report as one sentence; exit code 1 (a check or operation failed)."""

    exit_code = 1


class Refused(BundleError):
    """The operation would lose data or break an invariant, so nothing was changed."""


class DriftError(Refused):
    """An applied migration's file no longer matches its recorded checksum."""


class UsageError(BundleError):
    """Bad arguments or configuration."""

    exit_code = 2


class ConnectError(BundleError):
    """The database could not be reached."""

    exit_code = 2
