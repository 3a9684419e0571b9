"""Where the benchmarks find PostgreSQL (the same server the tests use)."""

from __future__ import annotations

import os

PG_URL = os.environ.get("UNIONCARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
