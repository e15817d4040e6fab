"""The one line a fleet shows for a failed Pulumi run: the error that says why, from Pulumi's real
output (captured from the CLI this suite runs, trimmed), never its consequences, never several lines.
tests/engine/test_fleet_stacks.py checks the same against the live CLI."""

from __future__ import annotations

import pytest

from x402db.fleet.stacks import first_error

PROGRAM_REFUSAL = """\
Previewing update (a):

 +  pulumi:pulumi:Stack x402-openrouter-db-a create
 +  pulumi:pulumi:Stack x402-openrouter-db-a create error: invalid stack config:
 +  pulumi:pulumi:Stack x402-openrouter-db-a create error: an unhandled error occurred: the Python program exited with code 1
 +  pulumi:pulumi:Stack x402-openrouter-db-a create 2 errors
Diagnostics:
  pulumi:pulumi:Stack (x402-openrouter-db-a):
    error: an unhandled error occurred: the Python program exited with code 1
    error: invalid stack config:
      - target must be one of supabase, postgres, not 'x'
      - port 6543 is Supabase's transaction pooler
    warning: something else

Resources:
    + 1 to create
    1 errored
"""

PROVIDER_REFUSAL = """\
Previewing update (a):

    pulumi-python:dynamic/x402:Preflight openrouter-preflight  error: preflight: cannot connect
 +  pulumi:pulumi:Stack x402-openrouter-db-a create error: Resource monitor has terminated, shutting down
Diagnostics:
  pulumi:pulumi:Stack (x402-openrouter-db-a):
    error: Resource monitor has terminated, shutting down

  pulumi-python:dynamic/x402:Preflight (openrouter-preflight):
    error: preflight: cannot connect to postgresql://postgres@127.0.0.1:1/postgres: Connection refused

Resources:
    + 3 to create
    2 errored
"""

LOCKED = (
    "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end"
    " or delete the lock file with `pulumi cancel`."
)
BANNER = """\
error: 
================================================================================
Legacy DIY state is deprecated, please upgrade your state to project mode using:
'pulumi state upgrade'

It is due to be removed in a future release before the end of this year (2026).
================================================================================
"""
# The text of an automation CommandError, which labels each stream.
COMMAND_ERROR = "\n code: 255\n stdout: \n stderr: error: no stack named 'nope' found"


@pytest.mark.parametrize(
    "texts, line",
    [
        (
            [PROGRAM_REFUSAL, ""],
            "invalid stack config: target must be one of supabase, postgres, not 'x'; "
            "port 6543 is Supabase's transaction pooler",
        ),
        (
            [PROVIDER_REFUSAL, ""],
            "preflight: cannot connect to postgresql://postgres@127.0.0.1:1/postgres: Connection refused",
        ),
        (["", LOCKED], LOCKED.removeprefix("error: ")),
        ([COMMAND_ERROR], "no stack named 'nope' found"),
        (
            ["", BANNER],
            "Legacy DIY state is deprecated, please upgrade your state to project mode using: 'pulumi state upgrade'",
        ),
        (["Previewing update (a):\n", "error: update failed\n"], "update failed"),  # nothing better was said
        (["killed\n", ""], ""),
    ],
)
def test_the_line_that_says_why(texts, line):
    assert first_error(texts) == line
