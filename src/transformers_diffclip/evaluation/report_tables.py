# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The suite's Markdown report, laid out as the paper's tables (Table 1: linear probe and few-shot; Table 2:
zero-shot ImageNet and retrieval Recall@5; Figure 3: OOD; Figure 4: MMVP-VLM) with the published numbers beside the
measured ones, every pair's difference with its 95 % paired bootstrap interval and McNemar's p-value, and the two
charts as PNG (matplotlib): the MMVP radar (Figure 4) and the OOD difference bars (Figure 3)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from ..core.files import atomic_write_bytes
from .published import OOD_AVERAGE_GAIN, published_for


def _pct(value: float | None, scale: float = 100.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.1f}"


def _published(model: dict) -> dict[str, float]:
    return published_for(model.get("published") or model.get("model"))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _difference_lines(output: dict, measure_names: dict[str, str]) -> list[str]:
    lines = []
    for comparison in output["comparisons"]:
        rows = []
        for dataset, measures in comparison["datasets"].items():
            for key, entry in measures.items():
                p_value = entry.get("mcnemar", {}).get("p_value")
                rows.append(
                    [
                        dataset,
                        measure_names.get(key, key),
                        f"{entry['difference']:+.2f}",
                        f"[{entry['low']:+.2f}, {entry['high']:+.2f}]",
                        "–" if p_value is None else f"{p_value:.3g}",
                    ]
                )
        if rows:
            lines.append(
                f"{comparison['second']} − {comparison['first']} (points; 95 % paired bootstrap interval, "
                f"{output['bootstrap']['resamples']} resamples, seed {output['bootstrap']['seed']}):"
            )
            lines.append("")
            lines += _table(["dataset", "measure", "difference", "95 % interval", "McNemar p"], rows)
    return lines


def _linear_probe(output: dict) -> list[str]:
    models = output["models"]
    datasets = list(models[0]["results"])
    lines = [
        "## Table 1 — linear probe",
        "",
        "Test accuracy (%) as lgssl reports it: mean per-class accuracy for Aircraft, Pets, Caltech-101 and "
        "Flowers, top-1 for the others (`lp_metric`). *paper* rows: the published numbers.",
        "",
    ]
    rows = []
    for model in models:
        values = [model["results"][d]["lp_metric"] for d in datasets]
        rows.append([model["name"], *[_pct(v) for v in values], _pct(sum(values) / len(values))])
        published = _published(model)
        if published:
            rows.append(
                [
                    f"{model['name']} *paper*",
                    *[_pct(published.get(f"linear_probe/{d}"), 1) for d in datasets],
                    _pct(published.get("linear_probe/average"), 1),
                ]
            )
    lines += _table(["model", *datasets, "average"], rows)
    return lines + _difference_lines(output, {"correct": "lp_metric"})


def _few_shot(output: dict) -> list[str]:
    models = output["models"]
    datasets = list(models[0]["results"])
    first = models[0]["results"][datasets[0]]
    lines = [
        "## Table 1 — few-shot",
        "",
        f"{first['fewshot_way']}-way {first['fewshot_shot']}-shot, {first['fewshot_query']} queries, "
        f"{first['fewshot_episodes']} episodes (seed {first['seed']}): mean episode accuracy (%) ± std.",
        "",
    ]
    rows = []
    for model in models:
        results = [model["results"][d] for d in datasets]
        means = [r["fewshot_acc_mean"] for r in results]
        rows.append(
            [
                model["name"],
                *[f"{r['fewshot_acc_mean']:.1f} ± {r['fewshot_acc_std']:.1f}" for r in results],
                f"{sum(means) / len(means):.1f}",
            ]
        )
        published = _published(model)
        if published:
            rows.append(
                [f"{model['name']} *paper*", *["–"] * len(datasets), _pct(published.get("few_shot/average"), 1)]
            )
    lines += _table(["model", *datasets, "average"], rows)
    return lines + _difference_lines(output, {"values": "episode accuracy"})


def _zero_shot(output: dict) -> list[str]:
    models = output["models"]
    datasets = list(models[0]["results"])
    rows = []
    for model in models:
        rows.append([model["name"], *[_pct(model["results"][d]["acc1"]) for d in datasets]])
        published = _published(model)
        if published:
            rows.append([f"{model['name']} *paper*", *[_pct(published.get(f"zeroshot/{d}"), 1) for d in datasets]])
    lines = ["## Table 2 — zero-shot classification (top-1 %)", ""] + _table(["model", *datasets], rows)
    return lines + _difference_lines(output, {"correct": "top-1"})


def _retrieval(output: dict) -> list[str]:
    models = output["models"]
    datasets = list(models[0]["results"])
    header = ["model"] + [f"{d} img R@5" for d in datasets] + [f"{d} txt R@5" for d in datasets]
    rows = []
    for model in models:
        results = model["results"]
        rows.append(
            [
                model["name"],
                *[_pct(results[d]["image_retrieval_recall@5"]) for d in datasets],
                *[_pct(results[d]["text_retrieval_recall@5"]) for d in datasets],
            ]
        )
        published = _published(model)
        if published:
            rows.append(
                [
                    f"{model['name']} *paper*",
                    *[_pct(published.get(f"retrieval/{d}/image_retrieval_recall@5"), 1) for d in datasets],
                    *[_pct(published.get(f"retrieval/{d}/text_retrieval_recall@5"), 1) for d in datasets],
                ]
            )
    lines = [
        "## Table 2 — retrieval Recall@5 (%)",
        "",
        "img = image retrieval (text → image), txt = text retrieval (image → text).",
        "",
    ]
    lines += _table(header, rows)
    return lines + _difference_lines(output, {"image_retrieval": "img R@5", "text_retrieval": "txt R@5"})


def _ood(output: dict) -> list[str]:
    models = output["models"]
    report = models[0]["results"]["ood"]
    datasets = list(report["datasets"])
    rows = []
    for model in models:
        result = model["results"]["ood"]
        rows.append(
            [model["name"], *[_pct(result["datasets"][d]["acc1"]) for d in datasets], _pct(result["ood_average"])]
        )
    lines = [
        "## Figure 3 — zero-shot ImageNet and its variants (top-1 %)",
        "",
        f"One classifier ({report['num_templates']} template(s)) for all; the 200-class variants are scored over "
        f"their classes' logits. Average over the variants (not {report['reference']}). The paper: DiffCLIP is "
        f"{OOD_AVERAGE_GAIN} points above CLIP on average.",
        "",
    ]
    lines += _table(["model", *datasets, "OOD average"], rows)
    return lines + _difference_lines(output, {"correct": "top-1"})


def _mmvp(output: dict) -> list[str]:
    models = output["models"]
    dataset = next(iter(models[0]["results"]))
    categories = list(models[0]["results"][dataset]["mmvp_per_category"])
    rows = []
    for model in models:
        result = model["results"][dataset]
        rows.append(
            [
                model["name"],
                *[f"{result['mmvp_per_category'][c]:.1f}" for c in categories],
                f"{result['mmvp_average']:.1f}",
            ]
        )
        published = _published(model)
        if published.get("mmvp/average") is not None:
            rows.append([f"{model['name']} *paper*", *["–"] * len(categories), f"{published['mmvp/average']:.1f}"])
    lines = ["## Figure 4 — MMVP-VLM (pair accuracy %)", ""] + _table(["model", *categories, "average"], rows)
    return lines + _difference_lines(output, {"correct": "pair accuracy"})


def _pope(output: dict) -> list[str]:
    rows = [
        [
            model["name"],
            split,
            *[_pct(result[f"pope_{m}"]) for m in ("accuracy", "precision", "recall", "f1")],
            _pct(result["pope_yes_ratio"]),
        ]
        for model in output["models"]
        for split, result in model["results"].items()
    ]
    lines = ["## POPE — the assistants' object hallucination (%)", ""]
    lines += _table(["assistant", "file", "accuracy", "precision", "recall", "F1", "yes ratio"], rows)
    return lines + _difference_lines(output, {"correct": "accuracy"})


SECTIONS = {
    "linear_probe": _linear_probe,
    "few_shot": _few_shot,
    "zeroshot": _zero_shot,
    "retrieval": _retrieval,
    "ood": _ood,
    "mmvp": _mmvp,
    "pope": _pope,
}


def render_report(suite, outputs: dict[str, dict]) -> str:
    """The Markdown report of a suite run."""
    lines = [
        "# DiffCLIP evaluation report",
        "",
        f"Suite: `{suite.source}`; features for the linear probe and few-shot: `{suite.feature_kind}`.",
        "",
    ]
    first = next(iter(outputs.values()))
    lines += _table(
        ["name", "model", "revision", "published numbers of"],
        [[m["name"], f"`{m['model']}`", m["revision"] or "–", m.get("published") or "–"] for m in first["models"]],
    )
    for task in SECTIONS:
        if task in outputs:
            lines += SECTIONS[task](outputs[task])
    return "\n".join(lines).rstrip() + "\n"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def write_charts(outputs: dict[str, dict], folder: Path) -> list[str]:
    """`mmvp_radar.png` (per-category accuracy of every model, as Figure 4) and `ood_difference.png` (second −
    first per dataset and the average, as Figure 3), for the tasks that ran. Returns the files written."""
    try:
        import matplotlib
    except ImportError as error:
        raise OSError("The charts need matplotlib: pip install 'transformers-diffclip[eval]'.") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "mmvp" in outputs:
        models = outputs["mmvp"]["models"]
        dataset = next(iter(models[0]["results"]))
        categories = list(models[0]["results"][dataset]["mmvp_per_category"])
        angles = [2 * math.pi * i / len(categories) for i in range(len(categories))]
        figure, axes = plt.subplots(figsize=(7, 7), subplot_kw={"projection": "polar"})
        for model in models:
            values = [model["results"][dataset]["mmvp_per_category"][c] for c in categories]
            axes.plot(angles + angles[:1], values + values[:1], label=model["name"])
            axes.fill(angles + angles[:1], values + values[:1], alpha=0.1)
        axes.set_xticks(angles)
        axes.set_xticklabels([c.replace(" and ", "\nand ") for c in categories], fontsize=8)
        axes.set_ylim(0, 100)
        axes.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1))
        axes.set_title("MMVP-VLM pair accuracy (%)")
        written.append(str(atomic_write_bytes(folder / "mmvp_radar.png", _png(figure))))
        plt.close(figure)
    if "ood" in outputs and outputs["ood"]["comparisons"]:
        comparison = outputs["ood"]["comparisons"][0]
        models = {m["name"]: m["results"]["ood"] for m in outputs["ood"]["models"]}
        first, second = models[comparison["first"]], models[comparison["second"]]
        names = list(first["datasets"])
        differences = [100 * (second["datasets"][d]["acc1"] - first["datasets"][d]["acc1"]) for d in names]
        names.append("average")
        differences.append(100 * (second["ood_average"] - first["ood_average"]))
        figure, axes = plt.subplots(figsize=(7, 4))
        axes.bar(names, differences, color=["tab:green" if d >= 0 else "tab:red" for d in differences])
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_ylabel(f"{comparison['second']} − {comparison['first']} (top-1 points)")
        axes.set_title("Zero-shot ImageNet and OOD variants")
        written.append(str(atomic_write_bytes(folder / "ood_difference.png", _png(figure))))
        plt.close(figure)
    return written


__all__ = ["render_report", "write_charts"]
