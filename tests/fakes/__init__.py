"""In-memory fakes of the core's ports (``stockctl.core.ports``), for use-case tests that need
no database file and no server. ``tests/integration/test_store_contract.py`` runs one suite on
the fake, SQLite and PostgreSQL, so the fake cannot drift from the real adapters."""
