"""The command line in-process (``unioncard.cli.main``): one line per failure, no
folder created by a mistyped path, settings read and refused with a line naming
the key. The subprocess tests of the same promises are in test_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.keys import create_keys
from terminal import settings
from terminal.errors import ConfigError
from terminal.settings import Settings
from tests.helpers import CARD_CLOCK, bundle
from unioncard.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out, err


def one_line_error(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err
    return lines[0]


def test_journal_verify_of_a_missing_folder_names_it_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "typo"
    code, out, err = run(capsys, "terminal", "journal", "--verify", "--data", str(missing))
    assert code == 1 and out == ""
    one_line_error(err, str(missing), "does not exist")
    assert not missing.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ("terminal", "status"),
        ("terminal", "checkout", "12.00"),
        ("terminal", "install-update", "--snapshot", "{file}"),
        ("sync",),
        ("card", "read", "--data", "{missing}"),
    ],
)
def test_every_terminal_command_refuses_a_missing_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...]
) -> None:
    missing, file = tmp_path / "typo", tmp_path / "snapshot.json"
    file.write_text("{}")
    args = [a.format(missing=missing, file=file) for a in argv]
    if "--data" not in args:
        args += ["--data", str(missing)]
    code, _, err = run(capsys, *args)
    assert code == 1
    one_line_error(err, str(missing))
    assert not missing.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ("central", "merchants"),
        ("central", "import-members", "{csv}"),
        ("central", "publish-roster"),
        ("central", "settlement", "--json"),
    ],
)
def test_central_commands_refuse_a_missing_folder_without_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...]
) -> None:
    missing, csv = tmp_path / "typo", tmp_path / "m.csv"
    csv.write_text("member_id,pan\n")
    code, _, err = run(capsys, *[a.format(csv=csv) for a in argv], "--data", str(missing))
    assert code == 1
    one_line_error(err, str(missing), "unioncard central init")
    assert not missing.exists()


def test_an_unreachable_database_is_one_line_without_its_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clock
) -> None:
    data = tmp_path / "central"
    assert run(capsys, "central", "init", "--data", str(data))[0] == 0
    url = "postgresql://someone:s3cret@127.0.0.1:1/nothing"
    code, _, err = run(capsys, "central", "merchants", "--data", str(data), "--database-url", url)
    assert code == 1
    line = one_line_error(err, "cannot open the database", "127.0.0.1:1")
    assert "s3cret" not in line


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("terminal", "status", "--bogus"), "No such option '--bogus'"),
        (("terminal", "checkout"), "Missing argument 'AMOUNT'"),
        # click read -1 as an unknown option: "No such option '-1'"
        (("terminal", "checkout", "-1"), "amounts and counts are never negative"),
        (("terminal", "checkout", "-0.50"), "amounts and counts are never negative"),
        (("terminal", "checkout", "1.00", "--timeout", "soon"), "'soon' is not a valid float"),
        (("nonsense",), "No such command 'nonsense'"),
        (("central", "publish-roster", "--expires-in", "3 weeks"), "like 72h or 3d"),
        # --to before --from printed every merchant at 0 (and --from D --to D, nothing)
        (("central", "settlement", "--from", "2026-12-03", "--to", "2026-12-01"), "covers nothing"),
        (("central", "settlement", "--from", "2026-12-01", "--to", "2026-12-01"), "day after"),
    ],
)
def test_usage_errors_are_one_line_with_where_to_read_more(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    one_line_error(err, fragment, "--help")


def test_card_emulate_refuses_a_number_that_fails_the_luhn_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "card", "emulate", "--pan", "6212345678901233")
    assert code == 2
    one_line_error(err, "Luhn")
    code, _, err = run(capsys, "card", "emulate")
    one_line_error(err, "exactly one of --pan or --demo")


# ---------------------------------------------------------------------------- settings


def test_settings_from_file_then_environment_then_command_line(tmp_path: Path) -> None:
    path = tmp_path / "terminal.toml"
    path.write_text(
        'data_dir = "/srv/t"\nreader = "ACR122"\nlisten_port = 8081\ncard_timeout = 12\n'
    )
    loaded = settings.load(
        path, {"UNIONCARD_LISTEN_PORT": "9000"}, {"card_timeout": 5.0, "reader": None}
    )
    assert loaded == Settings(
        data_dir=Path("/srv/t"), reader="ACR122", card_timeout=5.0, listen_port=9000
    )
    assert settings.load(None, {}) == Settings()  # no file: the defaults


def test_the_example_file_documents_every_key_and_loads() -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "terminal.example.toml"
    text = example.read_text()
    for key in settings.KEYS:
        assert f"{key} =" in text, f"config/terminal.example.toml does not document {key}"
    assert settings.load(example, {}) == Settings()


def test_settings_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("sync_batch = 200\n")
    assert settings.load(None, {"UNIONCARD_CONFIG": str(path)}).sync_batch == 200


@pytest.mark.parametrize(
    ("text", "environ", "fragments"),
    [
        ("colour = 'red'\n", {}, ("unknown key 'colour'", "t.toml", "listen_port")),
        ("listen_port = 'eighty'\n", {}, ("listen_port", "in ", "t.toml", "1 to 65535")),
        ("listen_port = 70000\n", {}, ("listen_port", "1 to 65535")),
        ("card_timeout = true\n", {}, ("card_timeout", "0.1 to 600")),
        ("sync_batch = 5000\n", {}, ("sync_batch", "1 to 1000")),
        ("data_dir = ''\n", {}, ("data_dir", "folder")),
        ("listen_port = \n", {}, ("not valid TOML",)),
        ("", {"UNIONCARD_CARD_TIMEOUT": "soon"}, ("card_timeout", "UNIONCARD_CARD_TIMEOUT")),
    ],
)
def test_bad_settings_stop_with_one_line_naming_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], fragments: tuple[str, ...]
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        settings.load(path, environ)
    message = str(refused.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_bad_settings_file_stops_a_terminal_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "t.toml"
    path.write_text("listen_prot = 8080\n")
    code, _, err = run(capsys, "terminal", "status", "--config", str(path))
    assert code == 1
    one_line_error(err, "unknown key 'listen_prot'")
    code, _, err = run(capsys, "sync", "--config", str(tmp_path / "none.toml"))
    one_line_error(err, "none.toml", "not found")


def test_the_command_line_data_folder_wins_over_the_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'data_dir = "{tmp_path / "from-file"}"\n')
    _, _, err = run(capsys, "terminal", "status", "--config", str(path))
    one_line_error(err, "from-file")
    _, _, err = run(
        capsys, "terminal", "status", "--config", str(path), "--data", str(tmp_path / "flag")
    )
    one_line_error(err, "flag")


def test_a_lost_journal_is_an_error_not_a_new_empty_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Enrolment makes the journal; afterwards a missing one is refused, so that no
    terminal silently restarts its sequence at 1."""
    keys = create_keys(tmp_path / "keys", now=CARD_CLOCK())
    (tmp_path / "bundle.json").write_bytes(bundle(keys))
    data = tmp_path / "terminal"
    code, out, _ = run(
        capsys, "terminal", "enrol", str(tmp_path / "bundle.json"), "--data", str(data)
    )
    assert code == 0 and "enrolled as terminal T1" in out
    code, out, _ = run(capsys, "terminal", "journal", "--verify", "--data", str(data))
    assert code == 0 and "journal chain intact: 0 entries" in out
    (data / "journal.db").unlink()
    for argv in (("terminal", "journal", "--verify"), ("terminal", "status"), ("sync",)):
        code, _, err = run(capsys, *argv, "--data", str(data))
        assert code == 1
        one_line_error(err, "no journal at", "journal.db")
    assert not (data / "journal.db").exists()


def test_a_bare_group_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "terminal")
    assert code == 2 and "Usage: unioncard terminal" in err and "checkout" in err
    assert not err.startswith("error:")


def test_central_serve_refuses_a_missing_folder_before_starting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "central", "serve", "--data", str(tmp_path / "typo"))
    assert code == 1
    one_line_error(err, "typo", "does not exist")
