"""Everything a fleet asks of Pulumi, one stack per target of this project, through
pulumi.automation: a LocalWorkspace over the project directory.

The backend, the passphrase and the Pulumi home come from the process environment, as they do for
a `pulumi up` typed by hand; nothing here logs in or writes the user's Pulumi settings. No stack is
ever selected: selecting writes the current stack into PULUMI_HOME's workspace file, so the user's
next bare `pulumi up` in this directory would act on whichever target the fleet touched last, and
parallel workers would race on that file. Every command names its stack instead.

Failures come back as an Outcome whose summary is one line (or as a StackError of one line),
never as the automation exception, whose text is the CLI's whole output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pulumi import automation as auto
from pulumi.automation.errors import CommandError, InvalidVersionError, StackAlreadyExistsError

from .. import ROOT
from ..db import scrub
from ..errors import BundleError

EVIDENCE_KEY = "fleetEvidence"  # the config key and the stack output of the same name (__main__.py)
# Pulumi's words for what follows from a failure already reported, never its cause.
CONSEQUENCES = (
    "Resource monitor has terminated",
    "an unhandled error occurred: the Python program exited with code",
    "update failed",
    "preview failed",
    "refresh failed",
)
COLOR = "never"  # the output is read by people through logs and by this module, never by a terminal


class SecretRef(Protocol):
    def read(self) -> str: ...


class TargetLike(Protocol):
    """What configure needs of a fleet target (fleetfile.TargetSpec)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> Mapping[str, str]: ...
    @property
    def secrets(self) -> Mapping[str, SecretRef]: ...


class StackError(BundleError):
    """A stack could not be created, read or configured; the message is Pulumi's own error line."""


@dataclass
class Outcome:
    ok: bool
    summary: str  # one line: "" when ok, else the CLI's first error line without any secret
    output: str  # everything the CLI printed, secrets scrubbed
    changes: dict[str, int] = field(default_factory=dict)  # operation -> resource count


class _Workspace(auto.LocalWorkspace):
    def select_stack(self, stack_name: str) -> None:
        # A missing stack surfaces in the command that names it ("no stack named ... found").
        pass

    def create_stack(self, stack_name: str) -> None:
        args = ["stack", "init", stack_name, "--no-select"]
        if self.secrets_provider:
            args += ["--secrets-provider", self.secrets_provider]
        self._run_pulumi_cmd_sync(args)


class Stacks:
    def __init__(self, project_dir: Path = ROOT, *, secrets: Iterable[str] = ()):
        self.project_dir = Path(project_dir)
        try:
            self._ws = _Workspace(work_dir=str(self.project_dir), secrets_provider="passphrase")
        except FileNotFoundError:
            raise StackError(
                "no pulumi CLI on PATH: install Pulumi, or put `make pulumi-tools`' directory first on PATH"
            ) from None
        except (subprocess.CalledProcessError, InvalidVersionError) as e:
            raise StackError(f"the pulumi CLI on PATH cannot be used: {str(e).splitlines()[0]}") from None
        # Every secret value this object has handled (or was told of): scrubbed from what it returns.
        self._secrets: set[str] = {s for s in secrets if s}

    # --- stacks and config ---------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        stacks = self._call(lambda: self._ws.list_stacks(), "list the stacks")
        return any(s.name == name or s.name.endswith(f"/{name}") for s in stacks)

    def ensure(self, name: str) -> None:
        if self.exists(name):
            return
        try:
            self._ws.create_stack(name)
        except StackAlreadyExistsError:
            pass  # created meanwhile by another process: what ensure wants
        except CommandError as e:
            raise StackError(f"stack {name} could not be created: {self._line(e)}") from None

    def configure(self, spec: TargetLike) -> None:
        """Non-secret config in one call; each secret through its own `pulumi config set --secret`
        with the value on stdin: the Automation API would put it on the command line, where every
        local user reads it in /proc/<pid>/cmdline."""
        stack = self._stack(spec.name)
        if spec.config:
            plain = {key: auto.ConfigValue(value=str(value)) for key, value in spec.config.items()}
            self._call(lambda: stack.set_all_config(plain), f"configure stack {spec.name}")
        for key, source in spec.secrets.items():
            self._set_secret(spec.name, key, source.read())

    def _set_secret(self, name: str, key: str, value: str) -> None:
        self._secrets.add(value)
        proc = subprocess.run(
            [self._ws.pulumi_command.command, "config", "set", "--secret", key, "--stack", name, "--non-interactive"],
            # The CLI strips exactly one final newline from what it reads: this one.
            input=value + "\n",
            cwd=self.project_dir,
            env={**os.environ, **self._ws.env_vars},
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            line = self._first_error([proc.stdout, proc.stderr]) or f"exit {proc.returncode}"
            raise StackError(f"secret {key} of stack {name} could not be set: {line}")

    # --- operations ----------------------------------------------------------------------------

    def preview(self, name: str, *, expect_no_changes: bool = False, refresh: bool = False) -> Outcome:
        def run(stack: auto.Stack, out: Callable[[str], None], err: Callable[[str], None]) -> dict[str, int]:
            result = stack.preview(
                expect_no_changes=expect_no_changes, refresh=refresh, color=COLOR, on_output=out, on_error=err
            )
            return _counts(result.change_summary)

        return self._operation(name, "preview", run)

    def up(self, name: str, on_output: Callable[[str], Any] | None = None) -> Outcome:
        def run(stack: auto.Stack, out: Callable[[str], None], err: Callable[[str], None]) -> dict[str, int]:
            # The update's own summary event has the counts. Stack.up would run `stack output` and
            # `stack history` after it for them: two more CLI runs per target, each decrypting the
            # stack's secrets (about 0.3 s of CPU apiece), for outputs nothing here reads.
            with tempfile.TemporaryDirectory(prefix="x402db-fleet-") as tmp:
                log = Path(tmp) / "events.jsonl"
                args = ["up", "--yes", "--skip-preview", "--color", COLOR, "--exec-kind", "auto.local"]
                args += ["--event-log", str(log), "--stack", stack.name]
                env = {"PULUMI_DEBUG_COMMANDS": "true", **self._ws.env_vars}
                self._ws.pulumi_command.run(args, str(self.project_dir), env, out, err)
                return _counts(_summary_changes(log))

        return self._operation(name, "up", run, on_output)

    def cancel(self, name: str) -> Outcome:
        """Removes the stack's lock. Only for a run known to be dead: a live `up` would carry on
        without a lock and race the next one."""

        def run(stack: auto.Stack, out: Callable[[str], None], err: Callable[[str], None]) -> dict[str, int]:
            stack.cancel()
            return {}

        return self._operation(name, "cancel", run)

    def clear_pending(self, name: str) -> Outcome:
        """What a run killed mid-create leaves: Pulumi cannot know whether the create finished, and
        non-interactively its way out is to forget it; the next up creates it again, and our
        resources read the ledger as they create."""

        def run(stack: auto.Stack, out: Callable[[str], None], err: Callable[[str], None]) -> dict[str, int]:
            result = stack.refresh(
                clear_pending_creates=True, color=COLOR, on_output=out, on_error=err, show_secrets=False
            )
            return _counts(result.summary.resource_changes)

        return self._operation(name, "refresh --clear-pending-creates", run)

    def outputs(self, name: str) -> dict[str, Any]:
        stack = self._stack(name)
        values = self._call(lambda: stack.outputs(), f"read the outputs of stack {name}")
        # A secret output is never handed on: it would end up in a report or a JSON document.
        return {key: "[secret]" if v.secret else v.value for key, v in values.items()}

    def evidence(self, name: str) -> dict | None:
        value = self.outputs(name).get(EVIDENCE_KEY)
        return value if isinstance(value, dict) else None

    def record_evidence(self, name: str, evidence: dict) -> Outcome:
        """The evidence goes into the stack's config, and the program exports it: an output that
        only an up can write, kept with the state it vouches for."""
        text = json.dumps(evidence, sort_keys=True, separators=(",", ":"))
        failed = self._set_evidence(name, text)
        return failed or self.up(name)

    def clear_evidence(self, name: str) -> Outcome:
        """Before an evidence wave changes the stack: the next up exports no evidence until this
        release's smoke has passed, so an earlier pass never vouches for a later deploy."""
        return self._set_evidence(name, "") or Outcome(True, "", "")

    def _set_evidence(self, name: str, text: str) -> Outcome | None:
        stack = self._stack(name)
        try:
            stack.set_all_config({EVIDENCE_KEY: auto.ConfigValue(value=text)})
        except CommandError as e:
            return Outcome(False, self._line(e), "")
        return None

    # --- locks ---------------------------------------------------------------------------------

    def lock_holders(self, name: str) -> list[str] | None:
        """Who holds the stack's lock, one short line each; [] when nobody; None when the backend
        keeps its locks where this cannot look (anything but a file backend)."""
        locks = self._locks(name)
        return None if locks is None else [_describe(lock) for lock in locks]

    def running_holders(self, name: str) -> list[str]:
        """The holders of the stack's lock still running on this host: a live `pulumi up` (another
        fleet file's, or one typed by hand), whose lock must never be cancelled."""
        return [_describe(lock) for lock in self._locks(name) or [] if running_here(lock) is True]

    def stale_holders(self, name: str) -> list[str]:
        """The holders of the stack's lock that were on this host and no longer run: a dead run's lock."""
        return [_describe(lock) for lock in self._locks(name) or [] if running_here(lock) is False]

    def foreign_holders(self, name: str) -> list[str]:
        """The holders of the stack's lock on another host (or that do not say where): whether they
        still run cannot be known from here."""
        return [_describe(lock) for lock in self._locks(name) or [] if running_here(lock) is None]

    def _locks(self, name: str) -> list[dict[str, Any]] | None:
        url = {**os.environ, **self._ws.env_vars}.get("PULUMI_BACKEND_URL", "")
        if not url.startswith("file://"):
            return None
        # A relative path is the CLI's, which runs in the project directory.
        root = self.project_dir / os.path.expanduser(url[len("file://") :].split("?", 1)[0])
        project = self._ws.project_settings().name
        locks: list[dict[str, Any]] = []
        for path in sorted((root / ".pulumi" / "locks").glob(f"*/{project}/{name}/*.json")):
            try:
                lock = json.loads(path.read_text())
            except (OSError, ValueError):
                lock = None
            locks.append(lock if isinstance(lock, dict) else {"unreadable": path.name})
        return locks

    # --- plumbing ------------------------------------------------------------------------------

    def _stack(self, name: str) -> auto.Stack:
        return auto.Stack.select(name, self._ws)

    def _operation(
        self,
        name: str,
        command: str,
        run: Callable[[auto.Stack, Callable[[str], None], Callable[[str], None]], dict[str, int]],
        on_output: Callable[[str], Any] | None = None,
    ) -> Outcome:
        stdout: list[str] = []
        stderr: list[str] = []

        def out(line: str) -> None:
            stdout.append(line)
            if on_output is not None:
                on_output(self._scrub(line))

        try:
            changes = run(self._stack(name), out, stderr.append)
        except CommandError as e:
            # The exception's text is the fallback for calls that take no callbacks (cancel).
            summary = self._first_error(["\n".join(stdout), "\n".join(stderr), str(e)])
            return Outcome(
                False, summary or f"pulumi {command} failed without an error line", self._text(stdout, stderr)
            )
        except RuntimeError as e:  # the SDK's own checks, e.g. a preview that sent no summary
            return Outcome(
                False, f"pulumi {command}: {self._scrub(str(e).splitlines()[0])}", self._text(stdout, stderr)
            )
        return Outcome(True, "", self._text(stdout, stderr), changes)

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return fn()
        except CommandError as e:
            raise StackError(f"could not {what}: {self._line(e)}") from None

    def _line(self, e: CommandError) -> str:
        # CommandError's text is the CommandResult's: " code: N\n stdout: ...\n stderr: ...".
        return self._first_error([str(e)]) or "pulumi failed without an error line"

    def _first_error(self, texts: list[str]) -> str:
        return self._scrub(first_error(texts))

    def _text(self, stdout: list[str], stderr: list[str]) -> str:
        return self._scrub("\n".join(stdout + stderr))

    def _scrub(self, text: str) -> str:
        return scrub(text, sorted(self._secrets))


def first_error(texts: Iterable[str]) -> str:
    """The first `error:` message of Pulumi's output that says why, on one line, without its prefix.

    The engine prints the program's refusals that way, under Diagnostics, a list's items indented
    beneath its first line; they are joined with "; ". Pulumi's own consequences of a failure
    (CONSEQUENCES) come only when nothing else was said: a provider's refusal is printed after the
    stack's "Resource monitor has terminated"."""
    found = []
    for text in texts:
        lines = text.splitlines()
        for i, raw in enumerate(lines):
            line = _bare(raw)
            if not line.startswith("error:"):
                continue
            message, depth, items = line[len("error:") :].strip(), _indent(raw), []
            if not message:  # a banner beneath: its first paragraph, past the rule of "===="
                paragraph: list[str] = []
                for following in lines[i + 1 :]:
                    if any(c.isalnum() for c in following):
                        paragraph.append(following.strip())
                    elif paragraph:
                        break
                found.append(" ".join(paragraph))
                continue
            for following in lines[i + 1 :]:
                if not following.strip() or _indent(following) <= depth:
                    break
                items.append(following.strip().removeprefix("- "))
            found.append(f"{message.rstrip(':')}: {'; '.join(items)}" if items else message)
    causes = [m for m in found if not m.startswith(CONSEQUENCES)]
    return (causes or found or [""])[0]


def _bare(line: str) -> str:
    # An automation CommandError's text labels each stream: " stdout: ..." and " stderr: error: ...".
    return line.strip().removeprefix("stderr:").removeprefix("stdout:").strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _summary_changes(log: Path) -> Mapping[str, int] | None:
    """The resource changes of an engine event log's summary event (None when it holds none)."""
    changes = None
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: the summary, when there is one, is a later line
        if isinstance(event, dict) and isinstance(event.get("summaryEvent"), dict):
            changes = event["summaryEvent"].get("resourceChanges")
    return changes if isinstance(changes, dict) else None


def _counts(changes: Mapping[Any, int] | None) -> dict[str, int]:
    return {getattr(op, "value", str(op)): int(n) for op, n in (changes or {}).items()}


def running_here(lock: dict[str, Any]) -> bool | None:
    """Whether the process that took the lock still runs: None when it ran on another host (or the
    lock does not say), where no process table can be read."""
    pid = lock.get("pid")
    if lock.get("hostname") != socket.gethostname() or type(pid) is not int or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(lock: dict) -> str:
    """`pid 123 on host by user since 2026-01-01 10:00:00 UTC`, from what the lock file holds."""
    if "unreadable" in lock:
        return f"unreadable lock file {lock['unreadable']}"
    parts = []
    if lock.get("pid"):
        parts.append(f"pid {lock['pid']}")
    if lock.get("hostname"):
        parts.append(f"on {lock['hostname']}")
    if lock.get("username"):
        parts.append(f"by {lock['username']}")
    when = lock.get("timestamp")
    if isinstance(when, str):
        try:
            stamp = datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone(UTC)
            when = stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            pass
        parts.append(f"since {when}")
    return " ".join(parts) or "a lock without details"
