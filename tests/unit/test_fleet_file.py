"""fleet.yaml as the operator writes it: the issue's example loads into stacks and waves; every
mistake is refused with one line (exit 2) naming the key path and never the value; a secret
written into the file is refused before anything else; secrets come only from a variable or an
owner-only file, byte for byte; and the release digest follows the tree's content, nothing else."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from x402db import ROOT
from x402db.errors import USAGE_EXIT
from x402db.fleet import release, schema
from x402db.fleet.fleetfile import FleetConfigError, SecretSource, load

SECRET = "Tr0ub4dor-and-3-horses"  # never in any message


def write_secret(path, content=SECRET, mode=0o600):
    path.write_text(content)
    path.chmod(mode)
    return path


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The issue's fleet, with real secret files (0600) and a variable."""
    monkeypatch.setenv("STAGING_DB_PASSWORD", SECRET)
    write_secret(tmp_path / "prod-us.password")
    write_secret(tmp_path / "tenant-a.password")
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"""\
version: 1
defaults: {{target: supabase, port: 5432, database: postgres, username: postgres, sslmode: require}}
targets:
  staging: {{host: db.abc.supabase.co, password: {{env: STAGING_DB_PASSWORD}}}}
  prod-us: {{host: db.def.supabase.co, password: {{file: {tmp_path}/prod-us.password}}, labels: {{tier: prod}}}}
  tenant-a: {{host: pg1.internal.example, database: tenant_a, target: postgres, password: {{file: tenant-a.password}},
             labels: {{tier: prod}}}}
waves:
  - {{name: staging, targets: [staging], evidence: true}}
  - {{name: canary, targets: [prod-us]}}
  - {{name: prod, select: {{tier: prod}}, parallel: 4, maxPerHost: 2, maxFailures: 0, requires: {{promotedFrom: staging}}}}
lockGate: {{maxRows: 100000}}
"""
    )
    return path


def doc(example_path):
    return yaml.safe_load(example_path.read_text())


def refused(path, *, project_dir=ROOT) -> str:
    """The one line load() refuses `path` with."""
    with pytest.raises(FleetConfigError) as info:
        load(path, project_dir).check_secrets()
    message = str(info.value)
    assert info.value.exit_code == USAGE_EXIT
    assert "\n" not in message and SECRET not in message, message
    return message


def rewrite(path, change) -> str:
    data = doc(path)
    change(data)
    path.write_text(yaml.safe_dump(data))
    return refused(path)


def test_the_issues_example_loads_into_stacks_and_waves(example):
    fleet = load(example)
    staging, prod_us, tenant = (fleet.targets[n] for n in ("staging", "prod-us", "tenant-a"))
    # Every config value as `pulumi config set` takes it; the defaults under each target's own keys.
    assert tenant.config == {
        "target": "postgres",
        "port": "5432",
        "database": "tenant_a",
        "username": "postgres",
        "sslmode": "require",
        "host": "pg1.internal.example",
    }
    assert (tenant.kind, tenant.endpoint, tenant.database, tenant.username) == (
        "postgres",
        ("pg1.internal.example", 5432),
        "tenant_a",
        "postgres",
    )
    assert staging.kind == "supabase" and staging.endpoint == ("db.abc.supabase.co", 5432)
    assert "password" not in staging.config and tenant.labels == {"tier": "prod"} and staging.labels == {}
    assert staging.secrets == {"password": SecretSource("password", "env", "STAGING_DB_PASSWORD", "staging")}
    # A relative file is found next to fleet.yaml, wherever the command runs.
    assert tenant.secrets["password"].ref == str(example.parent / "tenant-a.password")
    assert [s.read() for t in fleet.targets.values() for s in t.secrets.values()] == [SECRET] * 3
    fleet.check_secrets()
    staging_wave, canary, prod = fleet.waves
    assert (staging_wave.evidence, staging_wave.targets, canary.evidence) == (True, ("staging",), False)
    assert (prod.select, prod.parallel, prod.max_per_host, prod.max_failures) == ({"tier": "prod"}, 4, 2, 0)
    assert (prod.promoted_from, canary.promoted_from, canary.parallel, canary.max_per_host) == (
        "staging",
        None,
        1,
        None,
    )
    assert fleet.lock_gate.max_rows == 100000


def test_a_select_skips_targets_an_earlier_wave_has(example):
    fleet = load(example)
    # prod-us went in the canary, so prod selects only tenant-a of the two tier: prod targets.
    assert [(w.name, names) for w, names in fleet.wave_targets()] == [
        ("staging", ["staging"]),
        ("canary", ["prod-us"]),
        ("prod", ["tenant-a"]),
    ]
    data = doc(example)
    data["waves"][1] = {"name": "canary", "select": {"tier": "prod"}}  # both, in fleet-file order
    data["targets"]["staging"]["labels"] = {"tier": "prod"}
    data["waves"].append({"name": "rest", "select": {"tier": "prod"}})
    data.pop("lockGate")
    example.write_text(yaml.safe_dump(data, sort_keys=False))
    fleet = load(example)
    assert fleet.lock_gate.max_rows is None
    assert [names for _, names in fleet.wave_targets()] == [["staging"], ["prod-us", "tenant-a"], [], []]


def test_the_stack_config_keys_are_pulumi_yamls(example, tmp_path):
    """A key Pulumi.yaml gains is a key a target may carry, typed as declared; a declared secret is
    a secret whatever its name; a key the fleet writes itself is not the operator's."""
    project = tmp_path / "project"
    project.mkdir()
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    declared["config"]["replicas"] = {"type": "integer", "default": 1}
    declared["config"]["adminDsn"] = {"type": "string", "secret": True}
    declared["config"]["fleetEvidence"] = {"type": "string", "default": ""}
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(declared))
    data = doc(example)
    data["targets"]["staging"]["replicas"] = 3
    data["targets"]["staging"]["adminDsn"] = {"env": "STAGING_DB_PASSWORD"}
    for target in data["targets"].values():
        target.setdefault("adminDsn", {"env": "STAGING_DB_PASSWORD"})  # declared without default: required
    example.write_text(yaml.safe_dump(data))
    staging = load(example, project).targets["staging"]
    assert staging.config["replicas"] == "3" and set(staging.secrets) == {"password", "adminDsn"}
    with pytest.raises(FleetConfigError, match=r"\.(replicas|adminDsn) is not a known key"):
        load(example)  # the real Pulumi.yaml declares no such key
    data["targets"]["staging"]["adminDsn"] = SECRET
    example.write_text(yaml.safe_dump(data))
    assert refused(example, project_dir=project).endswith("targets.staging.adminDsn is a literal value; " + FORM)
    data["targets"]["staging"]["adminDsn"] = {"env": "X"}
    data["targets"]["staging"]["fleetEvidence"] = "{}"
    example.write_text(yaml.safe_dump(data))
    assert "targets.staging.fleetEvidence is not a known key" in refused(example, project_dir=project)


FORM = "give {env: NAME} or {file: PATH}"


# A secret written into the file, anywhere: refused with its key path, and first, even when the
# rest of the file is wrong too.
@pytest.mark.parametrize(
    "where,put",
    [
        ("targets.staging.password", lambda d: d["targets"]["staging"].update(password=SECRET)),
        ("defaults.password", lambda d: d["defaults"].update(password=SECRET)),
        ("targets.staging.backendRolePassword", lambda d: d["targets"]["staging"].update(backendRolePassword=SECRET)),
        ("targets.prod-us.labels.apiKey", lambda d: d["targets"]["prod-us"]["labels"].update(apiKey=SECRET)),
        ("targets.prod-us.labels.api_key", lambda d: d["targets"]["prod-us"]["labels"].update(api_key=SECRET)),
        ("targets.staging.privateKey", lambda d: d["targets"]["staging"].update(privateKey=SECRET)),
        ("waves[0].token", lambda d: d["waves"][0].update(token=SECRET)),
        ("waves[2].select.passphrase", lambda d: d["waves"][2]["select"].update(passphrase=SECRET)),
        ("lockGate.secret", lambda d: d["lockGate"].update(secret=SECRET)),
        ("targets.staging.password", lambda d: d["targets"]["staging"].update(password={"value": SECRET})),
        ("targets.staging.password", lambda d: d["targets"]["staging"].update(password=[SECRET])),
        ("targets.staging.password", lambda d: d["targets"]["staging"].update(password={"env": [SECRET]})),
    ],
)
def test_a_literal_secret_is_refused_first_and_never_echoed(example, where, put):
    def change(d):
        put(d)
        d["version"] = 7
        d["bogus"] = True
        d["targets"]["staging"]["hots"] = "x"

    assert rewrite(example, change) == f"{example}: {where} is a literal value; {FORM}"


@pytest.mark.parametrize(
    "value", [f"postgresql://postgres:{SECRET}@db.abc.supabase.co/postgres", f"host=db port=5432 password={SECRET}"]
)
def test_a_password_inside_a_value_is_refused(example, value):
    message = rewrite(example, lambda d: d["targets"]["staging"].update(host=value))
    assert message == f"{example}: targets.staging.host holds a password inside its value; {FORM}"


def test_only_names_that_look_secret_are_taken_for_secrets():
    fleet_keys = {*schema.TOP_KEYS, *schema.WAVE_KEYS, *schema.REQUIRES_KEYS, *schema.LOCK_GATE_KEYS}
    plain = fleet_keys | {"labels", "tier", "region", "name", "env", "file"} | set(schema.declared(ROOT).keys)
    plain -= {"password", "backendRolePassword"}
    assert [k for k in sorted(plain) if schema.looks_secret(k)] == []
    secret = ["password", "PASSWORD", "dbPassword", "passphrase", "clientSecret", "authToken", "apikey", "api_key"]
    secret += ["privateKey", "ssh-key", "credentials", "pwd", "pass", "pw", "backendRolePassword"]
    assert [k for k in secret if not schema.looks_secret(k)] == []


def _set(*keys, value):
    def change(d):
        for key in keys[:-1]:
            d = d[key]
        d[keys[-1]] = value

    return change


def _drop(*keys):
    def change(d):
        for key in keys[:-1]:
            d = d[key]
        del d[keys[-1]]

    return change


# Every refusal of the design, each with the key path it must name. None of these values is a
# secret, yet none is repeated: what was typed in the wrong place could be one.
REFUSALS = [
    (_set("version", value=2), "version must be 1"),
    (_set("version", value=True), "version must be 1"),
    (_drop("waves"), "waves is required"),
    (_set("extra", value=1), "extra is not a known key"),
    (_set("defaults", "hots", value="h"), "defaults.hots is not a known key; did you mean host?"),
    (_set("defaults", "labels", value={}), "defaults.labels is not a known key"),
    (_set("targets", "prod-us", "hots", value="h"), "targets.prod-us.hots is not a known key; did you mean host?"),
    (_set("waves", 0, "paralel", value=2), "waves[0].paralel is not a known key; did you mean parallel?"),
    (_set("waves", 2, "requires", "promoted", value="x"), "waves[2].requires.promoted is not a known key"),
    (_set("lockGate", "rows", value=1), "lockGate.rows is not a known key"),
    (_set("targets", "bad name", value={}), "targets.'bad name' is not a stack name"),
    (_set("targets", "two\nlines", value={}), "targets.'two\\nlines' is not a stack name"),
    (_set("targets", value={}), "targets is empty"),
    (_set("waves", value=[]), "waves must be a list of at least one wave"),
    (_set("waves", 1, "targets", value=["prod-uss"]), "waves[1].targets[0] is not a target under targets"),
    (_set("waves", 1, "targets", value=["prod-us", "prod-us"]), "waves[1].targets[1] repeats an earlier entry"),
    (_set("waves", 1, "targets", value=["staging"]), "target staging is in wave staging and in wave canary"),
    # A target an earlier select took cannot be listed again either: it would roll out twice.
    (_set("waves", 0, value={"name": "staging", "select": {"tier": "prod"}}), "target prod-us is in wave staging and"),
    (_set("waves", 1, "select", value={"tier": "prod"}), "waves[1] needs targets or select, exactly one of the two"),
    (_drop("waves", 1, "targets"), "waves[1] needs targets or select, exactly one of the two"),
    (_set("waves", 2, "select", value={}), "waves[2].select is empty"),
    (_set("waves", 2, "requires", "promotedFrom", value="nope"), "waves[2].requires.promotedFrom names no wave"),
    (_set("waves", 0, "requires", value={"promotedFrom": "prod"}), "waves[0].requires.promotedFrom names a later"),
    (_set("waves", 2, "requires", value={"promotedFrom": "prod"}), "waves[2].requires.promotedFrom names a later"),
    (_set("waves", 1, "name", value="staging"), "waves[1].name repeats the name of waves[0]"),
    (_drop("waves", 1, "name"), "waves[1].name is required"),
    (_set("waves", 2, "parallel", value=0), "waves[2].parallel must be a whole number of at least 1"),
    (_set("waves", 2, "parallel", value=True), "waves[2].parallel must be a whole number of at least 1"),
    (_set("waves", 2, "parallel", value="4"), "waves[2].parallel must be a whole number of at least 1"),
    (_set("waves", 2, "maxPerHost", value=0), "waves[2].maxPerHost must be a whole number of at least 1"),
    (_set("waves", 2, "maxFailures", value=-1), "waves[2].maxFailures must be a whole number of at least 0"),
    (_set("waves", 0, "evidence", value="yes"), "waves[0].evidence must be true or false"),
    (_set("lockGate", "maxRows", value=0), "lockGate.maxRows must be a whole number of at least 1"),
    (_set("lockGate", "maxRows", value=1.5), "lockGate.maxRows must be a whole number of at least 1"),
    (_set("lockGate", value={}), "lockGate.maxRows is required"),
    (_drop("targets", "staging", "password"), f"targets.staging.password is required; {FORM}"),
    (_set("targets", "staging", "password", value=None), f"targets.staging.password is required; {FORM}"),
    (_drop("targets", "staging", "host"), "targets.staging.host is required"),
    (
        _set("targets", "staging", "password", value={"env": "A", "file": "b"}),
        "targets.staging.password must be one of",
    ),
    (_set("targets", "staging", "password", value={"env": ""}), "targets.staging.password must be one of"),
    (_set("targets", "staging", "password", value={"env": "A B"}), "targets.staging.password.env must be a"),
    (_set("defaults", "port", value=6543), "defaults.port: port 6543 is"),
    (_set("targets", "staging", "port", value=6543), "targets.staging.port: port 6543 is"),
    (_set("targets", "staging", "port", value="abc"), "targets.staging.port must be a whole number"),
    (_set("targets", "staging", "port", value=70000), "targets.staging.port must be from 1 to 65535"),
    (_set("targets", "staging", "superuser", value="maybe"), "targets.staging.superuser must be true or false"),
    (_set("targets", "staging", "database", value=10), "targets.staging.database must be a string; quote it"),
    (_set("targets", "staging", "labels", value={"tier": 1}), "targets.staging.labels.tier must be text"),
    (_set("targets", "staging", value="db.abc"), "targets.staging must be a mapping"),
]


@pytest.mark.parametrize("change,expected", REFUSALS, ids=[e for _, e in REFUSALS])
def test_every_mistake_is_one_line_naming_its_key_path(example, change, expected):
    message = rewrite(example, change)
    assert message.startswith(f"{example}: {expected}"), message
    for echoed in ("prod-uss", "abc", "maybe", "70000", "db.abc", "paralel\n"):
        assert echoed not in message.replace(str(example), "").replace("db.abc.supabase", ""), message


def test_values_take_the_form_pulumi_config_set_takes(example):
    data = doc(example)
    data["targets"]["staging"].update(port="5433", superuser=False, protect="TRUE", lockTimeout="2s")
    example.write_text(yaml.safe_dump(data))
    config = load(example).targets["staging"].config
    assert (config["port"], config["superuser"], config["protect"], config["lockTimeout"]) == (
        "5433",
        "false",
        "true",
        "2s",
    )


@pytest.mark.parametrize(
    "text,expected",
    [
        ("version: 1\ntargets: {a: {host: h}\n", "not valid YAML at line 3, column 1: a syntax error"),
        ("version: 1\n\tx: 1\n", "not valid YAML at line 2, column 1: a syntax error"),
        ("version: 1\nwaves: []\nversion: 1\n", "not valid YAML at line 3, column 1: a key given twice"),
        (f"version: 1\ntargets: *{SECRET}\n", "not valid YAML at line 2, column 10: a syntax error"),
        ("- 1\n", "the file must be a mapping"),
        ("", "the file must be a mapping"),
    ],
)
def test_a_file_that_is_not_a_fleet_is_one_line(tmp_path, text, expected):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    assert refused(path) == f"{path}: {expected}"


def test_a_missing_file_names_the_option(tmp_path):
    assert refused(tmp_path / "fleet.yaml") == f"{tmp_path / 'fleet.yaml'}: no such file; pass --fleet FILE"


# -- secret sources: read at use, checked like ssh checks a private key -----------------------


def test_a_secret_file_must_be_private_and_exact(tmp_path):
    source = SecretSource("password", "file", str(tmp_path / "pw"), "prod-us")
    for content, mode, problem in [
        (SECRET, 0o644, "has mode 644, readable by others; chmod 600 it"),
        (SECRET, 0o640, "has mode 640"),
        (SECRET + "\n", 0o600, "starts or ends with whitespace (a final newline too); write it with printf '%s'"),
        (" " + SECRET, 0o400, "starts or ends with whitespace"),
        ("", 0o600, "the file is empty"),
    ]:
        write_secret(tmp_path / "pw", content, mode)
        with pytest.raises(FleetConfigError) as info:
            source.read()
        message = str(info.value)
        assert message.startswith(f"target prod-us: password from {tmp_path / 'pw'}: ") and problem in message
        assert SECRET not in message and "\n" not in message
    write_secret(tmp_path / "pw", SECRET, 0o400)
    assert source.read() == SECRET


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "other owner"])
def test_a_secret_path_that_is_no_private_file_is_refused(tmp_path, kind):
    path = tmp_path / "pw"
    if kind == "directory":
        path.mkdir(mode=0o700)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "other owner":
        if os.geteuid() != 0:
            pytest.skip("only root can give a file to another user")
        write_secret(path)
        os.chown(path, 1, -1)
    with pytest.raises(FleetConfigError) as info:
        SecretSource("password", "file", str(path), "t").read()
    expected = {
        "missing": "cannot open the file (No such file or directory)",
        "directory": "is not a regular file",
        "fifo": "is not a regular file",
        "other owner": "belongs to uid 1, not to you",
    }[kind]
    assert str(info.value).startswith(f"target t: password from {path}: ") and expected in str(info.value)


def test_a_secret_file_under_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_secret(tmp_path / "pw")
    assert SecretSource("password", "file", "~/pw", "t").read() == SECRET


def test_a_secret_variable_must_be_set_and_exact(monkeypatch):
    source = SecretSource("password", "env", "FLEET_TEST_PW", "staging")
    monkeypatch.delenv("FLEET_TEST_PW", raising=False)
    for value in (None, "", SECRET + "\n"):
        if value is not None:
            monkeypatch.setenv("FLEET_TEST_PW", value)
        with pytest.raises(FleetConfigError) as info:
            source.read()
        assert str(info.value).startswith("target staging: password from $FLEET_TEST_PW: ")
        assert SECRET not in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("FLEET_TEST_PW", SECRET)
    assert source.read() == SECRET


def test_check_secrets_names_the_target_whose_secret_is_missing(example, monkeypatch):
    monkeypatch.delenv("STAGING_DB_PASSWORD")
    assert refused(example) == (
        "target staging: password from $STAGING_DB_PASSWORD: the variable is not set or empty; export it before running"
    )
    monkeypatch.setenv("STAGING_DB_PASSWORD", SECRET)
    (example.parent / "tenant-a.password").chmod(0o644)
    assert "target tenant-a: password from" in refused(example)


# -- the release digest -----------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    """A copy of what the release covers, as another checkout would hold it."""
    root = tmp_path / "tree"
    for name in ("sql", "x402db"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    return root


def test_the_release_follows_the_content_and_nothing_else(tree, tmp_path):
    first = release.digest(tree)
    assert len(first) == 16 and int(first, 16) >= 0
    # Another copy, made later (other mtimes, another absolute path), with interpreter caches.
    other = tmp_path / "elsewhere" / "tree"
    shutil.copytree(tree, other)
    (other / "x402db" / "__pycache__").mkdir()
    (other / "x402db" / "__pycache__" / "db.cpython-311.pyc").write_bytes(b"\0")
    # The interpreter writes a cache under a temporary name, then renames it.
    (other / "x402db" / "__pycache__" / "db.cpython-311.pyc.140234").write_bytes(b"\0")
    (other / "x402db" / "stray.pyc").write_bytes(b"\0")
    os.utime(other / "Pulumi.yaml", (0, 0))
    assert release.digest(other) == first
    assert (
        "x402db/migrate/shipped_downs.json" in release.files(tree)
        or not (ROOT / "x402db/migrate/shipped_downs.json").exists()
    )
    for rel in (next(p for p in sorted(release.files(tree)) if p.startswith("sql/")), "x402db/db.py", "Pulumi.yaml"):
        path = other / rel
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        assert release.digest(other) != first, rel
        path.write_bytes(original)
        assert release.digest(other) == first
    (other / "sql" / "new.sql").write_text("")
    assert release.digest(other) != first  # even an empty file is part of the release
