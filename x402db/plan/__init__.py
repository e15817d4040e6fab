"""`migrate.py plan`: the read-only planner, its JSON model, the human view, lock modes, the
per-statement lock map, and the catalog as the run will leave it. Changes nothing, ever."""
