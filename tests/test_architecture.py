"""The package graph of docs/architecture.md, the import rules, and the docs naming
every command.

`make lint` runs import-linter's contracts (pyproject.toml); these tests check
what the contracts cannot say: the picture in the docs is the code's real graph,
each third-party library stays in its adapter, function-local imports are few and
explained, and every command is documented.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import grimp
import pytest

from unioncard.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pact", "reader", "sync", "terminal", "central", "unioncard")

ALLOWED = {
    "smartcard": {"reader/pcsc.py", "reader/monitor.py"},
    "requests": {"sync/client.py"},
    "flask": {
        "terminal/web.py",
        "terminal/webauth.py",
        "central/__init__.py",
        "central/api.py",
        "central/console.py",
        "central/dashboard.py",
        "central/partners.py",
        "central/serve.py",
    },
    "sqlalchemy": {
        "central/store.py",
        "central/migrate.py",
        *(
            str(p.relative_to(ROOT))
            for p in (ROOT / "central" / "migrations").rglob("*.py")
            if p.name != "__init__.py"
        ),
    },
    "alembic": {
        "central/migrate.py",
        *(
            str(p.relative_to(ROOT))
            for p in (ROOT / "central" / "migrations").rglob("*.py")
            if p.name != "__init__.py"
        ),
    },
    "escpos": {"terminal/printing.py"},
}
PURE = (
    "reader/tlv.py",
    "reader/apdu.py",
    "reader/emv.py",
    "reader/identity.py",
    "reader/emulation/images.py",
    "reader/emulation/responder.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pact").glob("*.py") if p.name != "files.py"),
)
NO_IO = {"open", "socket", "subprocess", "sqlite3", "sqlite_utils", "time", "os", "threading"}


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


@pytest.mark.slow
def test_the_import_contracts_hold() -> None:
    """The same check as `make lint`, so that a plain `pytest` run also fails."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]


def package_graph() -> set[tuple[str, str]]:
    """Which top-level package imports which, counting imports inside functions."""
    graph = grimp.build_graph(*PACKAGES)
    return {
        (a, b)
        for a in PACKAGES
        for b in PACKAGES
        if a != b and graph.direct_import_exists(importer=a, imported=b, as_packages=True)
    }


def diagram_edges() -> set[tuple[str, str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no mermaid block"
    return set(re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", block.group(1), re.M))


def test_the_diagram_is_the_code() -> None:
    """The picture in docs/architecture.md shows exactly the imports the code has."""
    assert diagram_edges() == package_graph()


def test_no_cycle_among_the_packages() -> None:
    edges = package_graph()
    for a, b in edges:
        assert (b, a) not in edges, f"{a} and {b} import each other"


def layer_of(name: str, layers: list[str]) -> int:
    return next(i for i, layer in enumerate(layers) if name in re.split(r"[|:\s]+", layer))


def test_the_diagram_points_down_the_layers() -> None:
    """Every edge of the diagram goes from a higher layer of the contract to a lower
    one, and the reader is a leaf."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["id"] == "layers")["layers"]
    for a, b in diagram_edges():
        if "reader" in (a, b):
            assert a != "reader", "the reader imports nothing of ours"
            continue
        assert layer_of(a, layers) < layer_of(b, layers), f"{a} -> {b} points up"


def test_the_core_imports_only_the_standard_library_and_cryptography() -> None:
    # and argon2 (the memory-hard card token, pact.cards), orjson (canonical JSON,
    # pact.signing), nacl (libsodium's Ed25519 verify, pact.device): computation, no I/O
    allowed = {"cards.py": {"argon2"}, "signing.py": {"orjson"}, "device.py": {"nacl"}}
    for path in (ROOT / "pact").glob("*.py"):
        pure = {"cryptography", "pact", *allowed.get(path.name, set())}
        outside = imports(path) - set(sys.stdlib_module_names) - pure
        assert not outside, f"{path.name} imports {outside}"


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


def local_imports() -> list[tuple[str, int, str]]:
    """Imports of our own modules inside functions: (file, line, source line)."""
    found = []
    for path in sources():
        text = path.read_text()
        lines = text.splitlines()
        for func in ast.walk(ast.parse(text)):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    roots = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    roots = {node.module.split(".")[0]}
                else:
                    continue
                if roots & set(PACKAGES):
                    rel = str(path.relative_to(ROOT))
                    found.append((rel, node.lineno, lines[node.lineno - 1]))
    return found


def test_few_function_local_imports_each_explained() -> None:
    """At most 9 imports of our modules inside functions, each with a comment (on its
    line or in the lines just above) saying why it is deferred."""
    found = local_imports()
    assert len(found) < 10, found
    for rel, line, _ in found:
        lines = (ROOT / rel).read_text().splitlines()
        context = lines[max(0, line - 4) : line]
        assert any("#" in text for text in context), f"{rel}:{line} has no comment"


def leaf_commands(group: click.Group, prefix: str = "unioncard") -> list[str]:
    ctx = click.Context(group)
    out = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
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
