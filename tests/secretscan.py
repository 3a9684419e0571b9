"""A pytest plugin: no card number, API secret or token key in what the suite logs.

It keeps every log record's message (unioncard's own loggers at INFO, everything
else as configured: werkzeug's request lines show the URLs), every test's captured
output (stdout, stderr, its log; subprocesses' too) and the daemons' log files the
tests leave, and at the end of the session looks in them for

- the test card numbers (tests.helpers MEMBER_PAN, OTHER_PAN; terminal.democards),
- every API secret and token key the run made (read back from the enrolment files
  and the union's ``token.key`` files under the run's temporary folder).

Any found fails the session, naming the secret's kind and where it was seen (never
the secret). Under xdist each worker scans its own part and leaves its findings for
the controller, which fails the run. Registered from tests/conftest.py.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

OUR_LOGGERS = ("terminal", "central", "sync", "reader", "pact", "unioncard")
FINDINGS = "secret-findings-{}.txt"
MAX_TEXT = 20_000_000  # characters kept (then the oldest are scanned and dropped)


def static_secrets() -> dict[str, str]:
    """The card numbers the tests and the demo use: value -> what it is."""
    from terminal.democards import DEMO_CARDS
    from tests.helpers import MEMBER_PAN, OTHER_PAN

    found = {MEMBER_PAN: "test PAN MEMBER_PAN", OTHER_PAN: "test PAN OTHER_PAN"}
    for name, card in DEMO_CARDS.items():
        found[card.pan] = f"demo card {name}'s PAN"
    return found


def made_secrets(folder: Path) -> dict[str, str]:
    """The API secrets and token keys made under ``folder`` (enrolment.json, token.key)."""
    found: dict[str, str] = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            try:
                if name == "enrolment.json":
                    raw = json.loads(path.read_bytes())
                    for key in ("api_secret", "token_key"):
                        value = raw.get(key) if isinstance(raw, dict) else None
                        if isinstance(value, str) and len(value) >= 16:
                            found[value] = f"{key} of a terminal"
                elif name == "token.key":
                    found[path.read_text().strip()] = "the union's token key"
            except (OSError, ValueError):
                continue
    return found


@dataclass
class Scanner:
    """What was seen (texts, each with where), and the secrets to look for in it."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    size: int = 0
    findings: set[str] = field(default_factory=set)
    secrets: dict[str, str] = field(default_factory=dict)

    def see(self, where: str, text: str) -> None:
        if not text:
            return
        self.texts.append((where, text))
        self.size += len(text)
        if self.size > MAX_TEXT:  # keep memory flat: scan what is held now
            self.scan(self.secrets)

    def scan(self, secrets: dict[str, str]) -> set[str]:
        """Look for ``secrets`` in everything seen so far (then forget it)."""
        for where, text in self.texts:
            for value, what in secrets.items():
                if value and value in text:
                    self.findings.add(f"{what} appears in {where}")
        self.texts, self.size = [], 0
        return self.findings


class Collector(logging.Handler):
    def __init__(self, scanner: Scanner) -> None:
        super().__init__(logging.DEBUG)
        self.scanner = scanner
        self.test = "session"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted is no secret's
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + str(record.exc_info[1])
        self.scanner.see(f"a log record of {record.name} ({self.test})", text)


class SecretScan:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.scanner = Scanner(secrets=static_secrets())
        self.handler = Collector(self.scanner)
        self.levels: dict[str, int] = {}

    def start(self) -> None:
        logging.getLogger().addHandler(self.handler)
        for name in OUR_LOGGERS:
            logger = logging.getLogger(name)
            self.levels[name] = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterable[None]:
        self.handler.test = item.nodeid
        yield
        self.handler.test = "session"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for title, text in report.sections:
            self.scanner.see(f"{title.lower()} of {report.nodeid}", text)
        if report.longrepr is not None:  # a failure's message
            self.scanner.see(f"the failure of {report.nodeid}", str(report.longrepr))

    def finish(self, basetemp: Path) -> list[str]:
        for log in basetemp.rglob("*.log"):
            try:
                self.scanner.see(str(log.relative_to(basetemp)), log.read_text(errors="replace"))
            except OSError:
                continue
        secrets = {**made_secrets(basetemp), **self.scanner.secrets}
        return sorted(self.scanner.scan(secrets))


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("secretscan_off", False):
        return
    plugin = SecretScan(config)
    config.pluginmanager.register(plugin, "unioncard-secretscan")
    plugin.start()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-secret-scan",
        dest="secretscan_off",
        action="store_true",
        help="do not scan the run's logs for card numbers and secrets",
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    plugin = config.pluginmanager.get_plugin("unioncard-secretscan")
    if not isinstance(plugin, SecretScan):
        return
    plugin.stop()
    basetemp = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    findings = plugin.finish(basetemp)
    worker = getattr(config, "workerinput", None)
    if worker is not None:  # the controller fails the run
        if findings:
            out = basetemp.parent / FINDINGS.format(worker["workerid"])
            out.write_text("\n".join(findings) + "\n")
        return
    for part in sorted(basetemp.glob(FINDINGS.format("*"))):
        findings.extend(part.read_text().splitlines())
        part.unlink()
    if findings:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        lines = ["secret scan: a card number or secret was logged:", *findings]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
