"""Revisions of the central store's schema, oldest first (``down_revision`` links them)."""
