"""Where a target's secrets come from: an environment variable, or a file only its owner can
read. The value is read when a stack is configured and goes to Pulumi on stdin, never on argv;
no message repeats it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Literal

from .schema import FleetConfigError

MAX_SECRET_FILE = 64 * 1024  # a secret is short; a large file is a wrong file


@dataclass(frozen=True)
class SecretSource:
    key: str
    kind: Literal["env", "file"]
    ref: str  # the variable's name, or the file's path (relative ones already resolved against fleet.yaml's folder)
    target: str = ""

    def read(self) -> str:
        """The secret, exactly; FleetConfigError naming target, key and variable or path otherwise."""
        if self.kind == "env":
            where = f"target {self.target}: {self.key} from ${self.ref}"
            value = os.environ.get(self.ref, "")
            if not value:
                raise FleetConfigError(f"{where}: the variable is not set or empty; export it before running")
            fix = "set it to the secret alone"
        else:
            path = os.path.expanduser(self.ref)
            where = f"target {self.target}: {self.key} from {path}"
            value = _read_private_file(path, where)
            fix = f"write it with printf '%s' \"$SECRET\" > {path}"
        try:
            value.encode("utf-8")  # bytes that are not UTF-8 arrive as lone surrogates
        except UnicodeEncodeError:
            raise FleetConfigError(f"{where}: the value is not UTF-8 text") from None
        if value != value.strip():
            # Pulumi would store the newline as part of the password, and the login would fail later.
            raise FleetConfigError(f"{where}: the value starts or ends with whitespace (a final newline too); {fix}")
        return value


def _file_problem(st: os.stat_result) -> str | None:
    """Why a secret file must not be trusted, as libpq judges a .pgpass and ssh a private key."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file; keep the secret in a plain file"
    if st.st_uid != os.geteuid():
        return f"belongs to uid {st.st_uid}, not to you; copy it and chmod 600 the copy"
    if st.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):o}, readable by others; chmod 600 it"
    if st.st_size > MAX_SECRET_FILE:
        return f"is larger than {MAX_SECRET_FILE // 1024} KiB, so it holds more than a secret"
    if st.st_size == 0:
        return "is empty"
    return None


def _read_private_file(path: str, where: str) -> str:
    try:
        # O_NONBLOCK: a FIFO would block the open; fstat refuses it. Checking the opened file
        # means a link swapped between check and read changes nothing.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:
        raise FleetConfigError(f"{where}: cannot open the file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        if problem := _file_problem(os.fstat(fd)):
            raise FleetConfigError(f"{where}: the file {problem}")
        raw = os.read(fd, MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise FleetConfigError(f"{where}: cannot read the file ({exc.strerror})") from None
    finally:
        os.close(fd)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FleetConfigError(f"{where}: the file is not UTF-8 text") from None
