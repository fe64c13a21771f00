# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The `diffclip zero-shot` and `diffclip eval {zero-shot,retrieval}` commands: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import positive_int
from ..core.files import check_output_file, json_text, write_json
from ..core.images import check_image_sources
from ..core.loading import add_model_arguments
from ..core.text_files import check_templates, load_class_names, load_templates
from ..export.runtime import add_backend_arguments
from .arguments import add_runtime_arguments, load_model_from_args
from .classifier import ZeroShotClassifier
from .features import FeatureCache
from .labels import (
    DEFAULT_TEMPLATE,
    duplicate_labels,
    parse_label_list,
)
from .paper_tasks import ModelRun, run_retrieval, run_zero_shot
from .reports import FORMATS, clip_benchmark_result, report_metadata
from .tasks import dataset_of, zero_shot_dataset


DATA_HELP = "a dataset folder or file, wds/<name> (CLIP_benchmark's Hub datasets) or a Hub dataset id"


def _add_template_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--templates", metavar="FILE", help="prompt templates with '{}': text file (one per line) or JSON (see --key)"
    )
    parser.add_argument(
        "--template",
        action="append",
        metavar="TEXT",
        help=f"a prompt template, repeatable (default: {DEFAULT_TEMPLATE!r})",
    )
    parser.add_argument(
        "--key",
        help="the entry to use in JSON label/template files that hold several (e.g. imagenet); text files ignore it",
    )


def _warn_duplicates(labels) -> list[str]:
    duplicates = duplicate_labels(labels)
    if duplicates:
        print(
            f"warning: the class list names {', '.join(repr(d) for d in duplicates)} more than once; such classes get "
            "the same embedding and tie on every image (ties count against the true class).",
            file=sys.stderr,
        )
    return duplicates


def _finish_report(args: argparse.Namespace, run: ModelRun, report: dict, task: str, **facts) -> dict:
    """The report with its metadata last, written to --output if given (in --format's layout)."""
    report["metadata"] = report_metadata(
        run.model, args.model, args.revision, data=str(args.data), num_images=report["num_images"], **facts
    )
    if args.output:
        if args.format == "clip_benchmark":
            pretrained = args.revision or report["metadata"].get("commit_hash")
            write_json(args.output, clip_benchmark_result(report, task, report["dataset"], args.model, pretrained))
        else:
            write_json(args.output, report)
    return report


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the report here (JSON, checked before the evaluation starts; written atomically, replacing a "
        "report there whole)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="json",
        help="layout of --output; the metrics carry CLIP_benchmark's names in both: this package's report with every "
        "count and its metadata (json, default) or CLIP_benchmark's own {dataset, model, pretrained, task, metrics, "
        "language} file (clip_benchmark)",
    )
    parser.add_argument("--dataset-name", help="the dataset's name in the report (default: --data's name)")
    parser.add_argument(
        "--split", default="test", help="the split to evaluate (default: test; an ImageFolder or a file is one split)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="keep the image features in this feature cache and reuse them (as diffclip embed and eval suite do); "
        "default: none",
    )


def _given_templates(args: argparse.Namespace) -> list[str]:
    if args.classifier and (args.templates or args.template):
        raise ValueError(
            "--templates/--template do not combine with --classifier: it keeps the templates it was built with."
        )
    templates = []
    if args.templates:
        templates.extend(load_templates(args.templates, args.key))
    if args.template:
        templates.extend(check_templates(args.template))
    return templates


def _templates_from_args(args: argparse.Namespace) -> list[str]:
    return _given_templates(args) or [DEFAULT_TEMPLATE]


def _load_or_build_classifier(args, model, processor, labels, templates, saved) -> ZeroShotClassifier:
    if saved is not None:
        saved.check_model(model, processor, source=f"The classifier {args.classifier}")
        return saved
    return ZeroShotClassifier.from_model(
        model,
        processor,
        labels,
        templates,
        batch_size=args.text_batch_size,
        progress=not args.no_progress,
        model_name=args.model,
    )


def _run_zero_shot(args: argparse.Namespace) -> int:
    if args.labels is not None:
        labels = parse_label_list(args.labels)
    elif args.labels_file is not None:
        labels = load_class_names(args.labels_file, args.key)
        if isinstance(labels, dict):
            labels = list(labels.values())
    else:
        labels = None
    templates = _templates_from_args(args)  # validates the template options before the model loads
    if not args.images and not args.save_classifier:
        raise ValueError("No images given (and no --save-classifier): nothing to do.")
    check_image_sources(args.images)
    if args.save_classifier:  # before the model loads
        ZeroShotClassifier.check_save_target(args.save_classifier, overwrite=args.overwrite)
    saved = ZeroShotClassifier.from_pretrained(args.classifier) if args.classifier else None  # before the model
    if labels is not None:
        _warn_duplicates(labels)
    model, processor = load_model_from_args(args)
    classifier = _load_or_build_classifier(args, model, processor, labels, templates, saved)
    if args.save_classifier:
        classifier.save_pretrained(args.save_classifier, overwrite=args.overwrite)
        print(f"Saved the classifier ({classifier.num_classes} classes) to {args.save_classifier}", file=sys.stderr)
    if not args.images:
        return 0
    results = classifier.classify(
        model,
        processor,
        args.images,
        top_k=args.top_k,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    if args.json:
        print(json_text(results))
    else:
        for result in results:
            print(result["image"])
            for prediction in result["predictions"]:
                print(f"  {prediction['score']:.4f}  {prediction['label']}")
    return 0


def _model_run(args: argparse.Namespace) -> ModelRun:
    model, processor = load_model_from_args(args)
    return ModelRun(
        model,
        processor,
        args.model,
        args.revision,
        FeatureCache(args.cache_dir),
        args.batch_size,
        args.text_batch_size,
        args.num_workers,
        not args.no_progress,
        processes=(0, 1),  # one process encodes every image (diffclip embed shares the work under torchrun)
    )


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _run_eval_zero_shot(args: argparse.Namespace) -> int:
    if args.output:
        check_output_file(args.output)
    templates = _given_templates(args)  # none given: the dataset's own, else the default template
    saved = ZeroShotClassifier.from_pretrained(args.classifier) if args.classifier else None
    name = args.dataset_name or Path(args.data).name
    spec = zero_shot_dataset(args.data, args.split, args.classnames, args.key, templates, saved, name)
    _warn_duplicates(spec.split(args.split).class_names)
    run = _model_run(args)
    if saved is not None:
        saved.check_model(run.model, run.processor, source=f"The classifier {args.classifier}")
    report, _ = run_zero_shot(run, spec, args.split, saved)
    report = _finish_report(
        args,
        run,
        report,
        "zeroshot_classification",
        templates=report["templates"],
        num_classes=report["num_classes"],
        classifier=args.classifier,
        class_matching=report["class_matching"],
    )
    print(
        f"zero-shot on {report['num_images']} images, {report['num_classes']} classes, "
        f"{report['num_templates']} template(s): top-1 {_percent(report['acc1'])}  top-5 {_percent(report['acc5'])}"
        f"  mean per-class {_percent(report['mean_per_class_recall'])}"
    )
    return 0


def _run_eval_retrieval(args: argparse.Namespace) -> int:
    if args.output:
        check_output_file(args.output)
    spec = dataset_of(
        args.data, args.split, image_root=args.image_root, name=args.dataset_name or Path(args.data).name
    )
    spec.check((args.split,), "retrieval")
    split = spec.split(args.split)
    if split.sources is not None:
        check_image_sources(split.sources)
    run = _model_run(args)
    report, _ = run_retrieval(run, spec, args.split)
    report = _finish_report(args, run, report, "zeroshot_retrieval", num_captions=report["num_captions"])
    print(f"retrieval on {report['num_images']} images, {report['num_captions']} captions")
    for direction, what in (("text to image", "image"), ("image to text", "text")):
        prefix = f"{what}_retrieval_recall@"
        recalls = [f"R@{k.removeprefix(prefix)} {_percent(v)}" for k, v in report.items() if k.startswith(prefix)]
        recalls = "  ".join(recalls)
        print(f"  {direction}: {recalls}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `diffclip zero-shot` and `diffclip eval {zero-shot,retrieval}`."""
    parser = subparsers.add_parser(
        "zero-shot",
        help="classify images against labels given on the command line",
        description="Rank the given labels for each image (paths or URLs) with a DiffCLIP model. The class "
        "embeddings are computed once for all images.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image paths or http(s) URLs")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument(
        "--labels",
        help='comma-separated labels, e.g. "cat,dog,a red car"; quote a label that holds a comma: '
        "'cat,\"dog, small\",car'",
    )
    labels.add_argument("--labels-file", metavar="FILE", help="labels: text file (one per line) or JSON (see --key)")
    labels.add_argument("--classifier", metavar="DIR", help="a classifier saved with --save-classifier")
    _add_template_arguments(parser)
    parser.add_argument("--top-k", type=positive_int, default=5, help="labels shown per image (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--save-classifier",
        metavar="DIR",
        help="save the class embeddings for reuse (a new or empty folder; the folder appears whole or not at all)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="let --save-classifier replace a classifier saved there before"
    )
    add_model_arguments(parser)
    add_runtime_arguments(parser, default_batch_size=32)
    add_backend_arguments(parser)
    parser.set_defaults(func=_run_zero_shot)

    evaluation = subparsers.add_parser("eval", help="zero-shot accuracy and retrieval recall on a dataset")
    tasks = evaluation.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True

    zero_shot = tasks.add_parser(
        "zero-shot",
        help="top-1/top-5 accuracy on a classification set",
        description="Zero-shot accuracy (acc1, acc5, mean_per_class_recall) on a classification set in any layout "
        "the suite reads: CLIP_benchmark's webdataset folder (or wds/<name>), split folders, an ImageFolder tree.",
    )
    zero_shot.add_argument("--data", required=True, metavar="DATA", help=DATA_HELP)
    zero_shot.add_argument(
        "--classnames",
        metavar="FILE",
        help="class names: text (one per line, or folder<TAB>name) or JSON (list, {folder: name}, or keyed; see "
        "--key); default: the dataset's own (classnames.txt, else the folder names)",
    )
    zero_shot.add_argument(
        "--classifier",
        metavar="DIR",
        help="a saved classifier instead of --templates; its classes are matched to the folders (or --classnames) by "
        "name",
    )
    _add_template_arguments(zero_shot)
    _add_output_arguments(zero_shot)
    add_model_arguments(zero_shot, default_model=None)
    add_runtime_arguments(zero_shot, default_batch_size=64)
    zero_shot.set_defaults(func=_run_eval_zero_shot)

    retrieval = tasks.add_parser(
        "retrieval",
        help="text-to-image and image-to-text Recall@1/5/10 on a retrieval set",
        description="Retrieval recall on JSON Lines of {'image': PATH, 'captions': [...]} (or 'caption': TEXT), a "
        "Karpathy split JSON, or CLIP_benchmark's webdataset folder with captions (or wds/<name>).",
    )
    retrieval.add_argument("--data", required=True, metavar="DATA", help=DATA_HELP)
    retrieval.add_argument(
        "--image-root",
        metavar="DIR",
        help="folder that relative image paths start from (JSON Lines, Karpathy JSON; default: the file's folder)",
    )
    _add_output_arguments(retrieval)
    add_model_arguments(retrieval, default_model=None)
    add_runtime_arguments(retrieval, default_batch_size=64)
    retrieval.set_defaults(func=_run_eval_retrieval)

    from .suite_cli import register_cli as register_paper_cli  # eval linear-probe/few-shot/mmvp/suite, embed

    register_paper_cli(subparsers, tasks)

    from ..assistant.cli import register_pope_cli  # eval pope (a LLaVA assistant's object hallucination)

    register_pope_cli(tasks)


__all__ = ["register_cli"]
