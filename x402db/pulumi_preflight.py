"""Re-export of iac/preflight.py. Pulumi state stores each dynamic provider serialized by
reference to its class's module, and state written before the move names this one: keep this
path importable for as long as such state may exist, that is forever."""

from .iac.preflight import Preflight, PreflightProvider

__all__ = ["Preflight", "PreflightProvider"]
