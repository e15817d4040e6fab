"""What each migration should have left in a database, derived from its own SQL: the catalog as
facts (facts.py), the expectation built by applying the shipped migrations to a scratch database
(derive.py, cached by checksum in cache.py), and a live database judged against it (compare.py)."""
