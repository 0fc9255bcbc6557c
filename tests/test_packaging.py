"""Packaging: the wheel carries every module and every built-in plugin is an entry point."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import defectlab
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def plugin_modules_with_hooks() -> set[str]:
    """Built-in plugin modules that define a hook implementation (decorated with hookimpl)."""
    found = set()
    for path in (ROOT / "plugins" / "defectlab_plugins").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(
                    getattr(d, "id", None) == "hookimpl" for d in node.decorator_list):
                parts = path.relative_to(ROOT / "plugins").with_suffix("").parts
                found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_each_builtin_plugin_is_a_package_whose_init_holds_its_hooks():
    assert plugin_modules_with_hooks() == set(PYPROJECT["project"]["entry-points"]["defectlab"].values())
    loose = [p.name for p in (ROOT / "plugins" / "defectlab_plugins").glob("*.py") if p.name != "__init__.py"]
    assert loose == []


def test_editable_install_points_at_the_source_tree():
    assert Path(defectlab.__file__).resolve().parent == ROOT / "core"


def test_every_builtin_plugin_module_is_an_entry_point():
    declared = set(PYPROJECT["project"]["entry-points"]["defectlab"].values())
    assert plugin_modules_with_hooks() <= declared


def test_every_package_directory_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {"defectlab." + ".".join(p.parent.relative_to(ROOT / "core").parts)
               for p in (ROOT / "core").rglob("__init__.py")}
    on_disk = {name.rstrip(".") for name in on_disk}
    on_disk |= {"defectlab_plugins." + ".".join(p.parent.relative_to(ROOT / "plugins" / "defectlab_plugins").parts)
                for p in (ROOT / "plugins" / "defectlab_plugins").rglob("__init__.py")}
    on_disk = {name.rstrip(".") for name in on_disk}
    assert on_disk == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy of the sources: a build in the checkout leaves build/ and an egg-info whose entry points
    # would shadow the editable install's once plugins are added
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("core", "plugins"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
                   check=True, capture_output=True)
    return next(out.glob("defectlab-*.whl"))


def test_wheel_contains_every_module_and_entry_point(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "core").rglob("*.py"):
        assert "defectlab/" + path.relative_to(ROOT / "core").as_posix() in names
    for path in (ROOT / "plugins" / "defectlab_plugins").rglob("*.py"):
        assert "defectlab_plugins/" + path.relative_to(ROOT / "plugins" / "defectlab_plugins").as_posix() in names
    sources = {"defectlab/" + p.relative_to(ROOT / "core").as_posix() for p in (ROOT / "core").rglob("*.py")}
    sources |= {"defectlab_plugins/" + p.relative_to(ROOT / "plugins" / "defectlab_plugins").as_posix()
                for p in (ROOT / "plugins" / "defectlab_plugins").rglob("*.py")}
    stale = sorted(n for n in names if n.endswith(".py") and n not in sources)
    assert stale == [], f"modules no longer in the source tree (a stale build/ folder?): {stale}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "defectlab = defectlab.cli.main:main" in text
    for module in plugin_modules_with_hooks():
        assert module in text


def test_wheel_install_runs(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import defectlab as dl, sys; print(dl.__file__); "
            "print(dl.create('imbalance', 'oii')(2, 5, 1)); "
            "print(sorted(p.name for p in dl.plugins()))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert abs(float(out[1]) + 0.6667) < 1e-4
    assert "class_imbalance" in out[2] and "oii" in out[2]


def test_listing_and_showing_components_imports_no_heavy_library():
    """``list`` and ``show`` need names, summaries and parameters: the libraries that do the work stay unloaded."""
    code = ("import sys\nfrom click.testing import CliRunner\nfrom defectlab.cli.main import cli\n"
            "for args in (['list'], ['show', 'backbone', 'resnet18'], ['show', 'distance', 'emd']):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
            "heavy = {'torchmetrics', 'torchvision', 'sklearn', 'timm', 'segmentation_models_pytorch', 'scipy', 'ot',\n"
            "         'matplotlib', 'mlflow'}\n"
            "print(sorted({name.split('.')[0] for name in sys.modules} & heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
