"""`clipforge models` reads parameter counts from a table that ships with the package, and the table is exact.

Counting 100 architectures on the meta device took ~7 s of CPU and imported transformers: `clipforge models` took
11 s. The table (`models/parameter_counts.json`) stores each count with a fingerprint of the config it was
counted from; here every entry is recounted the way `clipforge models` counted before, so a change to a config
or to the model code that changes a count fails this test until the table is rewritten
(``python -m clipforge.cli.models``).
"""

from __future__ import annotations

import json

from clipforge.cli.models import shipped_configs
from clipforge.models import ARCH_CONFIGS, list_configs
from clipforge.models.chinese_clip import CHINESE_CLIP_CONFIGS, chinese_clip_config
from clipforge.models.summary import (
    COUNTS_FILE,
    config_fingerprint,
    count_chinese_parameters,
    count_parameters,
    counted,
)

KEYS = ("params", "image_params", "text_params")


def test_every_model_clipforge_lists_has_a_fresh_exact_count_in_the_table():
    table = json.loads(COUNTS_FILE.read_text(encoding="utf-8"))
    configs = {name: ARCH_CONFIGS[name] for name in list_configs(include_test=True)} | shipped_configs()
    for name, config in configs.items():
        entry = table.get(name)
        assert entry is not None, f"{name} is not in {COUNTS_FILE.name}: run python -m clipforge.cli.models"
        assert entry["config"] == config_fingerprint(config), f"{name}'s config changed since it was counted"
        assert {k: entry[k] for k in KEYS} == counted(config), name
    for name in CHINESE_CLIP_CONFIGS:
        assert table[name]["config"] == config_fingerprint(chinese_clip_config(name)), name
        assert {k: table[name][k] for k in KEYS} == count_chinese_parameters(name, recount=True), name
    assert set(table) == set(configs) | set(CHINESE_CLIP_CONFIGS)  # nothing stale left in it


def test_a_config_not_in_the_table_is_counted():
    config = {**ARCH_CONFIGS["ViT-B/32"], "transformer_layers": 1}
    stored = count_parameters("ViT-B/32")
    cut = count_parameters("ViT-B/32", config)
    assert cut == counted(config) and cut["image_params"] == stored["image_params"]
    # 11 blocks fewer: 12 x 512^2 weights, 9 x 512 biases and 4 x 512 LayerNorm values each
    assert stored["text_params"] - cut["text_params"] == 11 * (12 * 512 * 512 + 13 * 512)
