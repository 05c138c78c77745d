"""Finds SQL text built from non-constant values in Python source: f-strings, ``str.format``, ``%`` and ``+``.

A string counts as SQL when its constant text holds a statement or clause keyword in upper case (how K2
writes SQL). Each non-constant value spliced into such a string is reported as a :class:`Splice` with
the function it sits in, so a test can hold every one against a reviewed allow-list.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SQL_TEXT", "Splice", "scan_file", "scan_source"]

SQL_TEXT = re.compile(
    r"\b(SELECT|INSERT INTO|CREATE (OR REPLACE )?(TABLE|VIEW|DATABASE|MATERIALIZED VIEW)|DROP (TABLE|VIEW)"
    r"|ALTER TABLE|DESCRIBE|MERGE INTO|CALL|OPTIMIZE|TRUNCATE|SET|USE|FROM|WHERE|JOIN|ENGINE =|SETTINGS)\b"
)


_MESSAGE_CALLS = frozenset({"print", "debug", "info", "warning", "error", "exception", "critical"})


@dataclass(frozen=True)
class Splice:
    path: str  # relative to the scanned root, e.g. "offload/plan.py"
    function: str  # qualified name of the enclosing function, "<module>" at top level
    expression: str  # ast.unparse of the spliced value
    line: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.path, self.function, self.expression)


def _constant_text(node: ast.AST, constants: dict[str, object]) -> str | None:
    """The text of a string literal, or of a module-level name bound to one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and isinstance(constants.get(node.id), str):
        return str(constants[node.id])
    return None


def _module_constants(tree: ast.Module) -> dict[str, object]:
    """Module-level names bound to a literal (``_SCALE = 18``, ``_LATENCY = \"\"\"SELECT ...\"\"\"``)."""
    out: dict[str, object] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            out.update({t.id: stmt.value.value for t in stmt.targets if isinstance(t, ast.Name)})
    return out


def _is_constant(node: ast.AST, constants: dict[str, object]) -> bool:
    return isinstance(node, ast.Constant) or (isinstance(node, ast.Name) and node.id in constants)


def _splices(node: ast.AST, constants: dict[str, object]) -> list[ast.expr] | None:
    """The non-constant values spliced into ``node`` if it builds SQL text, else None."""
    if isinstance(node, ast.JoinedStr):
        text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        if SQL_TEXT.search(text):
            return [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        text = _constant_text(node.func.value, constants)
        if text is not None and SQL_TEXT.search(text):
            return [*node.args, *(k.value for k in node.keywords)]
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        text = _constant_text(node.left, constants)
        if text is not None and SQL_TEXT.search(text):
            return [node.right]
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        sides = (node.left, node.right)
        texts = [_constant_text(s, constants) for s in sides]
        if any(t is not None and SQL_TEXT.search(t) for t in texts):
            return [s for s, t in zip(sides, texts, strict=True) if t is None]
    return None


class _Visitor(ast.NodeVisitor):
    def __init__(self, path: str, constants: dict[str, object]) -> None:
        self.path, self.constants = path, constants
        self.scope: list[str] = []
        self.found: list[Splice] = []

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_Raise(self, node: ast.Raise) -> None:
        """An exception's message quotes SQL words ("expected one CREATE TABLE"); it is never run."""

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in _MESSAGE_CALLS:
            self.generic_visit(node)
            return
        # print(...) and log.info(...) show their message, they do not run it; their other arguments may
        for child in (node.func, *node.args[1:], *node.keywords):
            self.visit(child)

    def generic_visit(self, node: ast.AST) -> None:
        values = _splices(node, self.constants)
        for value in values or []:
            if not _is_constant(value, self.constants):
                function = ".".join(self.scope) or "<module>"
                self.found.append(Splice(self.path, function, ast.unparse(value), value.lineno))
        super().generic_visit(node)


def scan_source(source: str, path: str) -> list[Splice]:
    tree = ast.parse(source, filename=path)
    visitor = _Visitor(path, _module_constants(tree))
    visitor.visit(tree)
    return visitor.found


def scan_file(file: Path, root: Path) -> list[Splice]:
    return scan_source(file.read_text(), file.relative_to(root).as_posix())


def scan_tree(root: Path, packages: tuple[str, ...]) -> Iterator[Splice]:
    for package in packages:
        for file in sorted((root / package).rglob("*.py")):
            yield from scan_file(file, root)
