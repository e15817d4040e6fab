"""Lock rules as data: which lock each statement takes, and what it does to the rows already there,
as tables keyed the way PostgreSQL documents them (the "Explicit Locking" page's table-level
locks, ALTER TABLE's per-subcommand levels). One module per statement family; branching is kept
only where a rule depends on the statement's content, in small named functions the tables name.
`python -m x402db.plan.rules.reference` prints the tables as docs/reference/lock-rules.md."""
