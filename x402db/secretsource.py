"""Where secrets come from: the environment, or a file only its owner can read. Never argv."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UsageError

SECRET_ENV = "INTEGRATION_ENCRYPTION_SECRET"
PREVIOUS_ENV = "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS"


def read_secret_file(path: str) -> str:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise UsageError(f"secret file {path} cannot be read") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"secret file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); run chmod 600 {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise UsageError(f"secret file {path} cannot be read as UTF-8 text") from None
    # Editors add a final newline; the secret itself is the first line's content.
    secret = text[:-1] if text.endswith("\n") else text
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise UsageError(f"secret file {path} is empty")
    return secret


def primary_secret(file: str | None, env: str = SECRET_ENV) -> str:
    if file:
        return read_secret_file(file)
    value = os.environ.get(env)
    if value is None:
        raise UsageError(f"no encryption secret: set {env} or pass a secret file")
    if not value:
        raise UsageError(f"{env} is set but empty")
    return value


def previous_secrets(files: list[str] | None, env: str = PREVIOUS_ENV) -> list[str]:
    if files:
        return [read_secret_file(f) for f in files]
    value = os.environ.get(env, "")
    parts = [p for p in value.split(",")] if value else []
    if any(not p for p in parts):
        raise UsageError(f"{env} has an empty entry; separate secrets with single commas")
    return parts
