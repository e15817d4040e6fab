"""Pulumi for the tests, as a pytest plugin (registered in conftest.py): the real CLI's tools
(`pulumi_tools`, found or built by `make pulumi-tools`) and Pulumi's real dynamic-provider host
(`host`, a gRPC stub)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from pulumi.runtime import proto
from pulumi.runtime.proto import provider_pb2_grpc

from tests.utils.dynamic_host import struct
from tests.utils.real_pulumi import Project, find_tools
from tests.utils.targets import Target
from x402db import ROOT


@pytest.fixture(scope="session")
def pulumi_tools() -> Path:
    tools, reason = find_tools()
    if tools is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real Pulumi tools are required under CI=true: {reason}")
        pytest.skip(f"real Pulumi engine unavailable: {reason}")
    return tools


@pytest.fixture
def host():
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulumi.dynamic"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    port = proc.stdout.readline().decode().strip()
    assert port.isdigit(), proc.stderr.read().decode()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = provider_pb2_grpc.ResourceProviderStub(channel)
    stub.Configure(proto.ConfigureRequest(args=struct({}), acceptSecrets=False))
    yield stub
    channel.close()
    proc.kill()
    proc.wait()


@pytest.fixture(params=["postgres", "supabase"])
def target(request, server):
    t = Target(server, request.param)
    yield t
    t.drop()


@pytest.fixture
def project(pulumi_tools):
    p = Project(pulumi_tools)
    yield p
    p.cleanup()
