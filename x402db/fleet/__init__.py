"""Many stacks in waves over Pulumi's Automation API: fleet.yaml names the databases (one stack
of this project each) and the waves they roll out in; a wave runs the plan and a preview for
each of its targets, refuses before anything changes when a gate says so, then deploys at most
so many at once and per server, verifies each with smoke and a no-change preview, halts on too
many failures, and records evidence a later wave can require. A journal lets a killed run resume."""
