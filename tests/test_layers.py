"""The house rules, read from the source: imports run one way, and plugins use the public API only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import defectlab

ROOT = Path(__file__).resolve().parents[1]
CORE, PLUGINS = ROOT / "core", ROOT / "plugins" / "defectlab_plugins"
#: Each layer may import its own and lower ranks; cli -> workflows -> training, runtime -> data, runs -> plugin_system.
RANKS = {"plugin_system": 0, "data": 1, "runs": 1, "runtime": 2, "training": 2, "workflows": 3, "cli": 4}
TOP = 5  # defectlab/__init__.py and __main__.py: the public API and the entry point


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def imported_modules(path: Path, root: Path, package: str) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path, root, package).split(".")
    if path.name != "__init__.py":
        here.pop()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def rank_of(module: str) -> int:
    parts = module.split(".")
    return RANKS.get(parts[1], TOP) if len(parts) > 1 else TOP


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def plugin_files() -> list[Path]:
    return sorted(PLUGINS.rglob("*.py"))


def test_every_core_module_is_in_a_layer():
    loose = [p.relative_to(CORE).as_posix() for p in core_files()
             if len(p.relative_to(CORE).parts) == 1 and p.name not in ("__init__.py", "__main__.py")]
    assert loose == [], f"modules outside the layers: {loose}"


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.relative_to(CORE).as_posix())
def test_core_imports_run_one_way(path):
    own = rank_of(module_name(path, CORE, "defectlab"))
    upward = []
    for line, module, names in imported_modules(path, CORE, "defectlab"):
        if module.split(".")[0] == "defectlab_plugins":
            upward.append(f"line {line}: {module} (the core never imports a plugin)")
        elif module == "defectlab" and own < TOP:
            upward.append(f"line {line}: from defectlab import {', '.join(names)} (the public API is the top layer)")
        elif module.startswith("defectlab.") and rank_of(module) > own:
            upward.append(f"line {line}: {module}")
        elif own == RANKS["data"] and module.startswith("defectlab.") and rank_of(module) == own \
                and module.split(".")[1] != module_name(path, CORE, "defectlab").split(".")[1]:
            upward.append(f"line {line}: {module} (data and runs are side by side)")
    assert upward == [], f"{path.relative_to(ROOT)} imports upward:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", plugin_files(), ids=lambda p: p.relative_to(PLUGINS).as_posix())
def test_plugins_import_only_the_public_api_and_their_own_package(path):
    relative = path.relative_to(PLUGINS)
    own_package = "defectlab_plugins." + relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else None
    wrong = []
    for line, module, names in imported_modules(path, PLUGINS, "defectlab_plugins"):
        top = module.split(".")[0]
        if module == "defectlab":
            private = [n for n in names if n not in defectlab.__all__]
            if private:
                wrong.append(f"line {line}: {', '.join(private)} not in defectlab.__all__")
        elif top == "defectlab":
            wrong.append(f"line {line}: {module} is private; import names from defectlab")
        elif top == "defectlab_plugins" and module != "defectlab_plugins" and (
                own_package is None or not (module == own_package or module.startswith(own_package + "."))):
            wrong.append(f"line {line}: {module} belongs to another plugin")
    assert wrong == [], f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


def test_the_check_finds_an_upward_import(tmp_path):
    fake = tmp_path / "data" / "leaky.py"
    fake.parent.mkdir()
    fake.write_text("from defectlab.workflows.train import train\nfrom ..cli import main\n")
    found = imported_modules(fake, tmp_path, "defectlab")
    assert [(m, rank_of(m)) for _, m, _ in found] == [("defectlab.workflows.train", 3), ("defectlab.cli", 4)]
