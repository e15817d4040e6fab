"""What a fleet file may say, as data: the keys allowed at each level, the least value of each
whole-number setting, which key names hold secrets, and the stack config keys, read from
Pulumi.yaml so that a key the program gains is a key a target may carry, with no second list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from ..iac.config import OPTIONAL_SECRETS

TOP_KEYS = ("version", "defaults", "targets", "waves", "lockGate")
TOP_REQUIRED = ("version", "targets", "waves")
WAVE_KEYS = ("name", "targets", "select", "evidence", "parallel", "maxPerHost", "maxFailures", "requires")
REQUIRES_KEYS = ("promotedFrom",)
LOCK_GATE_KEYS = ("maxRows",)
TARGET_ONLY_KEYS = ("labels",)  # a target may carry these besides the stack config keys; defaults may not
# Whole-number settings (never a bool) and the least value each takes.
MINIMUM = {"parallel": 1, "maxPerHost": 1, "maxFailures": 0, "maxRows": 1}
# Stack config bounds Pulumi.yaml cannot express.
RANGES = {"port": (1, 65535)}
# Declared in Pulumi.yaml, but written by the fleet itself: a value in fleet.yaml would forge it.
FLEET_OWNED = ("fleetEvidence",)

# A key whose name contains one of these (case-insensitive) holds a secret, wherever it sits.
SECRET_MARKERS = ("password", "passwd", "passphrase", "secret", "token", "key", "credential", "pwd")
SECRET_NAMES = ("pass", "pw")  # too short to look for inside other words (bypass, pwm)
SOURCE_KINDS = ("env", "file")
# A password inside a value: a URL's user:password@, or a libpq key=value string's password=.
_EMBEDDED = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@|(^|\s)password\s*=", re.IGNORECASE)
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")


class FleetConfigError(UsageError):
    """fleet.yaml, or a secret it points to, is wrong: one line (exit 2) that never repeats a value."""


@dataclass(frozen=True)
class Declared:
    """Pulumi.yaml's `config:` as the fleet needs it; every default already in `pulumi config set` form."""

    types: dict[str, str]
    defaults: dict[str, str]
    secret: frozenset[str]  # declared `secret: true`, plus the program's optional secrets

    @property
    def keys(self) -> frozenset[str]:
        """The keys a target or the defaults may carry."""
        return frozenset(self.types) - set(FLEET_OWNED)

    @property
    def required(self) -> frozenset[str]:
        """Declared with no default: the engine refuses a stack without them."""
        return self.keys - set(self.defaults) - set(OPTIONAL_SECRETS)


def declared(project_dir: Path) -> Declared:
    """Read `project_dir/Pulumi.yaml`; raises OSError or yaml.YAMLError when it cannot."""
    config = (yaml.safe_load((project_dir / "Pulumi.yaml").read_text(encoding="utf-8")) or {}).get("config") or {}
    types, defaults, secret = {}, {}, set(OPTIONAL_SECRETS)
    for key, spec in config.items():
        # Pulumi also takes the short form `key: default`, whose type is the default's.
        spec = spec if isinstance(spec, dict) else {"default": spec, "type": _type_of(spec)}
        types[key] = spec.get("type") or _type_of(spec.get("default"))
        if spec.get("secret"):
            secret.add(key)
        if "default" in spec:
            defaults[key] = stack_value(types[key], spec["default"]) or str(spec["default"])
    types.update((key, "string") for key in OPTIONAL_SECRETS)
    return Declared(types, defaults, frozenset(secret))


def _type_of(value: Any) -> str:
    return "boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else "string"


def stack_value(kind: str, value: Any) -> str | None:
    """`value` as `pulumi config set` takes a value of Pulumi type `kind`, or None when it is not
    one. Strings must be YAML strings: an unquoted 010 is the number 8 and `yes` is true to YAML,
    so converting them back would deploy something the user never wrote."""
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return str(int(value)) if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value) else None
    if kind == "boolean":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value.lower() if isinstance(value, str) and value.lower() in ("true", "false") else None
    return value if isinstance(value, str) else None


def looks_secret(name: str) -> bool:
    lower = name.lower()
    return lower in SECRET_NAMES or any(marker in lower for marker in SECRET_MARKERS)


def segment(path: str, key: Any) -> str:
    """`path` extended by `key`, written so that any key stays on one line."""
    text = str(key)
    shown = text if _PLAIN_SEGMENT.fullmatch(text) else ascii(text)
    return f"{path}.{shown}" if path else shown


def _is_reference(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict) and set(value) <= set(SOURCE_KINDS) and all(isinstance(v, str) for v in value.values())
    )


def literal_secret(node: Any, secret_keys: frozenset[str], path: str = "") -> tuple[str, str] | None:
    """The key path of the first secret written into the document itself, and what is wrong with
    it: a key that looks secret holding anything but {env: NAME} or {file: PATH}, or any value
    with a password inside it. Walks the whole document, so no level is exempt."""
    if isinstance(node, dict):
        for key, value in node.items():
            at = segment(path, key)
            if (key in secret_keys or looks_secret(str(key))) and not _is_reference(value):
                return at, "is a literal value"
            if found := literal_secret(value, secret_keys, at):
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if found := literal_secret(value, secret_keys, f"{path}[{i}]"):
                return found
    elif isinstance(node, str) and _EMBEDDED.search(node):
        return path, "holds a password inside its value"
    return None
