"""`clipforge models`: what can be loaded, how big it is, and whether it is already here."""

from __future__ import annotations

import argparse

from clipforge.cli.common import json_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list architectures (parameters, input size, embed dim, activation, cached); "
                       "--all adds every pretrained ARCH:TAG and the test configs",
        description="Architectures clipforge builds (OpenAI's names and open_clip's, with their activation), "
                    "the shipped models, and with --all every pretrained ARCH:TAG of the registry with its "
                    "published ImageNet zero-shot top-1. Any of them works as --model in every command.")
    parser.add_argument("--all", action="store_true",
                        help="also every pretrained ARCH:TAG (open_clip's zoo: ImageNet top-1, activation) "
                             "and the tiny test configs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from clipforge.models.summary import summarize_models
    from clipforge.zeroshot.languages import model_languages

    rows = summarize_models(include_test=args.all, is_cached=_has_weights) + shipped_rows() + chinese_rows()
    for row in rows:  # what each model reads: the prompt language of eval zeroshot, a notice for other scripts
        row["languages"] = list(model_languages(row["name"]))
    pretrained = summarize_pretrained() if args.all else []
    if args.json:
        print(json_text(rows + pretrained))
        return 0
    name_width = max([len(r["name"]) for r in rows] + [len("model")]) + 1  # columns fit the longest name
    print(f"{'model':<{name_width}}{'params':>10}{'image':>10}{'text':>10}{'input':>7}{'embed':>7}  "
          f"{'activation':<11}{'cached':<7}languages")
    for r in rows:
        print(f"{r['name']:<{name_width}}{r['params'] / 1e6:>9.1f}M{r['image_params'] / 1e6:>9.1f}M"
              f"{r['text_params'] / 1e6:>9.1f}M{r['input_size']:>7}{r['embed_dim']:>7}  {r['activation']:<11}"
              f"{'yes' if r['cached'] else 'no':<7}{','.join(r['languages'])}")
    if pretrained:
        spec_width = max(len(r["name"]) for r in pretrained) + 1
        builds_width = max(len(r["builds"]) for r in pretrained) + 1
        print(f"\n{'--model ARCH:TAG':<{spec_width}}{'builds':<{builds_width}}{'activation':<12}{'ImageNet':>9}  cached")
        for r in pretrained:
            top1 = f"{r['imagenet_top1']:.2f}" if r["imagenet_top1"] is not None else "-"
            print(f"{r['name']:<{spec_width}}{r['builds']:<{builds_width}}{r['activation']:<12}{top1:>9}  "
                  f"{'yes' if r['cached'] else 'no'}")
    return 0


def _has_weights(name: str) -> bool:
    """OpenAI's names: their checkpoint is cached; open_clip's: any of their tags is."""
    from clipforge.models import OPENAI_MODELS
    from clipforge.weights import is_cached
    from clipforge.weights.registry import list_pretrained_tags_by_model

    tags = ["openai"] if name in OPENAI_MODELS else list_pretrained_tags_by_model(name)
    return any(is_cached(name, tag=tag) for tag in tags)


def summarize_pretrained() -> list[dict]:
    """One row per (architecture, tag) of the weights registry: what `--model ARCH:TAG` loads."""
    from clipforge.models import ARCH_CONFIGS
    from clipforge.models.chinese_configs import chinese_clip_config
    from clipforge.weights.registry import PRETRAINED, is_cached

    configs = {entry.name: ARCH_CONFIGS.get(entry.name) or chinese_clip_config(entry.name)  # cn-*: Chinese-CLIP's
               for entry in PRETRAINED.values()}
    return [{"name": f"{arch}:{tag}", "kind": "pretrained", "architecture": arch, "tag": tag, "builds": entry.name,
             "activation": entry.activation, "imagenet_top1": entry.imagenet_top1,
             "input_size": configs[entry.name]["image_resolution"],
             "embed_dim": configs[entry.name]["embed_dim"], "cached": is_cached(arch, tag=tag),
             "url": entry.sources()[0].url}
            for (arch, tag), entry in PRETRAINED.items()]


def shipped_configs() -> dict[str, dict]:
    """name -> config of the models inside the package (clipforge-tiny): their config rides in the file's metadata."""
    from clipforge.weights.save import config_from_metadata, read_metadata
    from clipforge.weights.shipped import shipped_models

    configs = {}
    for name, path in shipped_models().items():
        metadata = read_metadata(path)
        config = config_from_metadata(metadata, path)
        if config is not None:
            configs[name] = config
    return configs


def shipped_rows() -> list[dict]:
    """Models inside the package (clipforge-tiny)."""
    from clipforge.models import activation_of
    from clipforge.models.summary import count_parameters

    return [{"name": name, "kind": "shipped", **count_parameters(name, config),
             "input_size": config["image_resolution"], "embed_dim": config["embed_dim"],
             "activation": activation_of(config), "cached": True}
            for name, config in shipped_configs().items()]


def chinese_rows() -> list[dict]:
    """Chinese-CLIP's models (cn-*): image tower and BERT tower counted by `models.summary`."""
    from clipforge.models.chinese_configs import CHINESE_CLIP_CONFIGS, chinese_clip_config
    from clipforge.models.summary import count_chinese_parameters
    from clipforge.weights import is_cached

    rows = []
    for name in CHINESE_CLIP_CONFIGS:
        c = chinese_clip_config(name)
        rows.append({"name": name, "kind": "chinese-clip", **count_chinese_parameters(name),
                     "input_size": c["image_resolution"], "embed_dim": c["embed_dim"], "activation": "quick_gelu",
                     "cached": is_cached(name, tag="cn_clip") if _known(name) else False})
    return rows


def _known(name: str) -> bool:
    from clipforge.weights.registry import PRETRAINED

    return (name, "cn_clip") in PRETRAINED


if __name__ == "__main__":  # python -m clipforge.cli.models: rewrite models/parameter_counts.json after a change
    from clipforge.models.summary import COUNTS_FILE, write_counts

    print(f"wrote {len(write_counts(shipped_configs()))} parameter counts to {COUNTS_FILE}")
