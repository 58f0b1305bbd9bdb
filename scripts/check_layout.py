"""`make lint`'s size rule: modules that each do one job, functions that fit on a screen.

No module in app/ or worker/ over MAX_MODULE lines, no function there over MAX_FUNCTION lines
(the OpenAPI document's literal aside), no function in bench/ over MAX_BENCH_FUNCTION lines.
Prints every offender and exits 1 if there is one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE = 400
MAX_FUNCTION = 60
MAX_BENCH_FUNCTION = 80
# A data literal, not logic: the API's OpenAPI document.
EXEMPT = {("app/web/openapi.py", "document")}


def offences(folder: str, max_function: int, max_module: int | None) -> list[str]:
    """What breaks the rule in one folder."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n")
        if max_module is not None and lines > max_module:
            found.append(f"{rel}: {lines} lines (at most {max_module})")
        for node in ast.walk(ast.parse(source, filename=rel)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > max_function and (rel, node.name) not in EXEMPT:
                found.append(f"{rel}:{node.lineno}: {node.name}() is {length} lines")
    return found


def main() -> int:
    """Check app/, worker/ and bench/."""
    found = [
        *offences("app", MAX_FUNCTION, MAX_MODULE),
        *offences("worker", MAX_FUNCTION, MAX_MODULE),
        *offences("bench", MAX_BENCH_FUNCTION, None),
    ]
    for line in found:
        print(line)
    if found:
        print(
            f"{len(found)} too long: split by job (modules ≤ {MAX_MODULE} lines, functions ≤ "
            f"{MAX_FUNCTION} in app/ and worker/, ≤ {MAX_BENCH_FUNCTION} in bench/)"
        )
        return 1
    print("layout: every module and function within its size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
