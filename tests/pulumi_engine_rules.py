"""The checks the Pulumi CLI makes on a project and a stack's config before it runs the program,
which `pulumi.runtime.set_mocks` skips. Transcribed from pulumi/pulumi at 1b59498:

- sdk/go/common/workspace/loaders.go + project.go: `ValidateProject` (non-empty name, then the
  JSON schema project.json), `RewriteShorthandConfigValues`, `Project.Validate` (default and value
  exclusive, arrays need items, a typed default must have its type, keys of other namespaces
  carry only a value);
- pkg/workspace/config.go: `mergeConfig` with validate=true (a project key without default or
  value that the stack does not set is missing; defaults are merged in as *plaintext* values),
  then `validateStackConfigValues` (for each explicitly typed key, sorted: a `secret: true` key
  must hold a secure value, then the value must parse as its type, `ValidateConfigValue`).

A stack is {full key: StackValue}; `text` is the decrypted text, or None when the user types it
at a prompt (the runbook's `pulumi config set --secret KEY`).
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).parent / "reference" / "pulumi-project.schema.json"
TYPES = ("string", "integer", "boolean", "array", "object")


@dataclass(frozen=True)
class StackValue:
    text: str | None
    secure: bool = False
    obj: bool = False


Stack = dict[str, StackValue]


def _scalar_text(v) -> str:
    # Go's fmt %v of what YAML decoded: booleans print as true/false.
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


# ---- the project file ------------------------------------------------------------------------

def validate_project(raw) -> list[str]:
    """ValidateProject + RewriteShorthandConfigValues + Project.Validate, every error found."""
    if not isinstance(raw, dict):
        return [f"expected project to be an object, was '{type(raw).__name__}'"]
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        return ["project is missing a non-empty string 'name' attribute"]
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    errors = []
    for e in validator.iter_errors(raw):
        # For a oneOf, the deepest cause names what is wrong ('int' is not one of ...).
        while e.context:
            e = max(e.context, key=lambda c: len(c.absolute_path))
        errors.append(f"#/{'/'.join(map(str, e.absolute_path))}: {e.message}")
    if errors:
        return errors
    for key, decl in project_config(raw).items():
        namespaced = ":" not in key or key.startswith(name + ":")
        if "default" in decl and "value" in decl:
            errors.append(f"project config '{key}' cannot have both a 'default' and 'value' attribute")
        typ = decl.get("type")
        if namespaced:
            if typ == "array" and "items" not in decl:
                errors.append(f"The configuration key '{key}' declares an array but does not specify the underlying type via the 'items' attribute")
            if typ is not None and decl.get("default") is not None and not value_has_type(typ, decl.get("items"), decl["default"]):
                errors.append(f"The default value specified for configuration key '{key}' is not of the expected type '{typ}'")
        else:
            if typ is not None:
                errors.append(f"Configuration key '{key}' is not namespaced by the project and should not define a type")
            if decl.get("default") is not None:
                errors.append(f"Configuration key '{key}' is not namespaced by the project and should not define a default value")
            if decl.get("value") is None:
                errors.append(f"Configuration key '{key}' is namespaced and must provide an attribute 'value'")
    return errors


def project_config(raw: dict) -> dict[str, dict]:
    """The config block after RewriteShorthandConfigValues: every entry a declaration."""
    name = raw["name"]
    out = {}
    for key, v in (raw.get("config") or {}).items():
        if isinstance(v, dict):
            out[key] = v
        elif ":" not in key or key.startswith(name + ":"):
            out[key] = {"default": v}
        else:
            out[key] = {"value": v}
    return out


def value_has_type(typ: str, items, value) -> bool:
    """workspace.ValidateConfigValue."""
    if typ == "string":
        return isinstance(value, str)
    if typ == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return True
        if isinstance(value, float):
            return value == int(value)
        if isinstance(value, str):
            return re.fullmatch(r"[+-]?\d+", value) is not None  # strconv.Atoi
        return False
    if typ == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if typ == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(value_has_type(items["type"], items.get("items"), v) for v in value)


# ---- the stack ---------------------------------------------------------------------------------

def full_key(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def load_stack_file(path: Path) -> Stack:
    raw = load_yaml(path) or {}
    stack: Stack = {}
    for key, v in (raw.get("config") or {}).items():
        if isinstance(v, dict) and set(v) == {"secure"}:
            stack[key] = StackValue(None, secure=True)
        elif isinstance(v, (dict, list)):
            stack[key] = StackValue(json.dumps(v), obj=True)
        else:
            stack[key] = StackValue(_scalar_text(v))
    return stack


def _format_missing(keys: list[str]) -> str:
    """formatMissingKeys: 'a'; 'a' and 'b'; 'a', 'b' and 'c'."""
    if len(keys) == 1:
        return f"'{keys[0]}'"
    keys = sorted(keys)
    return ", ".join(f"'{k}'" for k in keys[:-1]) + f" and '{keys[-1]}'"


def merge_and_validate(raw_project: dict, stack_name: str, stack: Stack) -> list[str]:
    """mergeConfig(validate=True): the errors `pulumi preview` would stop on, in its words."""
    name = raw_project["name"]
    decls = project_config(raw_project)
    merged = dict(stack)
    missing = []
    for key in sorted(decls):
        decl = decls[key]
        k = full_key(name, key)
        has_default, has_value = decl.get("default") is not None, decl.get("value") is not None
        if k not in merged and not has_value and not has_default and k.split(":")[0] == name:
            missing.append(key)
            continue
        if k not in merged:
            value = decl["default"] if has_default else decl["value"]
            # createConfigValue: a plain, never secure, value
            merged[k] = StackValue(_scalar_text(value)) if not isinstance(value, (dict, list)) else StackValue(json.dumps(value), obj=True)
    if missing:
        values = "values" if len(missing) > 1 else "value"
        return [f"Stack '{stack_name}' is missing configuration {values} {_format_missing(missing)}"]
    errors = []
    for key in sorted(decls):
        decl = decls[key]
        if decl.get("type") is None:
            continue  # only explicitly typed keys are validated
        sv = merged[full_key(name, key)]
        if decl.get("secret") and not sv.secure:
            errors.append(f"Stack '{stack_name}' with configuration key '{key}' must be encrypted as it's secret")
            continue
        content = json.loads(sv.text) if sv.obj and sv.text is not None else sv.text
        if content is None:  # typed at a prompt: any text is a string, nothing else can be known
            ok = decl["type"] == "string"
        else:
            ok = value_has_type(decl["type"], decl.get("items"), content)
        if not ok:
            errors.append(f"Stack '{stack_name}' with configuration key '{key}' must be of type '{decl['type']}'")
    return errors


def merged_values(raw_project: dict, stack: Stack) -> dict[str, StackValue]:
    """The config the program sees (project defaults merged), keys without the project prefix."""
    name = raw_project["name"]
    out = {k.split(":", 1)[1]: v for k, v in stack.items() if k.startswith(name + ":")}
    for key, decl in project_config(raw_project).items():
        if key not in out and ":" not in key and decl.get("default") is not None:
            out[key] = StackValue(_scalar_text(decl["default"]))
    return out


# ---- the stacks a reader of the runbook builds ------------------------------------------------

@dataclass
class RunbookStack:
    name: str
    values: Stack = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    optional: set[str] = field(default_factory=set)  # keys set under a "# optional ..." comment


_FENCE = re.compile(r"^```(sh|bash|shell|console)?\s*$")


def shell_blocks(markdown: str) -> list[str]:
    blocks, current, lang = [], None, None
    for line in markdown.splitlines():
        m = _FENCE.match(line.strip())
        if m and current is None:
            current, lang = [], m.group(1)
        elif line.strip() == "```" and current is not None:
            if lang in ("sh", "bash", "shell", "console"):
                blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _segments(line: str) -> list[tuple[list[str], bool]]:
    """Split a shell line on && ; | into words; the bool says the segment's stdin is fed (pipe or <)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    out, cur, fed = [], [], False
    for w in words:
        if w in ("&&", ";", "||"):
            out.append((cur, fed)); cur, fed = [], False
        elif w == "|":
            out.append((cur, fed)); cur, fed = [], True
        else:
            cur.append(w)
    out.append((cur, fed))
    result = []
    for seg, fed in out:
        if "<" in seg:
            seg, fed = seg[:seg.index("<")], True
        if seg:
            result.append((seg, fed))
    return result


def runbook_stacks(markdown: str, project: str, root: Path) -> dict[str, RunbookStack]:
    """Replay every `pulumi stack init|select` and `pulumi config set` of the runbook's shell
    blocks, in order. A stack whose Pulumi.<name>.yaml is committed starts from that file, as
    `pulumi stack init` keeps an existing stack file."""
    stacks: dict[str, RunbookStack] = {}
    current: RunbookStack | None = None
    for block in shell_blocks(markdown):
        optional = False
        for line in block.splitlines():
            if line.strip().startswith("#") or not line.strip():
                # "# optional ..." opens a group of optional steps; any other comment or a
                # blank line closes it.
                optional = line.strip().lower().startswith("# optional")
                continue
            for words, fed in _segments(line):
                if words[:1] != ["pulumi"]:
                    continue
                args = words[1:]
                if args[:2] in (["stack", "init"], ["stack", "select"]):
                    name = next(a for a in args[2:] if not a.startswith("-"))
                    if name not in stacks:
                        committed = root / f"Pulumi.{name}.yaml"
                        stacks[name] = RunbookStack(name, load_stack_file(committed) if committed.exists() else {})
                    current = stacks[name]
                    current.commands.append(" ".join(words))
                elif args[:2] == ["config", "set"]:
                    target = current
                    rest, secret, positional = args[2:], False, []
                    i = 0
                    while i < len(rest):
                        a = rest[i]
                        if a in ("-s", "--stack"):
                            target = stacks.setdefault(rest[i + 1], RunbookStack(rest[i + 1])); i += 2; continue
                        if a == "--secret":
                            secret = True
                        elif a in ("--plaintext", "--path", "--raw"):
                            pass
                        elif a == "--":
                            positional += rest[i + 1:]; break
                        elif a.startswith("-"):
                            raise ValueError(f"runbook: unknown flag {a} in: {line}")
                        else:
                            positional.append(a)
                        i += 1
                    if target is None:
                        raise ValueError(f"runbook: `{line}` runs before any `pulumi stack init`")
                    key = full_key(project, positional[0])
                    value = positional[1] if len(positional) > 1 else None  # else prompted or stdin
                    target.values[key] = StackValue(value, secure=secret)
                    if optional:
                        target.optional.add(key)
                    target.commands.append(" ".join(words))
    return stacks
