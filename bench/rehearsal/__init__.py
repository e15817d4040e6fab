"""The rehearsal of a migration under the application's load: a Supabase-built database at a
chosen volume (fixture), PostgREST-style traffic (traffic), the operator's steps run as an
operator runs them (steps), and the per-phase table (report). bench/bench_rehearsal.py is the
command; tests/database/test_rehearsal.py runs a short version."""
