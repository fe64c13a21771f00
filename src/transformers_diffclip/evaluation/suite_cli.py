# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The paper's evaluation commands: `diffclip eval {linear-probe,few-shot,mmvp,suite}` and `diffclip embed`.
Parse, call the library (evaluation.paper_tasks, evaluation.suite, evaluation.features), print, write atomically."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.distributed import process_device, process_group, rank_world
from ..core.errors import positive_int
from ..core.files import atomic_write_bytes, check_output_file, write_json
from ..core.loading import add_model_arguments
from ..export.runtime import add_backend_arguments
from .arguments import add_runtime_arguments, load_model_from_args, model_loader
from .datasets import open_split
from .features import FEATURE_KINDS, FeatureCache, default_cache_dir, encode_split, manifest_metadata
from .few_shot import DEFAULT_SEED, EPISODES, QUERIES, SHOTS, WAYS, check_episodes
from .linear_probe import MAX_ITER, PENALTIES
from .paper_tasks import DatasetSpec, ModelRun, run_few_shot, run_linear_probe, run_mmvp
from .reports import report_metadata


DATA_HELP = "a dataset folder or file, wds/<name> (CLIP_benchmark's Hub datasets) or a Hub dataset id"


def _cache(args) -> FeatureCache:
    return FeatureCache(None if args.no_cache else (args.cache_dir or default_cache_dir()))


def _spec(args) -> DatasetSpec:
    return DatasetSpec(
        name=args.dataset_name or str(args.data).rstrip("/"),
        data=str(args.data),
        classnames=getattr(args, "classnames", None),
        key=getattr(args, "key", None),
        image_root=getattr(args, "image_root", None),
        metric=getattr(args, "metric", None),
    )


def _run(args) -> ModelRun:
    model, processor = load_model_from_args(args)
    return ModelRun(
        model,
        processor,
        args.model,
        args.revision,
        _cache(args),
        args.batch_size,
        args.text_batch_size,
        args.num_workers,
        not args.no_progress,
    )


def _finish(args, run: ModelRun, report: dict) -> None:
    report["metadata"] = report_metadata(run.model, run.name, run.revision, data=str(args.data))
    if args.output:
        write_json(args.output, report)


def _check_output(args) -> None:
    if args.output:  # before the data is read or a model loads
        check_output_file(args.output)


def _prepare(args, splits: tuple[str, ...]) -> tuple[DatasetSpec, ModelRun]:
    """The checks in order (--output, then every split the task reads), then the model: bad input fails before
    any model loads."""
    _check_output(args)
    spec = _spec(args)
    spec.check(splits)
    return spec, _run(args)


def _run_linear_probe(args) -> int:
    spec, run = _prepare(args, ("train", "test"))
    report, _ = run_linear_probe(run, spec, args.feature_kind, args.penalty, args.max_iter, args.probe_device)
    _finish(args, run, report)
    print(
        f"linear probe on {spec.name} ({args.feature_kind}): {report['lp_metric_name']} "
        f"{100 * report['lp_metric']:.2f}%  (top-1 {100 * report['lp_acc1']:.2f}%, mean per-class "
        f"{100 * report['lp_mean_per_class_recall']:.2f}%, best cost {report['lp_best_cost']:.4g})"
    )
    return 0


def _run_few_shot(args) -> int:
    check_episodes(args.episodes, "--episodes")  # bounded, before the data is read or a model loads
    spec, run = _prepare(args, ("train", "test"))
    report, _ = run_few_shot(run, spec, args.feature_kind, args.episodes, args.way, args.shot, args.query, args.seed)
    _finish(args, run, report)
    print(
        f"few-shot on {spec.name} ({args.way}-way {args.shot}-shot, {args.episodes} episodes, seed {args.seed}): "
        f"{report['fewshot_acc_mean']:.2f} ± {report['fewshot_acc_std']:.2f}%"
    )
    return 0


def _run_mmvp(args) -> int:
    spec, run = _prepare(args, ("test",))
    report, _ = run_mmvp(run, spec)
    _finish(args, run, report)
    for category, value in report["mmvp_per_category"].items():
        print(f"  {value:5.1f}  {category}")
    print(f"MMVP-VLM average: {report['mmvp_average']:.2f}% over {report['num_pairs']} pairs")
    return 0


def _run_suite(args) -> int:
    from .suite import ModelEntry, load_suite, run_suite

    check_output_file(args.output_dir / "report.md", "--output-dir")  # before any work
    suite = load_suite(args.suite)
    if args.model:
        entries = []
        for text in args.model:
            name, _, model = text.rpartition("=") if "=" in text else ("", "", text)
            entries.append(ModelEntry(name or model, model, None))
        suite.models = entries
    if len(suite.models) < 2 and not args.allow_single_model:
        raise ValueError(
            f"The suite compares models: give two or more (--model, or 'models' in {args.suite}); "
            "--allow-single-model runs one without comparisons."
        )
    if args.cache_dir:
        suite.cache_dir = str(args.cache_dir)
    if args.resamples is not None:
        suite.resamples = args.resamples
    if args.episodes is not None:
        suite.episodes = args.episodes

    args.device = process_device(args.device)  # under torchrun: one GPU per process
    with process_group(args.device):  # under torchrun: the processes share the encoding, process 0 the rest
        outputs = run_suite(
            suite,
            model_loader(args),
            args.output_dir,
            args.batch_size,
            args.num_workers,
            not args.no_progress,
            args.probe_device,
            text_batch_size=args.text_batch_size,
        )
    for path in outputs.get("_files", []):  # process 0's files; the others wrote none
        print(path)
    return 0


def _run_embed(args) -> int:
    _check_output(args)
    split = open_split(args.data, args.split, image_root=args.image_root)
    args.device = process_device(args.device)  # under torchrun: one GPU per process
    with process_group(args.device):  # under torchrun: NCCL on GPUs, else Gloo
        return _embed(args, split)


def _embed(args, split) -> int:
    rank, _ = rank_world()
    model, processor = load_model_from_args(args)
    cache = _cache(args)
    features = encode_split(
        model,
        processor,
        split,
        args.model,
        args.revision,
        cache=cache,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    where = cache.folder(features.manifest) if cache.root is not None else None
    if rank != 0:
        return 0
    if args.output:
        from safetensors.torch import save

        tensors = {"pre_projection": features.pre_projection, "projected": features.projected}
        atomic_write_bytes(args.output, save(tensors, manifest_metadata(features.manifest)))
        where = args.output
    print(
        f"{'cached' if features.cached else 'encoded'} {len(features.projected)} images of {split.describe()}: "
        f"pre_projection {tuple(features.pre_projection.shape)}, projected {tuple(features.projected.shape)}"
        + (f" -> {where}" if where else "")
    )
    return 0


def _add_common(parser: argparse.ArgumentParser, batch_size: int = 64) -> None:
    add_model_arguments(parser, default_model=None)
    add_runtime_arguments(parser, default_batch_size=batch_size)
    parser.add_argument("--cache-dir", type=Path, help=f"feature cache folder (default: {default_cache_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="keep no features on disk")


def _add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--dataset-name", help="the dataset's name in the report (default: --data)")
    parser.add_argument("--classnames", help="class names (text or JSON; see --key) instead of the dataset's own")
    parser.add_argument("--key", help="the entry of a JSON class-name file that holds several")
    parser.add_argument(
        "--output",
        metavar="FILE.json",
        help="write the report here (JSON, checked before any work; written atomically)",
    )


def register_cli(subparsers: argparse._SubParsersAction, tasks: argparse._SubParsersAction) -> None:
    """Add `eval linear-probe`, `eval few-shot`, `eval mmvp`, `eval suite` to the `eval` task parsers and `embed`
    to the top-level commands."""
    probe = tasks.add_parser(
        "linear-probe",
        help="lgssl's linear probe (L-BFGS logistic regression, two-stage cost search)",
        description="Linear probe as lgssl runs it: features of the train (and val) and test splits, a cost search "
        "on validation, a refit on train + validation, the test metric the paper reports for the dataset.",
    )
    _add_dataset(probe)
    probe.add_argument("--feature-kind", choices=FEATURE_KINDS, default="pre_projection")
    probe.add_argument("--metric", choices=("acc1", "mean_per_class_recall"), help="default: the paper's for the name")
    probe.add_argument("--penalty", choices=PENALTIES, default="norm", help="norm (lgssl) or squared (scikit-learn)")
    probe.add_argument("--max-iter", type=positive_int, default=MAX_ITER, help="L-BFGS iterations per fit")
    probe.add_argument("--probe-device", help="device of the logistic regression (default: the features')")
    _add_common(probe)
    probe.set_defaults(func=_run_linear_probe)

    few = tasks.add_parser(
        "few-shot",
        help="lgssl's episodic few-shot (5-way 5-shot, 6 queries, 5,000 seeded episodes)",
        description="Few-shot as lgssl runs it: seeded episodes, centred and normalised features, nearest prototype.",
    )
    _add_dataset(few)
    few.add_argument("--feature-kind", choices=FEATURE_KINDS, default="pre_projection")
    few.add_argument("--episodes", type=positive_int, default=EPISODES)
    few.add_argument("--way", type=positive_int, default=WAYS)
    few.add_argument("--shot", type=positive_int, default=SHOTS)
    few.add_argument("--query", type=positive_int, default=QUERIES)
    few.add_argument("--seed", type=int, default=DEFAULT_SEED)
    _add_common(few)
    few.set_defaults(func=_run_few_shot)

    mmvp = tasks.add_parser(
        "mmvp",
        help="MMVP-VLM pair accuracy per category, as evaluate_vlm.py",
        description="MMVP-VLM on its published folder (Questions.csv, 'MLLM_VLM Images/').",
    )
    _add_dataset(mmvp)
    _add_common(mmvp)
    mmvp.set_defaults(func=_run_mmvp)

    suite = tasks.add_parser(
        "suite",
        help="the paper's whole evaluation for two or more models from a YAML file, with significance",
        description="Run the tasks a YAML suite names (linear_probe, few_shot, zeroshot, ood, retrieval, mmvp) for "
        "every model; write one JSON per task, report.md and the charts into --output-dir.",
    )
    suite.add_argument("suite", help="the suite file (YAML); examples/paper_suite.yaml is the paper's")
    suite.add_argument(
        "--model",
        action="append",
        metavar="[NAME=]MODEL",
        help="a model to evaluate, repeatable (replaces the file's 'models'); list the baseline first",
    )
    suite.add_argument("--revision", help=argparse.SUPPRESS)
    suite.add_argument("--trust-remote-code", action="store_true", help="as for the other commands")
    suite.add_argument("--output-dir", required=True, type=Path, help="where the JSONs, report.md and PNGs go")
    suite.add_argument("--resamples", type=positive_int, help="bootstrap resamples (default: the file's, or 1000)")
    suite.add_argument("--episodes", type=positive_int, help="few-shot episodes (default: the file's, or 5000)")
    suite.add_argument("--probe-device", help="device of the logistic regressions")
    suite.add_argument("--allow-single-model", action="store_true", help="run one model (no comparisons)")
    suite.add_argument(
        "--cache-dir", type=Path, help=f"feature cache folder (default: the file's, else {default_cache_dir()})"
    )
    add_runtime_arguments(suite, default_batch_size=64)
    suite.set_defaults(func=_run_suite, no_cache=False)

    embed = subparsers.add_parser(
        "embed",
        help="compute and cache image features (pre-projection and projected) of a dataset split",
        description="Encode every image of a dataset split once, with a progress bar, into the feature cache "
        "(resumable: an interrupted run continues where it stopped) and optionally --output FILE.safetensors. "
        "Under torchrun every process encodes its share (one GPU each) and rank 0 writes the result.",
    )
    embed.add_argument("--data", required=True, help=DATA_HELP + ", or a folder of images")
    embed.add_argument("--split", default="test", help="train, test or val (default: test)")
    embed.add_argument("--image-root", help="folder of the images of a Karpathy or JSON Lines file")
    embed.add_argument("--output", metavar="FILE.safetensors", help="also write the features here")
    _add_common(embed)
    add_backend_arguments(embed)
    embed.set_defaults(func=_run_embed)


__all__ = ["register_cli"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the diffclip command")
