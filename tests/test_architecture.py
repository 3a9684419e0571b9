"""The import rules of docs/architecture.md, and the docs naming every command."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

from terminal.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pact", "reader", "terminal", "sync", "central", "unioncard")

ALLOWED = {
    "smartcard": {"reader/pcsc.py", "reader/monitor.py"},
    "requests": {"sync/client.py"},
    "flask": {"terminal/web.py", "central/__init__.py", "central/api.py", "central/serve.py"},
    "sqlalchemy": {"central/store.py"},
}
PURE = (
    "reader/tlv.py",
    "reader/apdu.py",
    "reader/emv.py",
    "reader/identity.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pact").glob("*.py") if p.name != "files.py"),
)
NO_IO = {"open", "socket", "subprocess", "sqlite3", "sqlite_utils", "time", "os"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_library_only_in_its_adapter(library: str) -> None:
    users = {str(p.relative_to(ROOT)) for p in sources() if library in imports(p)}
    assert users <= ALLOWED[library], f"{library} imported outside its adapter: {users}"


@pytest.mark.parametrize("module", PURE)
def test_pure_core_does_no_io(module: str) -> None:
    found = imports(ROOT / module) & NO_IO
    assert not found, f"{module} imports {found}"
    tree = ast.parse((ROOT / module).read_text())
    calls = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "open" not in calls and "print" not in calls


def leaf_commands(group: click.Group, prefix: str = "unioncard") -> list[str]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += leaf_commands(command, f"{prefix} {name}")
        else:
            out.append(f"{prefix} {name}")
    return out


@pytest.mark.parametrize("command", leaf_commands(cli))
def test_every_command_is_documented(command: str) -> None:
    readme = (ROOT / "README.md").read_text()
    *group, name = command.split()
    lines = [line for line in readme.splitlines() if " ".join(group) in line]
    assert any(name in line for line in lines), f"README does not mention `{command}`"
    ctx = click.Context(cli)
    command_obj: click.Command | None = cli
    for part in command.split()[1:]:
        assert isinstance(command_obj, click.Group)
        command_obj = command_obj.get_command(ctx, part)
    assert command_obj is not None and command_obj.help, f"`{command}` has no --help text"


def test_protocol_doc_lists_every_status_word() -> None:
    from reader.apdu import STATUS_CLASSES, STATUS_WORDS

    doc = (ROOT / "docs" / "protocol.md").read_text()
    for sw, (error, _) in STATUS_WORDS.items():
        assert f"| `{sw:04X}` |" in doc and error.__name__ in doc, f"{sw:04X} missing"
    for sw1 in STATUS_CLASSES:
        assert f"| `{sw1:02X}xx`" in doc, f"{sw1:02X}xx missing"
