"""A pytest plugin: after the whole suite, the privacy scan (tests.privacy) over every
file the tests' products wrote under pytest's base temporary folder. A card number in
any of them fails the run (exit status 1), naming the file, never the number.

Files under a folder whose name starts with ``planted`` are a test's own bait for the
scanner, not the product's output, and are left out. Loaded by tests/conftest.py. Off
with ``-p no:tests.privacyscan``, and in a run of fewer than 100 tests unless
``UNIONCARD_PRIVACY_SCAN=always``: the scan is of a whole run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.privacy import scan_tree

# A folder where a test plants card numbers on purpose, to show that the scanner finds
# them (tests/test_privacy_scan.py): not the product's output.
PLANTED = "planted"


def _known() -> list[str]:
    from terminal.democards import DEMO_CARDS
    from tests.helpers import MEMBER_PAN, OTHER_PAN

    return [MEMBER_PAN, OTHER_PAN, *(card.pan for card in DEMO_CARDS.values())]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller scans
    if session.testscollected < 100 and os.environ.get("UNIONCARD_PRIVACY_SCAN") != "always":
        return  # a partial run
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return
    base = Path(factory.getbasetemp())
    findings = [
        f for f in scan_tree([base], _known())
        if not any(part.startswith(PLANTED) for part in f.path.relative_to(base).parts)
    ]  # fmt: skip
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if findings:
        if reporter is not None:
            reporter.write_sep("=", "privacy scan: card numbers in files the product wrote")
            for finding in findings[:50]:
                reporter.write_line(finding.line())
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_line(f"privacy scan: no card number in the files under {base}")
