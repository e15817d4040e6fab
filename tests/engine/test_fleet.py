"""`scripts/fleet.py` against real servers and the real Pulumi CLI: N databases on the embedded 18
and the system 15 at once, each a stack of a copy of the project, rolled out in waves. Every run
is watched from outside (tests/utils/fleet.py): no password on any process's command line, and
the `pulumi up`s that really ran at once, overall and per server. Assertions read the run's JSON,
its exit code, the stacks and the databases themselves; nothing is mocked.

Few runs, each checking much: a fleet run costs a plan, two previews, an up and a smoke per
target."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
import yaml

from tests.utils.fleet import ENV_SECRET, FleetLab, Run, descendants, kill_tree
from tests.utils.tty import run_in_pty
from x402db.fleet import fleetfile
from x402db.local.server import _free_port

RESULTS = {"ok", "failed", "refused", "unreachable", "skipped"}
WAVE_STATUSES = {"ok", "failed", "refused", "skipped"}


@pytest.fixture
def lab(pulumi_tools, both_servers):
    lab = FleetLab(pulumi_tools, both_servers)
    yield lab
    lab.cleanup()


# --- reading a run --------------------------------------------------------------------------------


def shaped(run: Run) -> dict:
    """The run's document, checked against the shape the issue fixes; the document."""
    doc = run.doc
    assert isinstance(doc, dict), f"no JSON document on stdout: {run}"
    assert doc.get("result") in ("ok", "failed"), run
    assert isinstance(doc.get("release"), str) and doc["release"], run
    assert isinstance(doc.get("waves"), list), run
    for wave in doc["waves"]:
        assert isinstance(wave.get("name"), str) and wave.get("status") in WAVE_STATUSES, wave
        for t in wave["targets"]:
            assert t.get("result") in RESULTS, t
            assert {"name", "reason", "phases", "ledger"} <= set(t), t
            assert all(set(e) >= {"version", "state"} for e in t["ledger"]), t
    assert (run.rc == 0) == (doc["result"] == "ok"), run
    assert "Traceback" not in run.stderr, run
    return doc


def waves(run: Run) -> dict[str, str]:
    return {w["name"]: w["status"] for w in shaped(run)["waves"]}


def results(run: Run) -> dict[str, str]:
    return {t["name"]: t["result"] for w in shaped(run)["waves"] for t in w["targets"]}


def agrees_with_database(lab: FleetLab, record: dict) -> None:
    """A target's ledger in the JSON says what its database's ledger holds."""
    said = {e["version"]: e["state"] for e in record["ledger"]}
    held = dict(lab.ledger(record["name"]))
    assert {v: said.get(v) for v in held} == held, (record["name"], said, held)
    assert all(s != "applied" for v, s in said.items() if v not in held), (record["name"], said, held)


def all_applied(lab: FleetLab, name: str) -> None:
    ledger = lab.ledger(name)
    assert ledger and all(state == "applied" for _, state in ledger), (name, ledger)
    assert "005" in dict(ledger), (name, ledger)


def unchanged(lab: FleetLab, before: dict[str, str], snapshot=FleetLab.snapshot) -> None:
    """Each named database is as it was (schema and ledger); the message names those that are not."""
    changed = {}
    for name, was in before.items():
        now = snapshot(lab, name)
        if now != was:
            diff = difflib.unified_diff(was.splitlines(), now.splitlines(), lineterm="", n=1)
            changed[name] = "\n".join(list(diff)[:40])
    assert not changed, "\n".join(f"{n} changed:\n{d}" for n, d in changed.items())


def one_line_refusal(run: Run, *secrets: str) -> str:
    assert run.rc == 2, run
    out = run.stdout + run.stderr
    assert "Traceback" not in out, run
    for secret in secrets:
        assert secret not in out, "the refusal echoed a secret"
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run
    return lines[0]


# --- the lab itself -------------------------------------------------------------------------------


def test_the_lab_builds_databases_on_both_servers_and_its_watcher_sees_every_command_line(lab):
    """What the scenarios below rely on, proved without the fleet: four databases on the two
    servers, a fleet.yaml without a secret, a watcher that catches a password on any command line
    and reads `--stack` from a `pulumi up`, a kill of a whole process tree, 200k rows and a
    rewrite the planner calls one."""
    lab.add("s18", "pg18", labels={"tier": "prod"})
    lab.add("p18", "pg18", kind="postgres")
    lab.add("s15", "pg15", from_env=True)
    lab.add("p15", "pg15", kind="postgres")
    fleet = lab.write([{"name": "all", "targets": list(lab.targets), "parallel": 2, "maxPerHost": 1}])
    text = fleet.read_text()
    doc = yaml.safe_load(text)
    assert doc["version"] == 1 and set(doc["targets"]) == {"s18", "p18", "s15", "p15"}
    assert all(p not in text for p in lab.passwords()) and len(set(lab.passwords())) == 2
    ports = {t["port"] for t in doc["targets"].values()}
    assert ports == {lab.servers["pg18"].port(), lab.servers["pg15"].port()}
    assert doc["targets"]["s15"]["password"] == {"env": ENV_SECRET}
    assert ENV_SECRET not in os.environ and lab.env()[ENV_SECRET] == lab.servers["pg15"].password
    loaded = fleetfile.load(fleet, lab.dir)  # the file the lab writes is one the fleet accepts
    assert {n: t.endpoint for n, t in loaded.targets.items()} == {
        n: ("127.0.0.1", t.db.server.port()) for n, t in lab.targets.items()
    }
    for name in ("s18", "p18", "p15"):
        path = doc["targets"][name]["password"]["file"]
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert open(path).read() == lab.targets[name].db.server.password
    for t in lab.targets.values():  # the configured role and password connect
        password = open(lab.password_file(t.server_label)).read()
        dsn = psycopg.conninfo.make_conninfo(t.db.dsn, password=password)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == t.db.user

    # The watcher: a password in a process's argv, and a `pulumi up --stack` of this lab's home.
    secret = lab.servers["pg15"].password
    watcher = lab.watcher().start()
    planted = subprocess.Popen([f"--password={secret}", "0.3"], executable=shutil.which("sleep"))
    fake_up = subprocess.Popen(
        ["pulumi", "-c", "import time; time.sleep(0.3)", "up", "--yes", "--stack", "s18"],
        executable=sys.executable,
        env=lab.env(),
    )
    other_home = subprocess.Popen(  # another session's Pulumi: not this lab's
        ["pulumi", "-c", "import time; time.sleep(0.3)", "up", "--stack=org/x/p18"],
        executable=sys.executable,
    )
    for p in (planted, fake_up, other_home):
        p.wait()
    observed = watcher.stop()
    assert observed.leaks and all(secret not in leak for leak in observed.leaks), "the leak was not caught"
    assert any("<password 1>" in leak for leak in observed.leaks)
    assert observed.ups() == {"s18"} and observed.peak() == 1 and observed.peak(["p18"]) == 0

    # A whole tree, killed at one instant.
    tree = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(descendants(tree.pid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    killed = kill_tree(tree.pid)
    tree.wait()
    assert len(killed) == 3
    # SIGKILL is delivered, not executed, by kill(2): a stopped child dies when it is next scheduled.
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in killed):
        assert time.monotonic() < deadline, [p for p in killed if _alive(p)]
        time.sleep(0.01)

    # The stoppable server is the lab's own.
    own = lab.extra_server()
    dead = lab.add("dead", own)
    lab.stop_server(own)
    with pytest.raises(psycopg.OperationalError):
        dead.db.query("SELECT 1")
    lab.start_server(own)
    assert dead.db.query("SELECT 1") == [(1,)]

    # 200k rows, and the test-only migration planned as a rewrite of that table.
    assert lab.fill_resources("s18", 200_000) == 200_000
    version = lab.add_rewrite_migration()
    plan = lab.plan("s18")
    steps = [s for m in plan["migrations"] if m["version"] == version for s in m["statements"]]
    rewrite = [s for s in steps if s["effect"] == "rewrite"]
    assert rewrite, steps
    locks = {lock["relation"]: lock for s in rewrite for lock in s["locks"]}
    assert locks["public.x402_resources"]["mode"] == "AccessExclusiveLock"
    assert locks["public.x402_resources"]["rows_estimate"] >= 190_000


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- a fleet that succeeds -----------------------------------------------------------------------

PROD = {"tier": "prod"}


def test_a_fleet_rolls_out_in_waves_within_its_caps(lab):
    """Staging, a canary and prod over both servers, within the caps, prod promoted on staging's
    evidence for this release; then a new release finds prod refused while staging is down."""
    lab.add("staging", "pg18")
    lab.add("canary", "pg15", kind="postgres", labels=PROD)
    for name, server, kind in (("p1", "pg18", "supabase"), ("p2", "pg18", "postgres"), ("p3", "pg18", "supabase")):
        lab.add(name, server, kind=kind, labels=PROD)
    lab.add("p4", "pg15", labels=PROD, from_env=True)
    waves_spec = [
        {"name": "staging", "targets": ["staging"], "evidence": True},
        {"name": "canary", "targets": ["canary"]},
        # canary carries the prod label too: a target already in a wave that ran is not selected again
        {"name": "prod", "select": PROD, "parallel": 3, "maxPerHost": 2, "requires": {"promotedFrom": "staging"}},
    ]

    # A literal password anywhere: exit 2 from every subcommand, before anything connects.
    literal = lab.servers["pg18"].password
    bad = lab.write(waves_spec, path=lab.project.base / "bad.yaml")
    doc = yaml.safe_load(bad.read_text())
    doc["targets"]["p1"]["password"] = literal
    bad.write_text(yaml.safe_dump(doc))
    for sub in ("validate", "plan", "up", "status"):
        line = one_line_refusal(lab.run(sub, bad, *(["--yes"] if sub == "up" else [])), literal)
        assert "p1" in line and "password" in line, line
    assert lab.stacks() == [] and all(lab.ledger(n) == [] for n in lab.targets)

    fleet = lab.write(waves_spec)
    assert lab.run("validate", fleet).rc == 0
    run = lab.run("up", fleet, "--yes")
    assert run.rc == 0, run
    assert waves(run) == {"staging": "ok", "canary": "ok", "prod": "ok"}, run
    by_wave = {w["name"]: [t["name"] for t in w["targets"]] for w in run.doc["waves"]}
    assert by_wave == {"staging": ["staging"], "canary": ["canary"], "prod": ["p1", "p2", "p3", "p4"]}, by_wave
    for record in run.targets().values():
        assert record["result"] == "ok", record
        agrees_with_database(lab, record)
        all_applied(lab, record["name"])

    # Concurrency, as the process table showed it: within the caps, and more than one at once.
    seen = run.observed
    assert seen.ups() >= set(lab.targets), seen.ups()
    on18 = ["staging", "p1", "p2", "p3"]
    assert seen.peak(on18) <= 2 and seen.peak(["canary", "p4"]) <= 2, (seen.peak(on18), seen.peak())
    assert 2 <= seen.peak() <= 3, seen.peak()
    assert seen.peak(["staging", "canary"]) == 1, "waves overlapped"
    assert lab.leaks() == [], lab.leaks()

    # Evidence: staging's stack holds this release and smoke's verdict.
    release = run.doc["release"]
    evidence = lab.stack_output("staging").get("fleetEvidence")
    assert isinstance(evidence, dict) and evidence.get("release") == release, evidence
    assert "smoke" in evidence and any(k in evidence for k in ("time", "at", "recordedAt")), evidence
    assert lab.leaks() == [], lab.leaks()

    # A new release while staging is down: staging's evidence is for the old one, so prod is
    # refused (not skipped by a halt: staging tolerates its failure here) before it is even
    # previewed, and changes nothing.
    sql = lab.dir / "sql"
    (sql / "901_fleet_test_comment.up.sql").write_text("COMMENT ON TABLE public.x402_resources IS 'fleet test';\n")
    (sql / "901_fleet_test_comment.down.sql").write_text("COMMENT ON TABLE public.x402_resources IS NULL;\n")
    down = [{**waves_spec[0], "maxFailures": 1}, waves_spec[2]]
    path = lab.write(down, path=lab.project.base / "staging-down.yaml")
    doc = yaml.safe_load(path.read_text())
    doc["targets"]["staging"]["port"] = _free_port()  # nothing listens there
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    prod = sorted(set(lab.targets) - {"staging"})
    before = {n: lab.snapshot(n) for n in prod}
    again = lab.run("up", path, "--yes")
    assert again.rc == 1 and again.doc["release"] != release, again
    assert waves(again) == {"staging": "failed", "prod": "refused"}, again
    assert results(again)["staging"] == "unreachable", again
    assert all(results(again)[n] == "refused" and "staging" in again.targets()[n]["reason"] for n in prod), again
    assert not any(again.targets()[n].get("phases", {}).get("preview") for n in prod), "a refused wave was previewed"
    assert again.observed.ups() == set(), again.observed.ups()
    unchanged(lab, before)
    assert all("901" not in dict(lab.ledger(n)) for n in prod)
    assert lab.leaks() == [], lab.leaks()


# --- failures halt -------------------------------------------------------------------------------


def test_a_held_lock_fails_its_target_and_a_stopped_server_halts_the_wave(lab):
    """canary tolerates one failure: a target whose x402_resources another session holds fails
    (rolled back, 005 still pending) while its neighbour succeeds. prod tolerates none: its first
    target's server is down, so it is unreachable, no other target of the wave starts, and the
    wave after it is skipped; none of their databases changes."""
    lab.add("locked", "pg15", lockTimeout="100ms")
    lab.add("fine", "pg18")
    own = lab.extra_server()
    lab.add("dead", own)
    lab.add("held-back", "pg18", kind="postgres")
    lab.add("late", "pg15", kind="postgres")
    fleet = lab.write(
        [
            {"name": "canary", "targets": ["locked", "fine"], "parallel": 2, "maxFailures": 1},
            {"name": "prod", "targets": ["dead", "held-back"], "parallel": 1, "maxFailures": 0},
            {"name": "later", "targets": ["late"]},
        ]
    )
    lab.stop_server(own)
    untouched = {n: lab.snapshot(n) for n in ("held-back", "late")}
    rolled_back = {"locked": lab.product_snapshot("locked")}
    with psycopg.connect(lab.targets["locked"].db.admin) as holder:
        holder.execute("LOCK TABLE public.x402_resources IN ACCESS SHARE MODE")  # a long read, say
        run = lab.run("up", fleet, "--yes")
        holder.rollback()
    assert run.rc == 1, run
    assert results(run) == {
        "locked": "failed",
        "fine": "ok",
        "dead": "unreachable",
        "held-back": "skipped",
        "late": "skipped",
    }, run
    assert waves(run) == {"canary": "failed", "prod": "failed", "later": "skipped"}, run
    unchanged(lab, untouched)
    unchanged(lab, rolled_back, FleetLab.product_snapshot)
    assert lab.ledger("locked") == [] and lab.ledger("held-back") == [] and lab.ledger("late") == []
    all_applied(lab, "fine")
    records = run.targets()
    assert records["locked"]["reason"] and records["dead"]["reason"], records
    agrees_with_database(lab, records["locked"])
    assert "held-back" not in run.observed.ups() and "late" not in run.observed.ups(), run.observed.ups()
    assert lab.leaks() == [], lab.leaks()


# --- the lock gate ---------------------------------------------------------------------------------


def test_the_lock_gate_refuses_a_wave_that_would_rewrite_a_large_table_before_any_change(lab):
    lab.add("big", "pg18")
    lab.add("small", "pg15")
    assert lab.fill_resources("big", 200_000) == 200_000
    lab.add_rewrite_migration()
    fleet = lab.write([{"name": "prod", "targets": ["big", "small"], "parallel": 2}], lock_gate=100_000)
    before = {n: lab.snapshot(n) for n in lab.targets}
    run = lab.run("up", fleet, "--yes")
    assert run.rc == 1, run
    assert waves(run) == {"prod": "refused"}, run
    assert set(results(run).values()) <= {"refused", "skipped"} and results(run)["big"] == "refused", run
    # The refusal names the target, the statement, the table and its rows (an estimate: about 200k).
    said = run.targets()["big"]["reason"] + run.stdout + run.stderr
    numbers = [int(n.replace(",", "").replace("_", "")) for n in re.findall(r"\d[\d,_]*\d", said)]
    assert "big" in said and "x402_resources" in said and "ALTER" in said.upper(), said
    assert any(150_000 <= n <= 250_000 for n in numbers), said
    unchanged(lab, before)
    assert run.observed.ups() == set(), run.observed.ups()
    assert lab.leaks() == [], lab.leaks()

    # At a terminal: a bar of the targets done under the log lines, then the table and the why.
    env = {k: v for k, v in lab.env().items() if k != "CI"}
    code, shown = run_in_pty([str(lab.dir / "scripts" / "fleet.py"), "up", "--fleet", str(fleet), "--yes"], env)
    assert code == 1, shown
    assert "0/2 [" in shown and "2/2 [" in shown and "target/s" in shown, shown
    assert "refused: 2 (big, small)" in shown and "lock gate" in shown, shown
    unchanged(lab, before)


# --- kill -9 and resume ---------------------------------------------------------------------------


def _normal(doc: Any, names: dict[str, str]) -> Any:
    """A status document with what differs between two equal fleets taken out: the target names
    (mapped to their roles), database names, ports, times and durations (also inside sentences)."""
    if isinstance(doc, dict):
        return {k: _normal(v, names) for k, v in doc.items() if not isinstance(v, float) and k not in VOLATILE}
    if isinstance(doc, list):
        return [_normal(v, names) for v in doc]
    if isinstance(doc, str):
        doc = names.get(doc, doc)
        doc = re.sub(r"\bt_[0-9a-f]{12}\b", "<db>", doc)
        doc = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:?\d\d)?", "<time>", doc)
        doc = re.sub(r"\b\d+(\.\d+)? ?(ms|s|min)\b", "<duration>", doc)
        return re.sub(r"127\.0\.0\.1:\d+", "<endpoint>", doc)
    return doc


VOLATILE = {"seconds", "time", "at", "started", "finished", "duration", "port", "database", "endpoint"}


def test_kill_9_of_the_orchestrator_alone_or_with_its_tree_then_resume_converges(lab):
    """Three kills of one rollout: during the first previews (the whole tree), during staging's
    up (the orchestrator alone: its worker's up runs on), during prod's ups (the whole tree: stack
    locks and pending operations left behind). Then `resume` ends where an uninterrupted run of
    the same fleet ends: same exit code, same ledgers, the same status."""
    roles = [("a", "pg18", "supabase"), ("b", "pg15", "postgres"), ("c", "pg18", "postgres")]
    for prefix in ("r-", "k-"):
        for role, server, kind in roles:
            lab.add(prefix + role, server, kind=kind)

    def fleet(prefix: str):
        return lab.write(
            [
                {"name": "first", "targets": [prefix + "a"], "evidence": True},
                {"name": "rest", "targets": [prefix + "b", prefix + "c"], "parallel": 2},
            ],
            names=[prefix + r for r, _, _ in roles],
            path=lab.project.base / f"{prefix}fleet.yaml",
        )

    reference = lab.run("up", fleet("r-"), "--yes")
    assert reference.rc == 0, reference

    killed_fleet = fleet("k-")
    run = lab.popen("up", killed_fleet, "--yes")
    run.wait_for_up(["k-a"], any_command=True)  # a preview or config: before any up
    run.kill(tree=True)
    run.finish()
    run = lab.popen("up", killed_fleet, "--yes")
    # Mid-up: an up of k-a runs (the stack is locked: a preview takes no lock) and talks to the database.
    run.wait_until(lambda: lab.stack_locked("k-a") and lab.migrating("k-a"), "k-a's up migrating")
    run.kill(tree=False)
    assert "k-a" in _sample(lab, run), "killing the orchestrator killed its worker's pulumi up"
    run.finish()
    run = lab.popen("resume", killed_fleet)
    middle = ["k-b", "k-c"]
    run.wait_until(lambda: any(lab.stack_locked(n) and lab.migrating(n) for n in middle), "k-b or k-c migrating")
    run.kill(tree=True)
    run.finish()
    left = [n for n in middle if lab.stack_locked(n)]
    assert left, "the kill left no stack locked: it missed the ups"
    ok_first = lab.targets["k-a"].db.query("SELECT * FROM x402_private.schema_migrations ORDER BY 1")

    resumed = lab.run("resume", killed_fleet)
    assert resumed.rc == reference.rc, resumed
    assert results(resumed) == {"k-" + k[2:]: v for k, v in results(reference).items()}, resumed
    for role, _, _ in roles:
        assert lab.ledger("k-" + role) == lab.ledger("r-" + role), role
        assert not lab.stack_locked("k-" + role), role
    assert lab.targets["k-a"].db.query("SELECT * FROM x402_private.schema_migrations ORDER BY 1") == ok_first
    names = {f"{p}{r}": r for p in ("r-", "k-") for r, _, _ in roles}
    statuses = [lab.run("status", f) for f in (fleet("r-"), killed_fleet)]
    assert [s.rc for s in statuses] == [0, 0], statuses
    assert set(statuses[1].targets()) == {"k-" + r for r, _, _ in roles}, statuses[1]
    for record in statuses[1].targets().values():
        agrees_with_database(lab, record)
    assert _normal(statuses[1].doc, names) == _normal(statuses[0].doc, names)
    assert lab.leaks() == [], lab.leaks()


def _sample(lab: FleetLab, run) -> frozenset[str]:
    run.watcher.sample()
    return run.watcher.observed.samples[-1]
