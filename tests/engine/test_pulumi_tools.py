"""`make pulumi-tools` (tools/pulumi/pulumi_tools.py) with real binaries: a compatible installation
the user already has is used as it is (and the same directory again on a second run), and a
machine with neither Go nor a complete installation gets one line saying so."""

from __future__ import annotations

import concurrent.futures
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.utils.real_pulumi import TOOLS_SCRIPT


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOLS_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120
    )


def _installation(tmp_path: Path, tools: Path, names) -> Path:
    """A directory laid out as the official installer leaves one: the CLI and its plugins."""
    home = tmp_path / "installed"
    home.mkdir()
    for name in names:
        (home / name).symlink_to((tools / name).resolve())
    return home


def test_a_compatible_installation_is_used_as_it_is(pulumi_tools, tmp_path):
    installed = _installation(
        tmp_path,
        pulumi_tools,
        ("pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python", "pulumi-resource-postgresql"),
    )
    env = {
        **os.environ,
        "PATH": f"{installed}{os.pathsep}/usr/bin:/bin",
        "X402_PULUMI_TOOLS_CACHE": str(tmp_path / "cache"),
    }
    r = _run(env)
    assert r.returncode == 0, r.stderr
    chosen = Path(r.stdout.strip().splitlines()[-1].split("=", 1)[1])
    assert chosen.name.startswith("user-")
    assert (chosen / "pulumi").resolve() == (pulumi_tools / "pulumi").resolve()
    assert (chosen / "pulumi-resource-postgresql").resolve() == (pulumi_tools / "pulumi-resource-postgresql").resolve()
    again = _run(env)
    assert again.stdout == r.stdout


def test_an_installation_without_the_plugin_is_not_used(pulumi_tools, tmp_path):
    installed = _installation(
        tmp_path, pulumi_tools, ("pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python")
    )
    env = {
        **os.environ,
        "PATH": f"{installed}{os.pathsep}/usr/bin:/bin",
        "X402_PULUMI_TOOLS_CACHE": str(tmp_path / "cache"),
        "PULUMI_HOME": str(tmp_path / "home"),
    }
    r = _run(env, "--optional")
    # Without Go on this PATH it cannot build either: one line, and an empty PULUMI_BIN.
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "PULUMI_BIN="
    assert len(r.stderr.strip().splitlines()) == 1 and "go is not installed" in r.stderr, r.stderr
    assert _run(env).returncode == 1


def test_each_build_step_says_when_it_starts_and_how_long_it_took_in_ci_too():
    """A cold build takes 10 to 20 minutes: a CI log gets a quiet line as each step starts and
    ends, sub-steps of build.sh included, while stdout keeps only what the step printed."""
    marks = 'echo "x402-step: one" >&2; echo go: downloading >&2; echo "x402-step: two" >&2; echo result'
    code = (
        "import pathlib, sys; sys.path.insert(0, sys.argv[1]); import pulumi_tools as t;"
        " print(t.run(['bash', '-c', sys.argv[2]], pathlib.Path('.'), 'demo'), end='')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(TOOLS_SCRIPT.parent), marks],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true"},
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout == "result\n", r.stdout + r.stderr
    assert r.stderr.splitlines() == [
        "pulumi-tools: demo ...",
        "pulumi-tools: demo: one ...",
        "pulumi-tools: demo: one: done in 0 s",
        "pulumi-tools: demo: two ...",
        "pulumi-tools: demo: two: done in 0 s",
        "pulumi-tools: demo: done in 0 s",
    ]
    build_sh = (TOOLS_SCRIPT.parent / "provider" / "build.sh").read_text()
    steps = re.findall(r'^\s*step "([^"]+)"', build_sh, re.M)
    assert [s.split(":")[0].split(" ")[0] for s in steps] == ["upstream", "schema", "mapping", "provider"], steps


def _plugin(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """A plugin started as the engine starts one (a process group of its own), and its port."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    assert port.isdigit(), f"{cmd[0]} printed {port!r}, not its port"
    return proc, port


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_dynamic_provider_stops_on_the_engines_interrupt_and_a_killed_launcher_leaves_none(pulumi_tools, tmp_path):
    """The launcher execs the interpreter: the engine's SIGINT to the group ends the provider, and
    a kill of the launcher's pid (what a bench or a tool does) is a kill of the provider, never a
    provider left running with no one to stop it."""
    env = {**os.environ, "PULUMI_RUNTIME_VIRTUALENV": sys.prefix}
    launcher = [str(pulumi_tools / "pulumi-resource-pulumi-python"), "127.0.0.1:1"]
    proc, _port = _plugin(launcher, env, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=10)
    assert not _group_alive(proc.pid)
    proc, _port = _plugin(launcher, env, tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    try:
        assert not _group_alive(proc.pid), "the provider outlived its killed launcher"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def _fake_package(site: Path, name: str, version: str) -> None:
    """What pip leaves for a Pulumi provider package: its directory with plugin.json, and a
    dist-info whose RECORD lists it."""
    (site / name).mkdir(exist_ok=True)
    (site / name / "plugin.json").write_text(json.dumps({"resource": True, "name": name, "version": version}))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{name}/plugin.json,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def test_the_language_host_answers_about_without_pip_and_rescans_plugins_when_the_venv_changes(pulumi_tools, tmp_path):
    """About is one interpreter start; GetRequiredPackages is cached, and a package installed
    into the virtualenv, or a plugin.json rewritten in place, is seen at the next run."""
    import grpc
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import language_pb2, language_pb2_grpc

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    (site,) = venv.glob("lib/python*/site-packages")
    cache = tmp_path / "cache"
    # The host stops when its engine stops answering: a gRPC server with no service answers
    # Unimplemented, which its health check takes as alive.
    engine = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    engine_port = engine.add_insecure_port("127.0.0.1:0")
    engine.start()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    env.pop("PYTHONPATH", None)
    proc, port = _plugin([str(pulumi_tools / "pulumi-language-python"), f"127.0.0.1:{engine_port}"], env, tmp_path)
    options = struct_pb2.Struct()
    options.update({"toolchain": "pip", "virtualenv": str(venv)})
    info = language_pb2.ProgramInfo(
        root_directory=str(tmp_path), program_directory=str(tmp_path), entry_point=".", options=options
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            host = language_pb2_grpc.LanguageRuntimeStub(channel)

            def plugins() -> dict[str, str]:
                r = host.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(info=info), timeout=60)
                return {p.name: p.version for p in r.packages}

            about = host.About(language_pb2.AboutRequest(info=info), timeout=60)
            assert about.executable == str(venv / "bin" / "python")
            assert about.version == platform.python_version()
            _fake_package(site, "pulumi_one", "1.0.0")
            assert plugins() == {"pulumi_one": "1.0.0"}
            assert len(list(cache.rglob("*.json"))) == 1, "the answer was not cached"
            assert plugins() == {"pulumi_one": "1.0.0"}
            _fake_package(site, "pulumi_two", "2.0.0")  # an install: new directories in site-packages
            assert plugins() == {"pulumi_one": "1.0.0", "pulumi_two": "2.0.0"}
            _fake_package(site, "pulumi_one", "1.0.10")  # plugin.json rewritten in place
            assert plugins() == {"pulumi_one": "1.0.10", "pulumi_two": "2.0.0"}
            # pip removes a package's record before its files: without it, it is not installed
            shutil.rmtree(site / "pulumi_two-1.0.dist-info")
            assert plugins() == {"pulumi_one": "1.0.10"}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        engine.stop(0)
