"""Migrations: the SQL files and their directives, their statements, the ledger, the engine that
applies and reverts them, and the platform they run on. Imports only the shared kernel."""
