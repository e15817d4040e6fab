"""Post-deploy verification of a live database: catalog facts, behaviour in a rolled-back
transaction, and the backend's own queries replayed as PostgREST runs them."""
