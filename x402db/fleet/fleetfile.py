"""fleet.yaml, loaded and checked whole before anything connects: the targets (one Pulumi stack
each), the waves they roll out in, and the lock gate. The file holds no secret: each one is a
reference, {env: NAME} or {file: PATH}, read only when a stack is configured. Every mistake is
one line naming the key path, never the value, and a secret written into the file is refused
before anything else is looked at."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .. import ROOT, db
from . import schema
from .schema import FleetConfigError as FleetConfigError
from .schema import segment
from .secrets import SecretSource as SecretSource

STACK_NAME = re.compile(r"[A-Za-z0-9_.-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SOURCE_FORM = "give {env: NAME} or {file: PATH}"


class _Bad(Exception):
    """A problem in the file; load() prefixes the file's path."""


def _bad(message: str) -> NoReturn:
    raise _Bad(message)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    config: dict[str, str]  # non-secret stack config, as `pulumi config set` takes it
    secrets: dict[str, SecretSource]
    labels: dict[str, str]
    declared_defaults: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def _get(self, key: str) -> str:
        return self.config.get(key, self.declared_defaults.get(key, ""))

    @property
    def host(self) -> str:
        return self._get("host")

    @property
    def port(self) -> int:
        return int(self._get("port") or 0)

    @property
    def database(self) -> str:
        return self._get("database")

    @property
    def username(self) -> str:
        return self._get("username")

    @property
    def kind(self) -> str:
        """supabase or postgres: the stack config key `target`."""
        return self._get("target")

    @property
    def endpoint(self) -> tuple[str, int]:
        """The database server, which maxPerHost counts."""
        return self.host, self.port


@dataclass(frozen=True)
class WaveSpec:
    name: str
    targets: tuple[str, ...] | None
    select: dict[str, str] | None
    evidence: bool = False
    parallel: int = 1
    max_per_host: int | None = None
    max_failures: int = 0
    promoted_from: str | None = None


@dataclass(frozen=True)
class LockGate:
    max_rows: int | None  # None: no lockGate, the gate is off


@dataclass(frozen=True)
class Fleet:
    path: Path
    targets: dict[str, TargetSpec]
    waves: tuple[WaveSpec, ...]
    lock_gate: LockGate

    def wave_targets(self) -> list[tuple[WaveSpec, list[str]]]:
        """Each wave with its targets: as listed, or those whose labels match `select`, in file
        order, minus every target an earlier wave has. A target runs in one wave only."""
        wave_of: dict[str, str] = {}
        out = []
        for wave in self.waves:
            if wave.targets is not None:
                names = list(wave.targets)
                if taken := [n for n in names if n in wave_of]:
                    raise FleetConfigError(
                        f"{self.path}: target {taken[0]} is in wave {wave_of[taken[0]]} and in wave {wave.name};"
                        " a target rolls out in one wave"
                    )
            else:
                select = (wave.select or {}).items()
                names = [n for n, t in self.targets.items() if n not in wave_of and select <= t.labels.items()]
            wave_of.update(dict.fromkeys(names, wave.name))
            out.append((wave, names))
        return out

    def check_secrets(self) -> None:
        """Read every secret once, so a missing variable or a loose file fails before anything starts."""
        for target in self.targets.values():
            for source in target.secrets.values():
                source.read()


class _Loader(yaml.SafeLoader):
    """Refuses a key given twice in one mapping: YAML keeps the last silently, so a target
    written twice would lose its first half without a word."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, "a key given twice", key_node.start_mark)
                seen.add(key)
            except TypeError:
                pass  # an unhashable key: SafeLoader refuses it next
        return super().construct_mapping(node, deep)


def load(path: Path, project_dir: Path = ROOT) -> Fleet:
    """The fleet in `path`; FleetConfigError (exit 2) at the first problem."""
    try:
        declared = schema.declared(project_dir)
    except (OSError, yaml.YAMLError, AttributeError):
        raise FleetConfigError(f"cannot read the stack config keys from {project_dir / 'Pulumi.yaml'}") from None
    try:
        fleet = _fleet(path, _parse(path), declared)
    except _Bad as bad:
        raise FleetConfigError(f"{path}: {bad}") from None
    fleet.wave_targets()  # raises when a target would roll out twice
    return fleet


def _parse(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader: no Python objects
    except FileNotFoundError:
        _bad("no such file; pass --fleet FILE")
    except UnicodeDecodeError:
        _bad("is not UTF-8 text")
    except OSError as exc:
        _bad(f"cannot be read ({exc.strerror})")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # The problem's text may quote the document (an alias, an escape); then only the place is given.
        problem = exc.problem if exc.problem and not re.search(r"['\"]", exc.problem) else "a syntax error"
        _bad(
            f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else "not valid YAML"
        )
    except yaml.YAMLError:
        _bad("not valid YAML")


def _fleet(path: Path, doc: Any, declared: schema.Declared) -> Fleet:
    if found := schema.literal_secret(doc, declared.secret):
        _bad(f"{found[0]} {found[1]}; {SOURCE_FORM}")
    doc = _mapping(doc, "", schema.TOP_KEYS, schema.TOP_REQUIRED)
    if type(doc["version"]) is not int or doc["version"] != 1:
        _bad("version must be 1")
    defaults = _mapping(doc.get("defaults") or {}, "defaults", tuple(declared.keys))
    targets = {}
    for name, raw in _mapping(doc["targets"], "targets").items():
        if not isinstance(name, str) or not STACK_NAME.fullmatch(name):
            _bad(f"{segment('targets', name)} is not a stack name; use letters, digits, _, . and -")
        targets[name] = _target(path, name, defaults, raw, declared)
    if not targets:
        _bad("targets is empty")
    owner: dict[tuple[str, int, str], str] = {}
    for name, spec in targets.items():
        # Two stacks on one database: both previews pass while neither exists, and the second up
        # is refused by the first's ownership only after the first has changed it.
        if (first := owner.setdefault((spec.host, spec.port, spec.database), name)) != name:
            _bad(
                f"{segment('targets', name)} is the database of {segment('targets', first)} (same host, port and "
                "database); a database is deployed by one stack"
            )
    waves = doc["waves"]
    if not isinstance(waves, list) or not waves:
        _bad("waves must be a list of at least one wave")
    specs = tuple(_wave(f"waves[{i}]", raw, targets) for i, raw in enumerate(waves))
    names = [w.name for w in specs]
    for i, wave in enumerate(specs):
        if wave.name in names[:i]:
            _bad(f"waves[{i}].name repeats the name of waves[{names.index(wave.name)}]")
        if wave.promoted_from is not None and wave.promoted_from not in names[:i]:
            later = "a later wave or itself" if wave.promoted_from in names else "no wave"
            _bad(f"waves[{i}].requires.promotedFrom names {later}; name an earlier wave")
    gate = doc.get("lockGate")
    max_rows = None if gate is None else _mapping(gate, "lockGate", schema.LOCK_GATE_KEYS, ("maxRows",))["maxRows"]
    return Fleet(path, targets, specs, LockGate(None if max_rows is None else _whole(max_rows, "lockGate.maxRows")))


def _mapping(value: Any, where: str, allowed: tuple[str, ...] | None = None, required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        _bad(f"{where or 'the file'} must be a mapping")
    for key in value:
        if allowed is not None and key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            _bad(f"{segment(where, key)} is not a known key" + (f"; did you mean {near[0]}?" if near else ""))
    for key in required:
        if value.get(key) is None:
            _bad(f"{segment(where, key)} is required")
    return value


def _target(path: Path, name: str, defaults: dict, raw: Any, declared: schema.Declared) -> TargetSpec:
    where = segment("targets", name)
    raw = _mapping(raw, where, (*sorted(declared.keys), *schema.TARGET_ONLY_KEYS))
    config: dict[str, str] = {}
    secrets: dict[str, SecretSource] = {}
    # A null value unsets the key: the target falls back to the defaults, then to Pulumi.yaml.
    given = {k: (v, where if k in raw else "defaults") for k, v in {**defaults, **raw}.items() if v is not None}
    given.pop("labels", None)
    for key, (value, level) in given.items():
        at = segment(level, key)
        if key in declared.secret:
            secrets[key] = _source(path, name, key, value, at)
            continue
        text = schema.stack_value(declared.types[key], value)
        if text is None:
            _bad(f"{at} must be {_KIND_WORDS.get(declared.types[key], 'a string; quote it')}")
        low, high = schema.RANGES.get(key, (None, None))
        if low is not None and high is not None and not low <= int(text) <= high:
            _bad(f"{at} must be from {low} to {high}")
        if key == "port" and (problem := db.session_port_problem(int(text))):
            _bad(f"{at}: {problem}")
        config[key] = text
    for key in sorted(declared.required):
        if given.get(key, ("",))[0] == "":
            _bad(f"{segment(where, key)} is required" + (f"; {SOURCE_FORM}" if key in declared.secret else ""))
    return TargetSpec(name, config, secrets, _labels(raw.get("labels"), f"{where}.labels"), declared.defaults)


_KIND_WORDS = {"integer": "a whole number", "boolean": "true or false"}


def _source(path: Path, target: str, key: str, value: Any, at: str) -> SecretSource:
    if not isinstance(value, dict) or len(value) != 1 or not value.get("env", value.get("file")):
        _bad(f"{at} must be one of {{env: NAME}} or {{file: PATH}}")
    ((kind, ref),) = value.items()
    if kind == "env" and not ENV_NAME.fullmatch(ref):
        _bad(f"{at}.env must be a variable name (letters, digits and _)")
    if kind == "file" and not ref.startswith("~"):
        ref = str(path.absolute().parent / ref)  # relative to fleet.yaml, not to wherever a worker runs
    return SecretSource(key, kind, ref, target)


def _labels(value: Any, where: str) -> dict[str, str]:
    labels = _mapping(value if value is not None else {}, where)
    for key, text in labels.items():
        if not isinstance(key, str) or not isinstance(text, str):
            _bad(f"{segment(where, key)} must be text; quote it")
    return labels


def _whole(value: Any, at: str) -> int:
    least = schema.MINIMUM[at.rpartition(".")[2]]
    if type(value) is not int or value < least:
        _bad(f"{at} must be a whole number of at least {least}")
    return value


def _wave(where: str, raw: Any, targets: dict[str, TargetSpec]) -> WaveSpec:
    raw = _mapping(raw, where, schema.WAVE_KEYS, ("name",))
    if not isinstance(raw["name"], str) or not STACK_NAME.fullmatch(raw["name"]):
        _bad(f"{where}.name must be a name of letters, digits, _, . and -")
    if ("targets" in raw) == ("select" in raw):
        _bad(f"{where} needs targets or select, exactly one of the two")
    listed = raw.get("targets")
    if listed is not None:
        if not isinstance(listed, list) or not listed or not all(isinstance(n, str) for n in listed):
            _bad(f"{where}.targets must be a list of target names")
        for i, name in enumerate(listed):
            if name not in targets:
                _bad(f"{where}.targets[{i}] is not a target under targets")
            if name in listed[:i]:
                _bad(f"{where}.targets[{i}] repeats an earlier entry")
    select = _labels(raw["select"], f"{where}.select") if "select" in raw else None
    if select is not None and not select:
        _bad(f"{where}.select is empty; it would select every target")
    if not isinstance(raw.get("evidence", False), bool):
        _bad(f"{where}.evidence must be true or false")
    requires = _mapping(raw["requires"], f"{where}.requires", schema.REQUIRES_KEYS) if "requires" in raw else {}
    promoted = requires.get("promotedFrom")
    if promoted is not None and not isinstance(promoted, str):
        _bad(f"{where}.requires.promotedFrom must be a wave's name")
    ints = {key: _whole(raw[key], f"{where}.{key}") for key in schema.MINIMUM if key in raw}
    return WaveSpec(
        name=raw["name"],
        targets=tuple(listed) if listed is not None else None,
        select=select,
        evidence=raw.get("evidence", False),
        parallel=ints.get("parallel", 1),
        max_per_host=ints.get("maxPerHost"),
        max_failures=ints.get("maxFailures", 0),
        promoted_from=promoted,
    )
