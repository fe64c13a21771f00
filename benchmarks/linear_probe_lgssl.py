# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The linear probe's full cost search (evaluation.linear_probe) side by side with lgssl's own implementation, in
one run, on the same synthetic features: wall time of each and the test accuracy of each (they must agree to 0.1
point).

lgssl's code is not part of this package: pass a checkout of github.com/mbanani/lgssl with `--lgssl-repo` (its
`lgssl/evaluation/linear_probe.py` imports loguru and scikit-learn; loguru is replaced by `logging` when missing).

    python benchmarks/linear_probe_lgssl.py --lgssl-repo ../lgssl --n 50000 --dim 768 --classes 100  # issue size
    python benchmarks/linear_probe_lgssl.py --lgssl-repo ../lgssl --n 5000 --dim 256 --classes 20  # minutes, 2 cores

The features are Gaussian clusters (centres of norm about `--spread`, noise of unit variance per dimension), not
separable, so that every cost's L-BFGS converges as it does on real features; train and test are drawn from the
same clusters; validation is lgssl's 20 % of each training class.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import types

import torch


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import cpu_description, environment, write_json  # noqa: E402


def _features(n: int, dim: int, classes: int, spread: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * spread / dim**0.5
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=generator)]
    return centres[labels] + torch.randn(n, dim, generator=generator), labels


def _import_lgssl(repo: str):
    if "loguru" not in sys.modules:
        try:
            import loguru  # noqa: F401
        except ImportError:
            sys.modules["loguru"] = types.SimpleNamespace(logger=logging.getLogger("lgssl"))
    sys.path.insert(0, os.path.abspath(repo))
    from lgssl.evaluation.linear_probe import evaluate_linear_probe

    return evaluate_linear_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lgssl-repo", required=True, help="a checkout of mbanani/lgssl")
    parser.add_argument("--n", type=int, default=50_000, help="training images")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--spread", type=float, default=2.0, help="distance scale of the class centres")
    parser.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per fit (lgssl: 1000)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the measurements here (JSON)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers_diffclip.evaluation.linear_probe import linear_probe

    evaluate_linear_probe = _import_lgssl(args.lgssl_repo)
    features, labels = _features(args.n + args.n // 5, args.dim, args.classes, args.spread, args.seed)
    train, train_labels, test, test_labels = features[: args.n], labels[: args.n], features[args.n :], labels[args.n :]

    start = time.perf_counter()
    ours = linear_probe(train, train_labels, test, test_labels, max_iter=args.max_iter)
    ours_seconds = time.perf_counter() - start

    start = time.perf_counter()
    theirs = evaluate_linear_probe(
        train, train_labels, None, None, test, test_labels, False, max_iter=args.max_iter, combine_trainval=True
    )
    theirs_seconds = time.perf_counter() - start

    result = {
        "size": {"n_train": args.n, "n_test": args.n // 5, "dim": args.dim, "classes": args.classes},
        "max_iter": args.max_iter,
        "ours": {
            "seconds": ours_seconds,
            "acc1": 100 * ours["lp_acc1"],
            "best_cost": ours["lp_best_cost"],
            "fits": len(ours["lp_validation_scores"]) + 1,
        },
        "lgssl": {"seconds": theirs_seconds, "acc1": float(theirs)},
        "accuracy_difference_points": 100 * ours["lp_acc1"] - float(theirs),
        "time_ratio_ours_over_lgssl": ours_seconds / theirs_seconds,
        "machine": {**environment(), "cpu": cpu_description()},
    }
    print(json.dumps(result, indent=2))
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
