"""Imports run one way: commands -> tasks -> core -> model files (the project's layer rule).

Every module under src/ is parsed with `ast` (nothing is imported); every import of a `transformers_diffclip`
module, at the top or inside a function, is an arrow from the importing module's layer to the imported one's, and
no arrow may point up. The layers are written out here from the rule, not read from the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "transformers_diffclip"

MODEL, CORE, TASK, COMMAND = range(4)
LAYER_NAMES = {MODEL: "model files", CORE: "core", TASK: "tasks", COMMAND: "commands"}
MODEL_FILES = {"configuration_diffclip", "modeling_diffclip", "image_processing_diffclip", "processing_diffclip"}
MODEL_FILES |= {"tokenizer_files"}
CORE_PACKAGES = {"core", "original"}
TASK_PACKAGES = {"evaluation", "training", "interpret", "search", "demo", "assistant", "export"}
# argparse helpers that only the commands import (the eval commands' shared flags and the model they name)
COMMAND_HELPERS = {"evaluation.arguments"}


def layer(module: str) -> int:
    """The layer of a dotted module name below the package (`""` is the package's `__init__`, which registers the
    model classes and the original-checkpoint loader: core)."""
    parts = module.split(".") if module else []
    if not parts:
        return CORE
    if parts[0] in MODEL_FILES:
        return MODEL
    if parts[0] in CORE_PACKAGES:
        return CORE
    if parts[0] == "cli" or parts[-1] in ("cli", "__main__") or parts[-1].endswith("_cli"):
        return COMMAND
    if module in COMMAND_HELPERS:
        return COMMAND
    if parts[0] in TASK_PACKAGES:
        return TASK
    raise AssertionError(f"{PACKAGE}.{module} belongs to no layer; add it to the rule in {__file__}")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC / PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `module` imports (names below the package; a `from X import name` that names a
    submodule counts as importing that submodule)."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if module else []
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([PACKAGE, *base] + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                relative = name[len(PACKAGE) + 1 :]
                if relative in known:
                    targets.add(relative)
    targets.discard(module)
    return targets


def arrows() -> dict[tuple[int, int], list[str]]:
    known = modules()
    graph: dict[tuple[int, int], list[str]] = {}
    for module, path in known.items():
        for target in imported(module, path, set(known)):
            graph.setdefault((layer(module), layer(target)), []).append(f"{module or PACKAGE} -> {target or PACKAGE}")
    return graph


def test_every_module_has_a_layer():
    assert len(modules()) > 20
    for module in modules():
        layer(module)


def test_imports_point_down():
    upward = [
        f"{LAYER_NAMES[source]} -> {LAYER_NAMES[target]}: {', '.join(sorted(edges))}"
        for (source, target), edges in arrows().items()
        if target > source
    ]
    assert upward == []


def test_no_private_name_crosses_a_package():
    """No module imports a private name (`_x`) from another package of the source tree."""
    crossing = []
    known = modules()
    for module, path in known.items():
        top = module.split(".")[0] if module else ""
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").startswith(PACKAGE)):
                continue
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module[len(PACKAGE) + 1 :]
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private and target.split(".")[0] != top:
                crossing.append(f"{module}: {target} {private}")
    assert crossing == []


def test_tasks_meet_through_package_names():
    """A task reaches another task only through that package's public names (its `__init__`), never a module of
    it: what they share beyond that belongs in core."""
    known = modules()
    reaching_in = []
    for module, path in known.items():
        top = module.split(".")[0]
        if layer(module) != TASK:
            continue
        for target in imported(module, path, set(known)):
            if layer(target) == TASK and target.split(".")[0] != top and "." in target:
                reaching_in.append(f"{module} -> {target}")
    assert reaching_in == []


def test_search_does_not_import_training():
    """Search stands on core (shard lists, the embed-to-disk loop, the process group), not on training."""
    known = modules()
    reaching = [
        f"{module} -> {target}"
        for module, path in known.items()
        if module.split(".")[0] == "search"
        for target in imported(module, path, set(known))
        if target.split(".")[0] == "training"
    ]
    assert reaching == []


@pytest.mark.parametrize(
    "shared",
    [
        ("core.distributed", "process_group"),
        ("core.embed_to_disk", "ChunkedRows"),
        ("core.shards", "expand_shards"),
    ],
)
def test_what_tasks_share_is_defined_once_in_core(shared):
    """The process group, the embed-to-disk loop and the shard list are defined in core and nowhere else."""
    module, name = shared
    defining = [
        found
        for found, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name
    ]
    assert defining == [module]
    starts = [
        found
        for found, path in modules().items()
        if "init_process_group(" in path.read_text(encoding="utf-8") and found != "core.distributed"
    ]
    assert starts == []  # the process group is started in core.distributed only


# Names every command module defines by convention (the entry point, its parser, its sub-command registration).
COMMAND_CONVENTIONS = {"main", "build_parser", "register_cli"}


def test_one_name_one_meaning():
    """No public function or class name is defined in two modules of the package (a re-export is not a definition):
    two `load_model_and_processor`s or `retrieval_ranks`s with different signatures make a reader guess which one
    a call reaches. Only the command modules' conventional entry points may repeat."""
    defined: dict[str, list[str]] = {}
    for module, path in modules().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            definition = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if definition and not node.name.startswith("_"):
                defined.setdefault(node.name, []).append(module or PACKAGE)
    twice = {name: where for name, where in defined.items() if len(where) > 1 and name not in COMMAND_CONVENTIONS}
    assert twice == {}


@pytest.mark.parametrize(
    "module, expected",
    [
        ("", CORE),
        ("modeling_diffclip", MODEL),
        ("core.images", CORE),
        ("core.distributed", CORE),
        ("core.embed_to_disk", CORE),
        ("core.shards", CORE),
        ("original.cache", CORE),
        ("evaluation.tasks", TASK),
        ("interpret.maps", TASK),
        ("search.build", TASK),
        ("search", TASK),
        ("demo.logic", TASK),
        ("demo.app", TASK),
        ("search.cli", COMMAND),
        ("demo.cli", COMMAND),
        ("evaluation.suite_cli", COMMAND),
        ("training.run", TASK),
        ("training.cli", COMMAND),
        ("training.__main__", COMMAND),
        ("cli", COMMAND),
        ("assistant.recipe", TASK),
        ("assistant.cli", COMMAND),
    ],
)
def test_layer_rule(module, expected):
    assert layer(module) == expected


def test_the_checker_sees_an_upward_arrow(tmp_path):
    """The parser finds relative, absolute and function-level imports, so an upward arrow cannot hide."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from ..evaluation import tasks\n"
        "def f():\n"
        "    import transformers_diffclip.training.cli\n"
        "    from .images import open_image\n"
    )
    known = {"evaluation", "evaluation.tasks", "training.cli", "core.images"}
    assert imported("core.probe", source, known) == {"evaluation", "evaluation.tasks", "training.cli", "core.images"}


def test_no_module_imports_itself_through_others():
    """No circle in the import graph of the package's modules (imports inside functions included): a circle hides
    behind a function-level import until the day someone moves it to the top."""
    known = modules()
    graph = {module: imported(module, path, set(known)) for module, path in known.items()}
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []
