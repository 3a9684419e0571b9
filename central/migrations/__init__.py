"""The central store's schema migrations (Alembic): ``env.py`` and ``versions/``, run by
``central.migrate`` (``unioncard central migrate``; a new database is made at the head)."""
