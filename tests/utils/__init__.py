"""Helpers the tests import: databases, scripts, terminals, Pulumi (mocked, hosted, real)."""
