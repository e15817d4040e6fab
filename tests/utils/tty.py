"""Run a script on a real pseudo-terminal, as an operator at a terminal would."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time


def run_in_pty(
    argv: list[str], env: dict[str, str], answer: bytes | None = None, prompt: bytes = b"", timeout: float = 60
) -> tuple[int, str]:
    """(exit code, everything the terminal showed); `answer` is typed once `prompt` appears."""
    pid, fd = pty.fork()
    if pid != 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal's size
    if pid == 0:
        os.environ.clear()
        os.environ.update(env)
        os.execv(sys.executable, [sys.executable, *argv])
    out, typed = b"", answer is None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not typed and prompt in out:
            os.write(fd, answer)
            typed = True
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
