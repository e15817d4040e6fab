"""Pulumi's real dynamic-provider host (`python -m pulumi.dynamic`), driven over gRPC one provider
operation at a time, as `pulumi up/destroy` drives it. The host process is the `host` fixture of
tests/fix_pulumi.py."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from pulumi.runtime import proto, rpc

from .pulumi_mocks import SECRET_KEY, by_name, run_program

URN = "urn:pulumi:test::x402-openrouter-db::pulumi-python:dynamic/x402:SqlMigration::m"


def struct(props: dict):
    return asyncio.run(rpc.serialize_properties(props, {}))


def props(struct) -> dict:
    return rpc.deserialize_properties(struct)


def unwrap(value):
    # The engine unwraps secrets for a provider that does not accept them (ours does not).
    return value[SECRET_KEY] if isinstance(value, dict) and SECRET_KEY in value else value


def program_inputs(dsn: str) -> dict[str, dict]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    report = run_program(
        {
            "target": "postgres",
            "host": params["host"],
            "port": str(params["port"]),
            "database": params["dbname"],
            "username": params["user"],
            "sslmode": "disable",
            "protect": "false",
        }
    )
    # A preview leaves the owner unknown (the preflight makes the deployment id at its create):
    # here, one stack's, as the engine passes it once the preflight exists.
    owner = {"project": "x402-openrouter-db", "stack": "test", "deployment": str(uuid.uuid4()), "take_over_from": ""}
    return {
        r["inputs"]["version"]: {k: unwrap(v) for k, v in r["inputs"].items()} | {"owner": owner}
        for r in by_name(report).values()
        if r["type"].endswith("SqlMigration")
    }


class Host:
    def __init__(self, stub):
        self.stub = stub

    def check(self, news, olds=None):
        r = self.stub.Check(proto.CheckRequest(urn=URN, olds=struct(olds or {}), news=struct(news)))
        return props(r.inputs), list(r.failures)

    def create(self, properties):
        r = self.stub.Create(proto.CreateRequest(urn=URN, properties=struct(properties)))
        return r.id, props(r.properties)

    def diff(self, id_, olds, news):
        return self.stub.Diff(proto.DiffRequest(id=id_, urn=URN, olds=struct(olds), news=struct(news)))

    def update(self, id_, olds, news):
        return props(
            self.stub.Update(proto.UpdateRequest(id=id_, urn=URN, olds=struct(olds), news=struct(news))).properties
        )

    def read(self, id_, properties):
        r = self.stub.Read(proto.ReadRequest(id=id_, urn=URN, properties=struct(properties)))
        return r.id, props(r.properties)

    def delete(self, id_, properties):
        self.stub.Delete(proto.DeleteRequest(id=id_, urn=URN, properties=struct(properties)))
