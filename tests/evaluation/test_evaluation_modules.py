"""The evaluation package's modules import one another without a circle (issue 27: datasets <-> mmvp was one,
hidden by a function-level import), parsed with `ast` by the import-direction test's reader (nothing imported)."""

from __future__ import annotations

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/test_import_direction.py

from test_import_direction import imported, modules  # noqa: E402


def test_evaluation_modules_import_each_other_without_a_circle():
    found = modules()
    known = set(found)
    graph = {
        module: {target for target in imported(module, path, known) if target.startswith("evaluation.")}
        for module, path in found.items()
        if module.startswith("evaluation.")
    }
    assert {"evaluation.datasets", "evaluation.mmvp"} <= set(graph)
    circles, done, path = [], set(), []

    def visit(module: str) -> None:
        if module in path:
            circles.append(" -> ".join(path[path.index(module) :] + [module]))
            return
        if module in done:
            return
        path.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert circles == []


def test_evaluation_modules_stay_small():
    folder = Path(__file__).resolve().parents[2] / "src" / "transformers_diffclip" / "evaluation"
    for name in (
        "datasets.py",
        "splits.py",
        "wds_splits.py",
        "split_batches.py",
        "mmvp.py",
        "features.py",
        "cache_files.py",
    ):
        assert len((folder / name).read_text().splitlines()) <= 450, name
