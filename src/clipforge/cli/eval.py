"""`clipforge eval {zeroshot,retrieval,linear-probe}`: the paper's measurements, one JSON per run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clipforge.cli.common import (
    add_model_argument,
    add_output_arguments,
    add_speed_arguments,
    add_templates_argument,
    json_text,
)
from clipforge.cores import usable_cores

# clipforge.data's registry, spelled out so `clipforge --help` need not import torch (a test keeps them equal)
DATASETS = ("imagenet", "cub", "cars", "cifar10", "cifar100", "folder", "birdsnap", "caltech101", "clevr_counts",
            "country211", "dtd", "eurosat", "fer2013", "fgvc_aircraft", "flowers102", "food101", "gtsrb",
            "imagenet_a", "imagenet_r", "imagenet_sketch", "imagenetv2", "kitti_distance", "mnist", "objectnet",
            "pcam", "pets", "rendered_sst2", "resisc45", "stl10", "sun397", "voc2007", "ucf101", "kinetics700",
            "hateful_memes")


class _TaskParser(argparse.ArgumentParser):
    """A subcommand parser that rejects unknown arguments itself, so the error shows the usage of
    `clipforge eval TASK`, not the top-level usage argparse would print after the fact."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error("unrecognized arguments: " + " ".join(extras))
        return namespace, extras


def _plot_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--plot", nargs="?", const="", default=None, metavar="DIR",
                        help=f"also write {what} PNGs into DIR (default: the --out folder)")


def _plot(args: argparse.Namespace) -> bool | str:
    return (args.plot or True) if args.plot is not None else False  # bare --plot: into --out


def _ks(text: str) -> list[int]:
    """``--fewshot-k``: distinct positive integers (each k runs --seeds draws: a repeat counted them twice)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 1,2,4,8,16; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    repeated = next((k for k in dict.fromkeys(values) if values.count(k) > 1), None)
    if repeated is not None:
        times = "twice" if values.count(repeated) == 2 else f"{values.count(repeated)} times"
        raise argparse.ArgumentTypeError(f"{text!r} lists k={repeated} {times}; each k already runs --seeds draws, so "
                                         "a repeat would count the same draws again: list each k once")
    return values


def _common(parser: argparse.ArgumentParser, expect_example: str = "top1=63.3") -> None:
    add_model_argument(parser, device=True)
    parser.add_argument("--batch-size", type=int, default=64, help="images per model batch (default 64)")
    add_speed_arguments(parser, workers=False)
    parser.add_argument("--workers", type=int, default=min(8, usable_cores()),
                        help="DataLoader worker processes (default: min(8, usable cores))")
    parser.add_argument("--out", default="eval_results", help="folder for the JSON report and log (default eval_results)")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate a fixed random subset of N images (seed 0) instead of all")
    parser.add_argument("--expect", action="append", metavar="METRIC=PCT",
                        help=f"golden check, e.g. {expect_example}; exit status 1 when a metric misses")
    parser.add_argument("--tolerance", type=float, default=0.3, help="allowed miss in percentage points (0.3)")
    add_output_arguments(parser, json=True, quiet=True)


def check_dataset_name(name: str) -> str:
    """`name` if it is a dataset `--dataset` knows, else ValueError in one line with the likeliest meaning
    (`cifr10` -> cifar10). Checked in the command, not by argparse `choices`, whose error was the whole
    usage text and no suggestion."""
    if name in DATASETS:
        return name
    import difflib

    guess = difflib.get_close_matches(name.lower(), DATASETS, n=1, cutoff=0.6)
    hint = f" (did you mean {guess[0]}?)" if guess else ""
    raise ValueError(f"--dataset {name!r}: unknown dataset{hint}; known: {', '.join(DATASETS)}")


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NAME",
                        help="one of: " + ", ".join(DATASETS) + " (layouts: docs/datasets.md of the source repository or sdist)")
    parser.add_argument("--root", required=True,
                        help="the dataset's folder, zip or download archive (layouts: docs/datasets.md of the source repository or sdist)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="zero-shot, retrieval and linear-probe evaluation",
                                   description="Evaluate a CLIP model; writes one JSON report + log per run.")
    tasks = parser.add_subparsers(dest="eval_task", metavar="TASK", parser_class=_TaskParser)

    zs = tasks.add_parser("zeroshot", help="zero-shot classification accuracy",
                          description="Zero-shot top-1/top-5 and mean per-class recall of a model on a labelled "
                                      "dataset, prompting with the dataset's own template set.")
    _common(zs)
    _dataset_args(zs)
    zs.add_argument("--split", default=None, help="split (default: val for imagenet, test otherwise)")
    add_templates_argument(zs, "the dataset's own set: imagenet (OpenAI's 80) for imagenet, cifar10/cifar100/cars "
                               "for those, a bird prompt for cub, simple for folder; for a model whose first "
                               "language is Chinese (`clipforge models`: languages) its Chinese twin where one exists, "
                               "zh-imagenet, zh-cifar10, zh-cifar100 or zh-simple, with Chinese class names")
    zs.set_defaults(templates=None)
    zs.add_argument("--classnames", default=None, metavar="F",
                    help="file of class names to prompt with: one per line, in the dataset's class order, UTF-8 "
                         "(or UTF-16 with its BOM)")
    _plot_argument(zs, "per-class accuracy and confusion-matrix")
    zs.add_argument("--cache-dir", default=None,
                    help="class-embedding cache (default: class_embeddings under $CLIPFORGE_CACHE, else under "
                         "~/.cache/clipforge)")
    zs.set_defaults(func=run_zeroshot)

    rt = tasks.add_parser("retrieval", help="image<->text recall@1/5/10 on a caption CSV",
                          description="Image-to-text and text-to-image recall@1/5/10 on images with captions "
                                      "(e.g. Flickr8k/30k, MS-COCO in CSV form).")
    _common(rt, "image_to_text_R@1=80.0")
    rt.add_argument("--captions", required=True,
                    help="CSV with image,caption rows (several per image; split by , tab | or ;), Flickr's own Flickr8k.token.txt "
                         "(<image>#<n><TAB><caption>), or Karpathy's dataset_flickr30k.json / dataset_coco.json "
                         "(its test split); every captioned image is evaluated")
    rt.add_argument("--images", default=None,
                    help="image folder (default: images/ or Images/ beside the captions, Flickr8k's "
                         "Flicker8k_Dataset/, else the captions' folder)")
    _plot_argument(rt, "recall@k curve")
    rt.set_defaults(func=run_retrieval)

    lp = tasks.add_parser("linear-probe", help="logistic-regression probe on frozen features (and few-shot)",
                          description="Fit a logistic-regression probe on frozen image features of the train split "
                                      "(all of it and/or k-shot draws) and report accuracy on the test split.")
    _common(lp)
    _dataset_args(lp)
    lp.add_argument("--split", default=None, help="test split (default: val for imagenet, test otherwise)")
    lp.add_argument("--train-split", default="train")
    lp.add_argument("--limit-train", type=int, default=None, help="fixed random subset of N training images")
    lp.add_argument("--fewshot-k", type=_ks, default=None, metavar="K,K,...", help="e.g. 1,2,4,8,16")
    lp.add_argument("--seeds", type=int, default=3, help="few-shot draws per k (default 3)")
    lp.add_argument("--no-full", action="store_true", help="skip the probe on all training data")
    lp.add_argument("--probe-features", choices=("embedding", "pre-projection"), default="embedding",
                    help="what the probe is fit on: embedding (encode_image, the joint embedding space, unnormalised; "
                         "default) or pre-projection (the image tower before visual.proj, as the CLIP paper's "
                         "appendix A.3 probed its ViTs: ln_post of the class token, 768-d for ViT-B/32; not for "
                         "ResNets or towers without a projection)")
    lp.add_argument("--feature-cache", default=None, help="feature cache folder (default features under $CLIPFORGE_CACHE, else ~/.cache/clipforge/features)")
    _plot_argument(lp, "C-sweep, per-class accuracy, confusion-matrix and few-shot")
    lp.set_defaults(func=run_linear_probe)
    _register_suite(tasks)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _register_suite(tasks: argparse._SubParsersAction) -> None:
    st = tasks.add_parser(
        "suite", help="many models x many datasets, resumable, one merged table",
        description="Evaluate every --models spec on every --datasets entry found under --root (one folder per "
                    "dataset, in its official layout), with the same code as the single commands. Finished cells "
                    "(model fingerprint x dataset x split x task x prompt set) are never recomputed. Writes one "
                    "CLIP_benchmark-format JSON per cell, per-sample predictions (Parquet), table.md/csv/json with "
                    "open_clip's published numbers beside ours, and heatmap.png. Missing datasets are listed and skipped.")
    st.add_argument("--models", required=True, nargs="+", action="extend", metavar="SPEC",
                    help="model specs (any --model value), space- or comma-separated; repeatable")
    st.add_argument("--datasets", required=True, nargs="+", action="extend", metavar="NAME",
                    help="dataset names, presets (clip-paper, robustness, retrieval, local) or NAME=PATH; repeatable")
    st.add_argument("--root", default=None, help="folder with one sub-folder per dataset (layouts: docs/datasets.md of the source repository or sdist)")
    st.add_argument("--tasks", default="zeroshot,retrieval",
                    help="comma-separated: zeroshot, linear-probe, retrieval (default zeroshot,retrieval)")
    st.add_argument("--templates", default=None, help="one prompt set for every dataset (default: each dataset's own)")
    st.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    st.add_argument("--batch-size", type=int, default=64, help="images per model batch (default 64)")
    add_speed_arguments(st, workers=False)
    st.add_argument("--workers", type=int, default=min(8, usable_cores()), help="DataLoader workers")
    st.add_argument("--out", default="eval_suite", help="output folder (default eval_suite); reruns resume it")
    st.add_argument("--limit", type=int, default=None, help="a fixed random subset of N test images per dataset")
    st.add_argument("--limit-train", type=int, default=None, help="a fixed random subset for linear-probe training")
    st.add_argument("--top-k", type=int, default=5, help="predictions kept per sample in the Parquet files")
    st.add_argument("--expect", action="append", metavar="[MODEL@]DATASET[:METRIC]=PCT",
                    help="golden check, e.g. ViT-B/32@imagenet=63.32, or 'published' (every cell with a published "
                         "number); exit status 1 when a cell misses")
    st.add_argument("--tolerance", type=float, default=0.3, help="allowed miss in percentage points (0.3)")
    st.add_argument("--download", action="store_true",
                    help="first fetch (verified) the datasets whose publishers serve a stable archive into --root")
    add_output_arguments(st, json=True, quiet=True)
    st.set_defaults(func=run_suite_command)


def _split(args: argparse.Namespace) -> str | None:
    """--split, or the dataset's evaluation split: `clipforge.evaluate.common.default_split`, the one rule the
    Python functions use too (it lived here alone, so `evaluate_zeroshot(model, "cifar10", root)` crashed)."""
    from clipforge.evaluate.common import default_split

    return default_split(args.dataset, args.split or None)


def _skipped(report: dict) -> int:
    """Images the run left out: unreadable ones (per split for a probe) and files listed but missing."""
    bad = report.get("bad_images", {})
    unreadable = bad.get("skipped", 0) if "skipped" in bad else sum(v.get("skipped", 0) for v in bad.values())
    dataset = report.get("dataset", {})
    return int(unreadable) + int(dataset.get("missing_files", 0)) + \
        int(dataset.get("train_missing", {}).get("missing_files", 0))


def _finish(report: dict, keys: list[str], args: argparse.Namespace) -> int:
    """Print the result (one JSON document with --json), where the report and plots went, and golden checks.

    Skipped images and a plot failure are told on stderr in both modes: with --json, stdout is only
    the report, and a count buried in it went unseen."""
    skipped = _skipped(report)
    if skipped:
        print(f"notice: {skipped} {'image' if skipped == 1 else 'images'} skipped (unreadable or missing; named in "
              f"{report['files']['report']} and {report['files']['log']})", file=sys.stderr)
    if report.get("plot_error"):
        print(f"warning: plots not written: {report['plot_error']} (the report was written: "
              f"{report['files']['report']})", file=sys.stderr)
    failed = not report.get("passed", True) or bool(report.get("plot_error"))
    if args.json:
        print(json_text(report, default=str))
        return 1 if failed else 0
    metrics = report["metrics"]
    paper = report.get("paper_metric")
    keys = keys + ([paper] if paper and paper not in keys else [])
    # None: undefined for this dataset (top5 of fewer than 5 classes; CLIP_benchmark's NaN), shown as n/a
    shown = "  ".join(f"{k} " + ("n/a" if metrics[k] is None else f"{100 * metrics[k]:.2f}%") for k in keys
                      if k in metrics and (metrics[k] is None or isinstance(metrics[k], float)))
    if paper and paper != "top1" and isinstance(metrics.get(paper), float):
        shown += f"  (the CLIP paper reports {paper} for this dataset" + (
            "; mean_average_precision is CLIP_benchmark's, what a suite cell exports)"
            if "mean_average_precision" in shown else ")")
    print(f"{report['model']['name']} on {report['dataset']['name']}: {shown}")
    print(f"report: {report['files']['report']}")
    plots = report["files"].get("plots") or []
    if plots:
        print("plots written to " + ", ".join(plots))
    for check in report.get("expectations", []):
        verdict = "ok" if check["ok"] else "MISSED"
        print(f"expect {check['metric']}={check['expected']} ±{check['tolerance']}: measured "
              f"{check['measured']:.2f} {verdict}", file=sys.stdout if check["ok"] else sys.stderr)
    return 1 if failed else 0


def _prepare(args: argparse.Namespace) -> tuple[str, str]:
    """(model spec, device) for the library call: the defaults decided once, in clipforge.api."""
    from clipforge.api import resolve_device
    from clipforge.cli.common import batch_settings_problem, model_spec
    from clipforge.errors import UsageError

    if problem := batch_settings_problem(args):  # before the model loads and the run's log opens
        raise UsageError(problem)
    if getattr(args, "templates", None):
        from clipforge.zeroshot.prompts import get_templates

        get_templates(args.templates)  # an unknown set or a missing file: one line before the model loads (it came after)
    return model_spec(args), str(resolve_device(args.device))


def _speed(args: argparse.Namespace) -> dict[str, object]:
    return {"precision": args.precision, "exact_decode": args.exact_decode}


def run_zeroshot(args: argparse.Namespace) -> int:
    from clipforge.evaluate import evaluate_zeroshot
    from clipforge.evaluate.report import parse_expect

    check_dataset_name(args.dataset)
    expect = parse_expect(args.expect, "zeroshot", args.dataset)  # names checked before the model loads
    model, device = _prepare(args)
    plot = _plot(args)
    report = evaluate_zeroshot(
        model, args.dataset, args.root, _split(args), templates=args.templates,
        classnames=args.classnames or None,  # a file: read (and named in its errors) by evaluate_zeroshot
        batch_size=args.batch_size, workers=args.workers, device=device, limit=args.limit,
        out_dir=args.out, plot=plot, expect=expect, tolerance=args.tolerance,
        cache_dir=args.cache_dir, progress=not (args.quiet or args.json), **_speed(args))
    for key in ("notice", "cut_notice"):  # Chinese class names on an English-only model; labels cut out of prompts
        if report.get(key) and not args.quiet:  # as classify says them
            print(report[key], file=sys.stderr)
    # VOC 2007: the paper's 11-point mAP and CLIP_benchmark's mean_average_precision (the suite cell's), side by side
    return _finish(report, ["top1", "top5", "mean_per_class_recall", "mAP11", "mean_average_precision"], args)


def run_retrieval(args: argparse.Namespace) -> int:
    from clipforge.evaluate import evaluate_retrieval
    from clipforge.evaluate.report import parse_expect

    expect = parse_expect(args.expect, "retrieval")
    model, device = _prepare(args)
    report = evaluate_retrieval(
        model, args.captions, args.images, batch_size=args.batch_size, workers=args.workers,
        device=device, limit=args.limit, out_dir=args.out, expect=expect,
        tolerance=args.tolerance, progress=not (args.quiet or args.json), plot=_plot(args), **_speed(args))
    if report.get("cut_notice") and not args.quiet:  # captions longer than the model's context
        print(report["cut_notice"], file=sys.stderr)
    trivial = [k for k in (1, 5, 10) if k >= report["metrics"]["num_images"]]
    if trivial:  # --limit 5, or a tiny CSV: "R@5 100.00%" read as a result
        print(f"warning: only {report['metrics']['num_images']} images were evaluated, so text->image R@"
              f"{'/'.join(map(str, trivial))} is 100% whatever the model (every image is in the top k); use more "
              "images", file=sys.stderr)
    return _finish(report, [f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)], args)


def run_linear_probe(args: argparse.Namespace) -> int:
    from clipforge.evaluate import evaluate_linear_probe
    from clipforge.evaluate.report import parse_expect

    check_dataset_name(args.dataset)
    expect = parse_expect(args.expect, "linear-probe")
    model, device = _prepare(args)
    report = evaluate_linear_probe(
        model, args.dataset, args.root, train_split=args.train_split, test_split=_split(args),
        fewshot_k=args.fewshot_k, seeds=args.seeds, full=not args.no_full, batch_size=args.batch_size,
        workers=args.workers, device=device, limit_train=args.limit_train, limit_test=args.limit,
        out_dir=args.out, feature_cache_dir=args.feature_cache, expect=expect, probe_features=args.probe_features,
        tolerance=args.tolerance, progress=not (args.quiet or args.json), plot=_plot(args), **_speed(args))
    note = report["probe"].get("full", {}).get("note")
    if note:
        print(f"warning: {note}", file=sys.stderr)
    if not args.json:
        for k, entry in report["metrics"].get("fewshot", {}).items():
            print(f"{k}-shot top1 {100 * entry['top1']['mean']:.2f}% ± {100 * entry['top1']['std']:.2f} "
                  f"({entry['top1']['n']} seeds)")
    return _finish(report, ["top1", "top5", "mean_per_class_recall"], args)


def run_suite_command(args: argparse.Namespace) -> int:
    from clipforge.api import resolve_device
    from clipforge.evaluate.suite import parse_suite_expect, run_suite

    models = [m for chunk in args.models for m in chunk.split(",") if m.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    expect = parse_suite_expect(args.expect)
    if args.download:
        from clipforge.data.catalog import expand_datasets
        from clipforge.data.download import download_dataset

        if args.root is None:
            raise ValueError("--download needs --root (where the datasets go)")
        for key in expand_datasets(args.datasets):
            print(download_dataset(key.partition("=")[0], args.root, progress=not args.quiet), file=sys.stderr)
    quiet = args.quiet or args.json
    summary = run_suite(models, args.datasets, args.root, args.out, tasks=tasks, templates=args.templates,
                        limit=args.limit, limit_train=args.limit_train, batch_size=args.batch_size,
                        workers=args.workers, device=str(resolve_device(args.device)), precision=args.precision,
                        exact_decode=args.exact_decode, expect=expect, tolerance=args.tolerance, top_k=args.top_k,
                        progress=not quiet, echo=(lambda text: None) if quiet else None)
    if args.json:
        print(json_text(summary, default=str))
    else:
        print(Path(summary["files"]["markdown"]).read_text(encoding="utf-8"), end="")
        print("files: " + ", ".join(summary["files"].values()))
    for check in summary["expectations"]:
        if not check["ok"] and check["dataset"] == "*":  # `--expect published` with nothing to check
            print(f"expect published: MISSED ({check.get('why')})", file=sys.stderr)
        elif not check["ok"]:
            print(f"expect {check['model'] or '*'}@{check['dataset']}:{check['metric']}={check['expected']} "
                  f"±{check['tolerance']}: measured {check['measured']} MISSED"
                  + (f" ({check['why']})" if check.get("why") else ""), file=sys.stderr)
    if not summary["cells"] and summary["missing"]:  # nothing measured: not a success (it exited 0)
        from clipforge.cli.main import report_error

        where = f"under --root {args.root}" if args.root else "without --root (where the datasets are)"
        return report_error(f"no dataset of the suite was found {where}: {len(summary['missing'])} skipped, "
                            "listed above; --download fetches those that can be downloaded")
    return 0 if summary["passed"] else 1
