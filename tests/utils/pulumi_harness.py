"""Runs the real __main__.py under Pulumi's own mocks (pulumi.runtime.set_mocks) in a fresh
process and prints, as JSON, every resource registration the program made as the engine would
receive it at a preview (a value the program cannot compute there is unknown): type, name,
parent, dependencies, protect, secret outputs, inputs with secrets marked, plus the stack
exports and Output.is_secret of the secrets the program builds.
Usage: python pulumi_harness.py '<config json>' (keys without the project prefix)."""

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import pulumi  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402
from pulumi.runtime.mocks import MockMonitor  # noqa: E402

PROJECT = "x402-openrouter-db"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return [f"{args.name}-id", args.inputs]

    def call(self, args):
        return {}


class SpyMonitor(MockMonitor):
    def __init__(self, mocks):
        super().__init__(mocks)
        self.registered, self.exports = [], {}

    def RegisterResource(self, request):
        self.registered.append(request)
        return super().RegisterResource(request)

    def RegisterResourceOutputs(self, request):
        if request.urn.split("::")[-2] == "pulumi:pulumi:Stack":
            self.exports = MessageToDict(request.outputs)
        return super().RegisterResourceOutputs(request)


def mark_secrets(value):
    if isinstance(value, dict):
        if value.get("4dabf18193072939515e22adb298388d") == SECRET_SIG:
            return {"<secret>": mark_secrets(value.get("value"))}
        return {k: mark_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mark_secrets(v) for v in value]
    return value


def main() -> None:
    config = json.loads(sys.argv[1])
    # "__plaintext__": keys given as `config set` without --secret would give them.
    plaintext = set(config.pop("__plaintext__", []))
    secret_keys = [f"{PROJECT}:{k}" for k in ("password", "backendRolePassword") if k in config and k not in plaintext]
    pulumi.runtime.set_all_config({f"{PROJECT}:{k}": v for k, v in config.items()}, secret_keys)
    spy = SpyMonitor(Mocks())
    pulumi.runtime.set_mocks(Mocks(), project=PROJECT, stack="test", preview=True, monitor=spy)
    secrets = {}

    @pulumi.runtime.test
    def program():
        from x402db.iac import config as stack_config
        from x402db.iac.component import dsn_output

        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        cfg = stack_config.load(pulumi.Config())
        outputs = {"dsn": dsn_output(cfg)}
        if cfg.password is not None:
            outputs["password"] = cfg.password
        if cfg.backend_role_password is not None:
            outputs["backendRolePassword"] = cfg.backend_role_password

        secrets.update(outputs)

    program()
    from pulumi.runtime.sync_await import _sync_await

    secrets = {k: _sync_await(o.is_secret()) for k, o in secrets.items()}
    from pulumi.runtime.settings import get_root_resource

    exports = {}
    for k, v in get_root_resource().outputs.items():
        out = pulumi.Output.from_input(v)
        exports[k] = {"value": _sync_await(out.future()), "secret": _sync_await(out.is_secret())}
    resources = []
    for r in spy.registered:
        if r.type == "pulumi:pulumi:Stack":
            continue
        resources.append(
            {
                "type": r.type,
                "name": r.name,
                "urn_parent": r.parent,
                "custom": r.custom,
                "dependencies": list(r.dependencies),
                "protect": r.protect,
                "additional_secret_outputs": list(r.additionalSecretOutputs),
                "retain_on_delete": r.retainOnDelete,
                "provider": r.provider,
                "inputs": mark_secrets(MessageToDict(r.object)),
            }
        )
    json.dump({"resources": resources, "exports": exports, "is_secret": secrets}, sys.stdout)


if __name__ == "__main__":
    main()
