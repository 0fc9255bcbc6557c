"""A third-party plugin as a user installs it: pip-installed, found through its entry point,
reachable from the command line and from Python; broken plugins are recorded, not fatal.

These tests pip-install packages into a temporary folder of their own (``pip install
--target``: no dependencies, no build isolation, no index, so nothing is downloaded), never into
the environment the tests run in, and put that folder on the PYTHONPATH of the commands they
run. Every check runs in a subprocess, as a user would.

Most checks allow only the plugins they are about (``DEFECTLAB_PLUGINS``): collecting every
installed plugin's components imports what they import (torch, for the losses), about two
seconds per command. A few checks run with every installed plugin, to show the third-party
plugin among them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "defectlab-hello"
HELLO_DIST = "defectlab-hello"
BROKEN_DIST = "defectlab-test-broken-plugins"
DEFECTLAB = Path(sys.executable).with_name("defectlab")
BALANCE_2_1_1 = 1.5 * math.log(2) / math.log(3)  # Shannon evenness of (1/2, 1/4, 1/4)
SELECTED = "class_imbalance,oii,hello"  # the default allow-list of these tests
EVERY_PLUGIN = ""  # an empty DEFECTLAB_PLUGINS selects no allow-list: every installed plugin loads


#: Folders the fixtures installed into; the commands run here see the packages in them.
SITES: list[Path] = []


def _install(path: Path, target: Path) -> Path:
    """``pip install --target TARGET PATH`` (no dependencies, no index); returns TARGET."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-deps",
               "--no-build-isolation", "--no-index", "-q", "--target", str(target), str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"pip install --target {target} {path} failed:\n{result.stdout}\n{result.stderr}"
    return target


def _env(**overrides: str) -> dict[str, str]:
    """The current environment without the caller's plugin settings, with the fixtures' install
    folders on PYTHONPATH, allowing the plugins in ``SELECTED``, then ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFECTLAB_")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, SITES), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["DEFECTLAB_PLUGINS"] = SELECTED
    env.update(overrides)
    return env


def defectlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``defectlab`` console script of this environment."""
    return subprocess.run([str(DEFECTLAB), *args], capture_output=True, text=True, env=env or _env(),
                          timeout=120)


def defectlab_json(*args: str, env: dict[str, str] | None = None):
    result = defectlab(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def hello_installed(tmp_path_factory) -> Iterator[Path]:
    """examples/defectlab-hello installed into a temporary folder that the commands run here see."""
    assert DEFECTLAB.exists(), f"no defectlab console script next to {sys.executable}"
    source = shutil.copytree(HELLO, tmp_path_factory.mktemp("hello-source") / HELLO.name,
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = _install(source, tmp_path_factory.mktemp("hello-site"))  # built from a copy: no build/ in the repo
    SITES.append(site)
    try:
        yield HELLO
    finally:
        SITES.remove(site)


def test_the_tests_install_nothing_into_their_own_environment(hello_installed):
    """The example is installed for the commands run here, never into the environment running the tests."""
    from importlib import metadata

    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution(HELLO_DIST)
    assert all(not str(site).startswith(sys.prefix) for site in SITES)
    seen = subprocess.run([sys.executable, "-c", f"from importlib import metadata; print(metadata.version({HELLO_DIST!r}))"],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert seen.stdout.strip() == "0.1.0", seen.stderr


def test_hello_is_listed_as_a_plugin(hello_installed):
    records = {r["name"]: r for r in defectlab_json("plugins", env=_env(DEFECTLAB_PLUGINS=EVERY_PLUGIN))}
    hello = records["hello"]
    assert hello["version"] == "0.1.0"
    assert hello["module"] == "defectlab_hello"
    assert hello["kinds"] == ["imbalance"]
    assert hello["components"] == ["imbalance/balance"]
    assert hello["error"] is None
    # the built-in plugins are still there, and unharmed
    assert records["class_imbalance"]["error"] is None and records["oii"]["error"] is None


def test_hello_component_is_listed_and_described(hello_installed):
    listed = {c["name"]: c for c in defectlab_json("list", "imbalance")}
    assert listed["balance"]["plugin"] == "hello"
    assert listed["balance"]["summary"].startswith("Shannon evenness of class counts")
    assert {"gini", "oii"} <= set(listed)

    info = defectlab_json("show", "imbalance", "balance")
    assert info["scope"] == "input"
    assert info["parameters"] == [{
        "name": "ignore_empty", "type": "bool", "default": False, "required": False,
        "doc": "Leave out classes whose count is zero, so k counts only the classes that occur. "
               "By default every count given is a class, as for ``gini``.",
    }]


def test_hello_component_runs_from_the_command_line(hello_installed):
    result = defectlab_json("imbalance", "balance", "--counts", "2,1,1")
    assert result["value"] == pytest.approx(BALANCE_2_1_1)
    assert result["value"] == pytest.approx(0.9464, abs=1e-4)

    text = defectlab("imbalance", "balance", "--counts", "2,1,1")
    assert text.returncode == 0 and text.stdout.strip().startswith("balance = 0.9464")

    zero = defectlab_json("imbalance", "balance", "--counts", "5,0")
    assert zero["value"] == 0.0
    one_class = defectlab_json("imbalance", "balance", "--counts", "5,0", "--set", "ignore_empty=true")
    assert one_class["value"] == 1.0

    typo = defectlab("imbalance", "balance", "--counts", "5,0", "--set", "ignore_emtpy=true")
    assert typo.returncode == 1 and "did you mean 'ignore_empty'" in typo.stderr


def test_hello_command_is_added_to_the_cli(hello_installed):
    count = len(defectlab_json("list"))
    result = defectlab("hello", "--name", "tester")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello, tester!")
    assert f"has {count} components registered" in result.stdout
    assert "hello" in defectlab("--help").stdout


def test_hello_component_is_created_from_python(hello_installed):
    code = textwrap.dedent("""
        import defectlab
        balance = defectlab.create("imbalance", "balance")
        spec = defectlab.create("imbalance", {"name": "balance", "ignore_empty": True})
        print(balance([1, 1]), balance([2, 1, 1]), spec([5, 0]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    balanced, three, one_class = (float(v) for v in result.stdout.split())
    assert balanced == 1.0
    assert three == pytest.approx(BALANCE_2_1_1)
    assert one_class == 1.0


def test_environment_variables_select_plugins(hello_installed):
    every_but_hello = _env(DEFECTLAB_PLUGINS=EVERY_PLUGIN, DEFECTLAB_DISABLE_PLUGINS="hello")
    names = {r["name"] for r in defectlab_json("plugins", env=every_but_hello)}
    assert "hello" not in names and {"class_imbalance", "oii"} <= names

    hidden = _env(DEFECTLAB_DISABLE_PLUGINS="hello")  # the deny-list wins over the allow-list
    assert "hello" not in {r["name"] for r in defectlab_json("plugins", env=hidden) if r["error"] is None}
    assert "balance" not in {c["name"] for c in defectlab_json("list", "imbalance", env=hidden)}
    gone = defectlab("imbalance", "balance", "--counts", "1,1", env=hidden)
    assert gone.returncode == 1 and "unknown imbalance 'balance'" in gone.stderr
    assert defectlab("hello", env=hidden).returncode == 2  # no such command

    only = _env(DEFECTLAB_PLUGINS="class_imbalance")
    assert [r["name"] for r in defectlab_json("plugins", env=only)] == ["class_imbalance"]
    assert [c["name"] for c in defectlab_json("list", env=only)] == ["gini", "imbalance_ratio"]

    both = _env(DEFECTLAB_PLUGINS="class_imbalance,hello")
    assert [r["name"] for r in defectlab_json("plugins", env=both)] == ["class_imbalance", "hello"]

    typo = defectlab_json("plugins", env=_env(DEFECTLAB_PLUGINS="class_imbalance,helo"))
    assert "named in DEFECTLAB_PLUGINS but not installed; did you mean 'hello'" in (
        {r["name"]: r for r in typo}["helo"]["error"])


@pytest.mark.parametrize("allowed", [SELECTED, "class_imbalance,oii"], ids=["installed", "registered-by-fixture"])
def test_hello_package_own_tests_pass(hello_installed, allowed):
    """The example's own test suite, run as its author would; with the entry point not
    selected it exercises the ``defectlab_plugin`` fixture path instead."""
    env = _env(DEFECTLAB_PLUGINS=allowed)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests"], cwd=HELLO, capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout


BROKEN_MODULES = {
    # fails at import, as a plugin does whose dependency is not installed
    "defectlab_test_broken_import": """
        import defectlab_test_missing_dependency  # noqa: F401
    """,
    # imports fine, but its hook raises
    "defectlab_test_broken_hook": """
        from defectlab import hookimpl

        @hookimpl
        def register_imbalance_metrics():
            raise RuntimeError("the hook of this plugin is broken")
    """,
    # a misspelled hook name: pluggy would silently never call it
    "defectlab_test_misspelled": """
        from defectlab import hookimpl

        @hookimpl
        def register_loss():
            return []
    """,
}


@pytest.fixture
def broken_installed(tmp_path: Path) -> Iterator[Path]:
    """One package holding three broken plugins, installed into a temporary folder the commands see."""
    package = tmp_path / "broken-plugins"
    package.mkdir()
    entry_points = {"broken_import": "defectlab_test_broken_import", "broken_hook": "defectlab_test_broken_hook",
                    "misspelled": "defectlab_test_misspelled"}
    lines = [
        "[build-system]", 'requires = ["setuptools>=68"]', 'build-backend = "setuptools.build_meta"',
        "[project]", f'name = "{BROKEN_DIST}"', 'version = "0.0.1"', 'dependencies = ["defectlab"]',
        "[project.entry-points.defectlab]", *(f'{name} = "{module}"' for name, module in entry_points.items()),
        "[tool.setuptools]", f"py-modules = {json.dumps(sorted(BROKEN_MODULES))}",
    ]
    (package / "pyproject.toml").write_text("\n".join(lines) + "\n")
    for module, source in BROKEN_MODULES.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))
    site = _install(package, tmp_path / "site")
    SITES.append(site)
    try:
        yield package
    finally:
        SITES.remove(site)


BROKEN_SELECTED = f"{SELECTED},broken_import,broken_hook,misspelled"


def test_broken_plugins_are_recorded_and_the_rest_keeps_working(hello_installed, broken_installed):
    env = _env(DEFECTLAB_PLUGINS=BROKEN_SELECTED)
    records = {r["name"]: r for r in defectlab_json("plugins", env=env)}
    failed_import = records["broken_import"]["error"]
    assert "failed to import" in failed_import and "defectlab_test_missing_dependency" in failed_import
    assert "register_imbalance_metrics() raised RuntimeError: the hook of this plugin is broken" in (
        records["broken_hook"]["error"])
    assert "'register_loss' is not a defectlab hook; did you mean 'register_losses'" in records["misspelled"]["error"]
    assert records["hello"]["error"] is None and records["class_imbalance"]["error"] is None

    table = defectlab("plugins", env=env)
    assert table.returncode == 0
    assert "FAILED" in table.stdout and "broken_import: failed to import" in table.stderr

    gini = defectlab("imbalance", "gini", "--counts", "1,1", env=env)
    assert gini.returncode == 0, gini.stderr
    assert gini.stdout.startswith("gini = 0.0000")
    assert defectlab_json("imbalance", "balance", "--counts", "2,1,1", env=env)["value"] == (
        pytest.approx(BALANCE_2_1_1))

    strict = defectlab("list", env=_env(DEFECTLAB_PLUGINS=EVERY_PLUGIN, DEFECTLAB_STRICT_PLUGINS="1"))
    assert strict.returncode != 0
    assert "defectlab_test_missing_dependency" in strict.stderr

    # a deny-list hides the broken plugins again, strict or not
    quiet = _env(DEFECTLAB_PLUGINS=EVERY_PLUGIN, DEFECTLAB_STRICT_PLUGINS="1",
                 DEFECTLAB_DISABLE_PLUGINS="broken_import,broken_hook,misspelled")
    assert defectlab("list", env=quiet).returncode == 0


def test_a_plugin_both_allowed_and_denied_is_skipped_without_error(monkeypatch):
    from defectlab.plugin_system.loading import PluginLoader

    monkeypatch.setenv("DEFECTLAB_PLUGINS", "class_imbalance,oii")
    monkeypatch.setenv("DEFECTLAB_DISABLE_PLUGINS", "oii")
    loader = PluginLoader(strict=False)
    loader.load_entry_points()
    assert sorted(loader.registry.plugins) == ["class_imbalance"]
