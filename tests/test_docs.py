"""The docs keep up with the code: every hook, kind and command is documented, links resolve,
the hook examples in docs/hooks.md really register and run, and the README's tour runs as written."""

from __future__ import annotations

import re
import shlex
import sys
import types
from pathlib import Path

import click
import click.testing
import defectlab
import pluggy
import pytest
from defectlab.cli.main import cli
from defectlab.plugin_system import hookspecs
from defectlab.plugin_system.kinds import KINDS
from defectlab.plugin_system.loading import PluginLoader

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOKS_MD = DOCS / "hooks.md"
CLI_MD = DOCS / "cli.md"
README = ROOT / "README.md"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "examples" / "defectlab-hello" / "README.md"]


def declared_hooks() -> list[str]:
    """The hook names defectlab.plugin_system.hookspecs declares, found the way pluggy finds them."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return sorted(name for name in vars(manager.hook) if not name.startswith("_"))


def sections(path: Path) -> dict[str, str]:
    """Level-2 headings of a markdown file mapped to the text under them (code fences respected)."""
    found: dict[str, str] = {}
    heading, lines, in_code = None, [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("## "):
            if heading is not None:
                found[heading] = "\n".join(lines)
            heading, lines = line[3:].strip(), []
        elif heading is not None:
            lines.append(line)
    if heading is not None:
        found[heading] = "\n".join(lines)
    return found


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def headings(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [line for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def test_hooks_are_found_by_introspection():
    hooks = declared_hooks()
    assert "register_losses" in hooks and "register_commands" in hooks
    assert {kind.hook for kind in KINDS.values()} <= set(hooks)


@pytest.mark.parametrize("hook", declared_hooks())
def test_every_hook_has_a_section_with_a_python_example(hook):
    documented = sections(HOOKS_MD)
    assert f"`{hook}`" in documented, f"docs/hooks.md has no section '## `{hook}`'"
    assert python_blocks(documented[f"`{hook}`"]), f"the section of {hook} in docs/hooks.md has no ```python block"


def test_hooks_md_documents_no_hook_that_does_not_exist():
    documented = {h.strip("`") for h in sections(HOOKS_MD) if h.startswith("`")}
    assert documented <= set(declared_hooks())


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_has_a_page_naming_its_hook(kind):
    page = DOCS / "kinds" / f"{kind}.md"
    assert page.is_file(), f"docs/kinds/{kind}.md is missing"
    assert KINDS[kind].hook in page.read_text(encoding="utf-8")


def test_no_page_for_a_kind_that_does_not_exist():
    assert {p.stem for p in (DOCS / "kinds").glob("*.md")} <= set(KINDS)


def builtin_commands() -> list[str]:
    """Commands of the defectlab group that come with defectlab itself (not from a plugin)."""
    return sorted(name for name, command in cli.commands.items()
                  if (getattr(command.callback, "__module__", "") or "").startswith("defectlab."))


@pytest.mark.parametrize("command", builtin_commands())
def test_every_command_has_a_heading_in_cli_md(command):
    pattern = re.compile(rf"defectlab {re.escape(command)}(?![\w-])")
    assert any(pattern.search(line) for line in headings(CLI_MD)), \
        f"docs/cli.md has no heading for `defectlab {command}`"


def test_builtin_commands_are_found():
    assert {"plugins", "list", "show", "imbalance", "validate"} <= set(builtin_commands())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path = target.split("#")[0]
        if path:
            assert (page.parent / path).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_python_examples_in_docs_compile():
    for page in PAGES:
        for index, block in enumerate(python_blocks(page.read_text(encoding="utf-8"))):
            compile(block, f"{page.relative_to(ROOT)} block {index}", "exec")


# --- the hook examples run -------------------------------------------------------------------


@pytest.fixture
def hook_examples(monkeypatch) -> PluginLoader:
    """Each hook section's code, executed as modules and registered in a fresh strict loader."""
    loader = PluginLoader(strict=True)
    for hook, text in sections(HOOKS_MD).items():
        hook = hook.strip("`")
        for index, block in enumerate(python_blocks(text)):
            named = re.match(r"#\s*([\w/]+)\.py", block)
            module_name = (named.group(1).replace("/", ".").removesuffix(".__init__") if named
                           else f"docs_hooks_{hook}_{index}")
            module = types.ModuleType(module_name)
            exec(compile(block, f"docs/hooks.md ({hook}, block {index})", "exec"), module.__dict__)
            monkeypatch.setitem(sys.modules, module_name, module)
            if any(loader.manager.parse_hookimpl_opts(module, attr) for attr in dir(module)):
                loader.add_plugin(module, module_name)
    return loader


def test_hook_examples_register_and_work(hook_examples, tmp_path):
    torch = pytest.importorskip("torch")
    from PIL import Image

    registry = hook_examples.registry
    assert {kind: [c.name for c in registry.list(kind)] for kind in KINDS} == {
        "distance": ["mean_brightness"], "imbalance": ["fp_share"], "backbone": ["tiny_cnn"],
        "ssl": ["rotation"], "loss": ["soft_iou"], "evaluator": ["accuracy"], "dataset": ["ok_ng"],
        "callback": ["loss_csv"],
    }
    assert not [r.error for r in registry.plugins.values() if r.error]

    def build(kind, name, **params):
        return registry.get(kind, name).build(params)

    assert build("imbalance", "fp_share")(10, 3, 1) == 0.75

    for folder, grey in (("ok", 40), ("ok", 60), ("ng", 200)):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.new("L", (8, 8), grey).save(tmp_path / folder / f"{grey}.png")
    dataset = build("dataset", "ok_ng", root=str(tmp_path))
    assert registry.get("dataset", "ok_ng").obj.detect(tmp_path)
    assert dataset.classes == ["ok", "ng"] and dataset.class_counts() == [2, 1]

    distance = build("distance", "mean_brightness", max_images="2")  # command-line string -> int
    assert distance(distance.represent(dataset), 0.0) == pytest.approx(50.0)  # (40 + 60) / 2

    model = build("backbone", "tiny_cnn", num_classes=3, in_chans=1)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    assert registry.get("backbone", "tiny_cnn").attributes["tasks"] == ["classify"]

    from tests.tiny_models import TinyNet

    objective = build("ssl", "rotation", encoder=TinyNet(width=8))
    loss = objective.loss(objective.views(torch.rand(4, 3, 32, 32)))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert objective.export_encoder() is objective.encoder

    soft_iou = build("loss", "soft_iou")
    ones = torch.ones(1, 1, 4, 4)
    assert float(soft_iou(ones * 20, ones)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_iou(-ones * 20, ones)) == pytest.approx(1 - 1 / 17, abs=1e-6)  # (0 + 1) / (16 + 1)

    accuracy = build("evaluator", "accuracy")
    accuracy.update(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    assert accuracy.compute() == {"accuracy": 0.5}
    accuracy.reset()
    assert accuracy.compute() == {"accuracy": 0.0}

    loss_csv = build("callback", "loss_csv", file="losses.csv")
    assert isinstance(loss_csv, defectlab.Callback) and loss_csv.main_process_only
    for epoch, loss in ((1, 0.5), (2, 0.25)):
        loss_csv.on_epoch_end(types.SimpleNamespace(folder=tmp_path), {"epoch": epoch, "train/loss": loss})
    assert (tmp_path / "losses.csv").read_text() == "1,0.5\n2,0.25\n"

    group = click.Group("defectlab")
    hook_examples.add_commands(group)
    result = click.testing.CliRunner().invoke(group, ["count-components"])
    assert result.exit_code == 0 and int(result.output) >= 3


def test_every_builtin_component_is_listed_on_its_kind_page():
    import defectlab as dl

    for component in dl.list_components():
        if component.version != dl.__version__ or not component.obj.__module__.startswith("defectlab_plugins"):
            continue
        page = (DOCS / "kinds" / f"{component.kind}.md").read_text()
        assert f"`{component.name}`" in page, f"docs/kinds/{component.kind}.md does not list `{component.name}`"


def api_md_names() -> list[str]:
    """The names docs/api.md documents: its ``### `name` `` headings."""
    return re.findall(r"^### `([^`]+)`\s*$", (DOCS / "api.md").read_text(encoding="utf-8"), flags=re.M)


def test_api_md_documents_exactly_the_public_api():
    import defectlab

    documented = api_md_names()
    assert len(documented) == len(set(documented)), "a name is documented twice in docs/api.md"
    assert sorted(set(defectlab.__all__) - set(documented)) == [], "exported but not in docs/api.md"
    assert sorted(set(documented) - set(defectlab.__all__)) == [], "in docs/api.md but not exported"


def test_every_public_name_resolves():
    import defectlab

    missing = [name for name in defectlab.__all__ if not hasattr(defectlab, name)]
    assert missing == []


def help_blocks() -> list[tuple[list[str], str]]:
    """(command words, the first code block under its heading) of every ``## `defectlab ...` `` section of cli.md."""
    text = CLI_MD.read_text(encoding="utf-8")
    return [(words.split()[1:], block) for words, block in
            re.findall(r"^## `(defectlab[^`]*)`\n\n```\n(.*?)\n```", text, flags=re.S | re.M)]


@pytest.mark.parametrize("words, block", help_blocks(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_cli_md_shows_each_command_help_as_it_is(words, block):
    result = click.testing.CliRunner().invoke(cli, [*words, "--help"], terminal_width=80, prog_name="defectlab")
    cores = re.compile(r"\[default: \d+; x>=1\]")  # the number of decoding threads follows the machine's cores
    assert cores.sub("[default: N; x>=1]", result.output.rstrip("\n")) == cores.sub("[default: N; x>=1]", block)


# --- the README's tour -----------------------------------------------------------------------

#: Tour commands quick enough to run here (the rest train, screen or predict: minutes to hours).
CHEAP_COMMANDS = ("plugins", "list", "show", "imbalance", "validate")


def tour_commands() -> list[list[str]]:
    """The arguments of each ``defectlab ...`` line of the README's tour, comments dropped."""
    block = re.search(r"^```bash\n(.*?)^```", sections(README)["A short tour"], flags=re.S | re.M).group(1)
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("defectlab ")]


@pytest.mark.parametrize("args", [a for a in tour_commands() if a[0] in CHEAP_COMMANDS], ids=" ".join)
def test_the_tours_quick_commands_run_as_written(args, run_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output


def test_the_tours_training_configs_validate_with_their_settings(run_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    for args in tour_commands():
        if args[0] in ("train", "pretrain", "sweep", "tune-oii", "tune") and args[1].endswith(".toml"):
            settings = [word for option, value in zip(args, args[1:]) if option == "--set" for word in (option, value)]
            result = run_cli("validate", args[1], *settings)
            assert result.exit_code == 0, f"{' '.join(args)}: {result.output}"


def test_every_file_the_tour_names_exists_or_an_earlier_line_writes_it():
    written: list[str] = []
    for args in tour_commands():
        named = [(option, word) for option, word in zip(["", *args], args)
                 if option not in ("--set", "--grid", "--param", "--metric")]
        for option, word in named:
            if option == "--out":
                written.append(word)
            elif word.startswith(".venv/"):  # the ELPV cells, installed by make with the elpv-dataset package
                elpv = pytest.importorskip("elpv_dataset")
                assert word.endswith("elpv_dataset/data/images")
                assert (Path(elpv.__file__).parent / "data" / "images").is_dir()
            elif "/" in word and not word.startswith("-"):
                assert (ROOT / word).exists() or any(word == w or word.startswith(w + "/") for w in written), \
                    f"`defectlab {' '.join(args)}` names {word}, which neither exists nor an earlier line writes"
        if args[0] == "export":
            written.append(f"{args[1]}/best.onnx")


def test_the_docs_cite_the_papers_not_internal_documents():
    pages = [README, *DOCS.rglob("*.md"), *(ROOT / "examples").glob("*.toml"), *(ROOT / "examples").glob("*.py")]
    cited = [f"{p.relative_to(ROOT)}: {line.strip()}" for p in pages
             for line in p.read_text(encoding="utf-8").splitlines() if re.search(r"\bSPEC \d|\bseed 00\d", line)]
    assert cited == [], "cite docs/references.md instead:\n" + "\n".join(cited)
    anchors = {re.sub(r"[^\w\- ]", "", h[3:].strip().lower()).replace(" ", "-")
               for h in headings(DOCS / "references.md") if h.startswith("## ")}
    for page in [README, *DOCS.rglob("*.md")]:
        for anchor in re.findall(r"references\.md#([\w-]+)", page.read_text(encoding="utf-8")):
            assert anchor in anchors, f"{page.relative_to(ROOT)} links to references.md#{anchor}, which has no heading"
