"""Stack config that `pulumi preview` accepts, proven without the CLI: the engine's own rules
(tests/pulumi_engine_rules.py, transcribed from pulumi/pulumi) applied to Pulumi.yaml, to every
committed Pulumi.<stack>.yaml, and to the stacks a reader builds by following
docs/runbooks/deploy.md command by command; then the program's own validation (config.load) on
the config the engine would hand it."""
from __future__ import annotations

import copy

import pytest

from x402db import ROOT
from x402db.iac import config as stack_config

from . import pulumi_engine_rules as rules

PROJECT_FILE = ROOT / "Pulumi.yaml"
RUNBOOK = ROOT / "docs" / "runbooks" / "deploy.md"
STACK_FILES = sorted(ROOT.glob("Pulumi.*.yaml"))
TYPED_AT_PROMPT = "typed-at-a-prompt"


def project() -> dict:
    return rules.load_yaml(PROJECT_FILE)


def runbook_stacks(text: str | None = None) -> dict[str, rules.RunbookStack]:
    return rules.runbook_stacks(text or RUNBOOK.read_text(), project()["name"], ROOT)


class MergedConfig:
    """What pulumi.Config hands the program: the merged values, decrypted."""

    def __init__(self, values: dict[str, rules.StackValue]):
        self.values = {k: (TYPED_AT_PROMPT if v.text is None else v.text) for k, v in values.items()}

    def get(self, key):
        return self.values.get(key)

    def get_secret(self, key):
        return self.values.get(key)


def program_errors(raw: dict, stack: rules.Stack) -> list[str]:
    try:
        stack_config.load(MergedConfig(rules.merged_values(raw, stack)))
    except stack_config.ConfigError as exc:
        return [str(exc)]
    return []


def undeclared_keys(raw: dict, stack: rules.Stack) -> list[str]:
    """Our rule, not the engine's (it ignores unknown keys): a key of the project's namespace that
    is neither declared nor an optional secret the program reads is a typo that would be ignored."""
    name = raw["name"]
    known = set(rules.project_config(raw)) | set(stack_config.OPTIONAL_SECRETS)
    return [k for k in stack if k.startswith(name + ":") and k.split(":", 1)[1] not in known]


def test_project_file_against_pulumis_schema_and_rules():
    assert rules.validate_project(project()) == []


def test_every_committed_stack_is_completed_by_the_runbook():
    built = runbook_stacks()
    assert STACK_FILES, "no committed Pulumi.<stack>.yaml"
    for path in STACK_FILES:
        name = path.name.split(".")[1]
        assert name in built, f"{path.name} is committed but docs/runbooks/deploy.md never runs `pulumi stack init {name}`"
        alone = rules.load_stack_file(path)
        assert undeclared_keys(project(), alone) == []
        errors = rules.merge_and_validate(project(), name, alone)
        # Alone, a committed file may lack only secrets (which cannot be committed encrypted
        # for every user's passphrase); the runbook must set each of them.
        for e in errors:
            assert "is missing configuration" in e, e
        missing = [k for k, d in rules.project_config(project()).items() if d.get("secret") and f"'{k}'" in "".join(errors)]
        for key in missing:
            full = rules.full_key(project()["name"], key)
            assert built[name].values[full].secure, f"the runbook sets {key} for stack {name} without --secret"


@pytest.mark.parametrize("name", sorted(runbook_stacks()))
def test_runbook_stacks_pass_the_engine_and_the_program(name):
    raw = project()
    stack = runbook_stacks()[name].values
    assert undeclared_keys(raw, stack) == []
    assert rules.merge_and_validate(raw, name, stack) == []
    assert program_errors(raw, stack) == []
    # The same stack without the runbook's optional steps: production without the backend role.
    minimal = {k: v for k, v in stack.items() if k not in runbook_stacks()[name].optional}
    assert rules.merge_and_validate(raw, name, minimal) == []
    assert program_errors(raw, minimal) == []


def test_runbook_builds_the_stacks_it_documents():
    built = runbook_stacks()
    assert {"prod", "dev"} <= set(built)
    password = rules.full_key(project()["name"], "password")
    assert built["dev"].values[password].secure and built["prod"].values[password].secure


def test_dev_stack_reads_the_local_password_file():
    # The dev stack takes the local server's password from the file `make deploy` writes.
    dev = runbook_stacks()["dev"]
    text = RUNBOOK.read_text()
    assert "pulumi config set --secret password < .local/password" in text
    assert rules.full_key(project()["name"], "password") in dev.values


def test_optional_secrets_are_documented_and_not_declared():
    readme = (ROOT / "README.md").read_text()
    decls = rules.project_config(project())
    for key in stack_config.OPTIONAL_SECRETS:
        assert key not in decls
        assert f"`{key}`" in readme and key in RUNBOOK.read_text()
    for key, decl in decls.items():
        if decl.get("secret"):
            assert decl.get("default") is None, f"{key}: a default is merged in as plaintext"


# ---- the checks can fail: each rule against a deliberately broken input -----------------------

def test_rules_catch_what_the_issue_measured():
    raw = copy.deepcopy(project())
    # Before the fix: backendRolePassword declared as a secret without a default.
    raw["config"]["backendRolePassword"] = {"type": "string", "secret": True}
    stack = rules.load_stack_file(ROOT / "Pulumi.dev.yaml")
    assert rules.merge_and_validate(raw, "dev", stack) == [
        "Stack 'dev' is missing configuration values 'backendRolePassword' and 'password'"]
    prod = {k: v for k, v in runbook_stacks()["prod"].values.items() if "backendRole" not in k}
    assert rules.merge_and_validate(raw, "prod", prod) == ["Stack 'prod' is missing configuration value 'backendRolePassword'"]


def test_rules_catch_plaintext_secrets_merged_defaults_and_types():
    raw = copy.deepcopy(project())
    stack = dict(runbook_stacks()["prod"].values)
    name = raw["name"]
    plaintext = {**stack, f"{name}:password": rules.StackValue("hunter2")}
    assert rules.merge_and_validate(raw, "prod", plaintext) == ["Stack 'prod' with configuration key 'password' must be encrypted as it's secret"]
    raw_default = copy.deepcopy(raw)
    raw_default["config"]["password"]["default"] = ""
    without = {k: v for k, v in stack.items() if k != f"{name}:password"}
    assert rules.merge_and_validate(raw_default, "prod", without) == ["Stack 'prod' with configuration key 'password' must be encrypted as it's secret"]
    bad_types = {**stack, f"{name}:port": rules.StackValue("5432x"), f"{name}:protect": rules.StackValue("yes")}
    assert rules.merge_and_validate(raw, "prod", bad_types) == [
        "Stack 'prod' with configuration key 'port' must be of type 'integer'",
        "Stack 'prod' with configuration key 'protect' must be of type 'boolean'"]
    assert undeclared_keys(raw, {**stack, f"{name}:hots": rules.StackValue("h")}) == [f"{name}:hots"]


def test_rules_catch_a_bad_project_file():
    raw = copy.deepcopy(project())
    raw["runtime"] = 3
    raw["config"]["port"]["type"] = "int"
    raw["config"]["protect"]["default"] = "maybe"
    errors = rules.validate_project(raw)
    assert any(e.startswith("#/runtime:") for e in errors), errors
    assert "#/config/port/type: 'int' is not one of ['string', 'integer', 'boolean', 'array', 'object']" in errors
    raw["runtime"] = "python"
    raw["config"]["port"]["type"] = "integer"
    assert rules.validate_project(raw) == ["The default value specified for configuration key 'protect' is not of the expected type 'boolean'"]
    assert rules.validate_project({"runtime": "python"}) == ["project is missing a non-empty string 'name' attribute"]


def test_runbook_parser_reads_prompts_pipes_and_files():
    text = "\n".join([
        "```sh",
        "pulumi stack init demo --secrets-provider passphrase",
        "pulumi config set host h   # a comment",
        "pulumi config set --secret password",
        "cat f | pulumi config set --secret backendRolePassword",
        "pulumi config set port 1 && pulumi config set -s other target postgres",
        "```",
        "```text",
        "pulumi config set ignored x",
        "```",
    ])
    built = rules.runbook_stacks(text, "p", ROOT)
    assert built["demo"].values == {"p:host": rules.StackValue("h"), "p:password": rules.StackValue(None, True),
                                    "p:backendRolePassword": rules.StackValue(None, True), "p:port": rules.StackValue("1")}
    assert built["other"].values == {"p:target": rules.StackValue("postgres")}
