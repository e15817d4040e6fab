"""The embedded or system PostgreSQL a developer runs, and `make deploy` onto it."""
