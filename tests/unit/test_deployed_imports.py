"""What is deployed (function_app.py, functions/, shared/) never imports the one-machine stack (local/) nor
the operator's CLI (ftops_cli/): neither is in the Functions package, so such an import, even one inside a
function, would fail in Azure the first time that code ran."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_DEPLOYED = ("local", "ftops_cli")


def deployed_files() -> list[Path]:
    return [ROOT / "function_app.py", *sorted((ROOT / "functions").rglob("*.py")),
            *sorted((ROOT / "shared").rglob("*.py"))]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def test_deployed_code_imports_neither_local_nor_the_cli() -> None:
    files = deployed_files()
    assert len(files) > 50, "the scan found almost nothing: has the layout changed?"
    offending = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
                 for path in files for line, module in imported_modules(path)
                 if module.split(".")[0] in NOT_DEPLOYED]
    assert offending == []


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from local.stack import LocalStack\n    import ftops_cli.demo\n"
                      "    importlib.import_module('local.settings')\n")
    assert [m for _, m in imported_modules(sample)] == ["local.stack", "ftops_cli.demo", "local.settings"]


def test_neither_is_packaged_for_functions() -> None:
    ignored = (ROOT / ".funcignore").read_text().split()
    assert {f"{name}/" for name in NOT_DEPLOYED} <= set(ignored)
    for name in NOT_DEPLOYED:
        assert (ROOT / name / "__init__.py").is_file(), f"{name}/ moved: update NOT_DEPLOYED and .funcignore"
