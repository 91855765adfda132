"""Chinese-CLIP's published checkpoints as registry data (no torch: `weights.registry` reads this).

Every published model is a hub file of ``OFA-Sys/<repo>`` (cn_clip 1.6.0 downloads them with
`hf_hub_download`; the older Aliyun OSS URLs are gone from its source). cn_clip publishes no sha256:
the registry lists them under the tag ``cn_clip`` as hub files, so they are fetched and trusted
exactly as every other hub file (`clipforge.weights.download.download_pretrained`: refused without
the opt-in, and then the hub's announced sha256 and every tensor's shape are checked before caching).
"""

from __future__ import annotations

from typing import Any

TAG = "cn_clip"

# name -> (hub repo, cn_clip checkpoint file, cn_clip's `struct`), from cn_clip/clip/utils.py (_MODELS, _MODEL_INFO)
PUBLISHED = {
    "cn-ViT-B-16": ("chinese-clip-vit-base-patch16", "clip_cn_vit-b-16.pt", "ViT-B-16@RoBERTa-wwm-ext-base-chinese"),
    "cn-ViT-L-14": ("chinese-clip-vit-large-patch14", "clip_cn_vit-l-14.pt", "ViT-L-14@RoBERTa-wwm-ext-base-chinese"),
    "cn-ViT-L-14-336": ("chinese-clip-vit-large-patch14-336px", "clip_cn_vit-l-14-336.pt",
                        "ViT-L-14-336@RoBERTa-wwm-ext-base-chinese"),
    "cn-ViT-H-14": ("chinese-clip-vit-huge-patch14", "clip_cn_vit-h-14.pt", "ViT-H-14@RoBERTa-wwm-ext-large-chinese"),
    "cn-RN50": ("chinese-clip-rn50", "clip_cn_rn50.pt", "RN50@RBT3-chinese"),
}


def entry_fields(name: str) -> dict[str, Any]:
    """`PretrainedWeights` fields of a published Chinese-CLIP: a hub file only (no release URL), so the
    hub endpoint (``HF_ENDPOINT``) is read when it is fetched, as for open_clip's hub files."""
    repo, filename, struct = PUBLISHED[name]
    return {"name": name, "url": "", "sha256": None, "filename": f"OFA-Sys--{repo}--{filename}", "tag": TAG,
            "hf_repo": f"OFA-Sys/{repo}", "hf_files": (filename,), "activation": "quick_gelu",
            "interpolation": "bicubic", "resize_mode": "squash", "listed_as": name,
            "notes": (f"Chinese-CLIP {struct} (cn_clip.load_from_name({name[3:]!r})); preprocessing: "
                      "Resize((S, S), bicubic), no crop, OpenAI mean/std", "text: Chinese WordPiece, context 52")}
