"""open_clip's published weights for the CLIPs of OpenAI's shape, as data.

Facts transcribed from open-clip-torch 3.3 (`open_clip/pretrained.py`): for each
(architecture, tag) the release URL and/or Hugging Face hub repository, whether the weights
were trained with QuickGELU, and any preprocessing that differs from OpenAI's. ImageNet-1k
zero-shot top-1 (percent) comes from open_clip's results table (`docs/openclip_results.csv`,
mlfoundations/open_clip commit f862f86c); None where the table has no row.

Hashes: OpenAI's URLs carry the file's sha256 as a folder; open_clip's GitHub release files
carry the first 8 hex digits of theirs in the name (``...-455df137.pt``), which
`clipforge.weights.registry` turns into a prefix check. Neither a prefix nor the sha256 a hub
announces is a pin: `PINNED_SHA256` (end of file) holds the full hashes known for other files,
and `clipforge.weights.download` refuses files without one unless the user opts in.
"""

from __future__ import annotations

OPENAI_BASE = "https://openaipublic.azureedge.net/clip/models"
GITHUB_BASE = "https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights"
METACLIP_BASE = "https://dl.fbaipublicfiles.com/MMPT/metaclip"

INCEPTION = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
SQUASH = {"resize_mode": "squash"}

# OpenAI's checkpoints: OpenAI name -> (URL path under OPENAI_BASE, open_clip name, timm hub repo, top-1)
OPENAI: dict[str, tuple[str, str, str, float]] = {
    "RN50": ("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt", "RN50",
             "timm/resnet50_clip.openai", 59.82),
    "RN101": ("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt", "RN101",
              "timm/resnet101_clip.openai", 62.28),
    "RN50x4": ("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt", "RN50x4",
               "timm/resnet50x4_clip.openai", 66.27),
    "RN50x16": ("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt", "RN50x16",
                "timm/resnet50x16_clip.openai", 70.72),
    "RN50x64": ("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt", "RN50x64",
                "timm/resnet50x64_clip.openai", 73.91),
    "ViT-B/32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt", "ViT-B-32",
                 "timm/vit_base_patch32_clip_224.openai", 63.32),
    "ViT-B/16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt", "ViT-B-16",
                 "timm/vit_base_patch16_clip_224.openai", 68.34),
    "ViT-L/14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt", "ViT-L-14",
                 "timm/vit_large_patch14_clip_224.openai", 75.54),
    "ViT-L/14@336px": ("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
                       "ViT-L-14-336", "timm/vit_large_patch14_clip_336.openai", 76.56),
}


def _cp(size: str, scale: str, arch: str, rows: dict[str, float]) -> list[tuple]:
    """DataComp / CommonPool entries: tag -> hub repo laion/CLIP-<arch>-<Pool>.<size>[.<filter>]-<scale>."""
    out = []
    for tag, top1 in rows.items():
        pool, _, rest = tag.partition("_")
        parts = rest.split("_")
        flt = parts[1] if len(parts) == 4 else ""
        name = ("DataComp" if pool == "datacomp" else "CommonPool") + f".{size}" + (f".{flt}" if flt else "")
        out.append((arch, tag, "", f"laion/CLIP-{arch}-{name}-{scale}", False, top1, {}))
    return out


# (open_clip architecture, tag, release URL or "", hub repo or "", trained with QuickGELU, top-1, preprocessing)
ENTRIES: list[tuple] = [
    ("RN50", "yfcc15m", f"{GITHUB_BASE}/rn50-quickgelu-yfcc15m-455df137.pt", "timm/resnet50_clip.yfcc15m",
     True, 32.75, {}),
    ("RN50", "cc12m", f"{GITHUB_BASE}/rn50-quickgelu-cc12m-f000538c.pt", "timm/resnet50_clip.cc12m", True, 36.47, {}),
    ("RN101", "yfcc15m", f"{GITHUB_BASE}/rn101-quickgelu-yfcc15m-3e04b30e.pt", "timm/resnet101_clip.yfcc15m",
     True, 34.87, {}),
    ("ViT-B-32", "laion400m_e31", f"{GITHUB_BASE}/vit_b_32-quickgelu-laion400m_e31-d867053b.pt",
     "timm/vit_base_patch32_clip_224.laion400m_e31", True, 62.94, {}),
    ("ViT-B-32", "laion400m_e32", f"{GITHUB_BASE}/vit_b_32-quickgelu-laion400m_e32-46683a32.pt",
     "timm/vit_base_patch32_clip_224.laion400m_e32", True, 62.93, {}),
    ("ViT-B-32", "laion2b_e16", f"{GITHUB_BASE}/vit_b_32-laion2b_e16-af8dbd0c.pth",
     "timm/vit_base_patch32_clip_224.laion2b_e16", False, 65.65, {}),
    ("ViT-B-32", "laion2b_s34b_b79k", "", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", False, 66.56, {}),
    ("ViT-B-32", "datacomp_xl_s13b_b90k", "", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K", False, 69.17, {}),
    *_cp("M", "s128M-b4K", "ViT-B-32", {
        "datacomp_m_s128m_b4k": 29.72, "commonpool_m_clip_s128m_b4k": 27.25, "commonpool_m_laion_s128m_b4k": 23.04,
        "commonpool_m_image_s128m_b4k": 26.78, "commonpool_m_text_s128m_b4k": 25.48,
        "commonpool_m_basic_s128m_b4k": 22.55, "commonpool_m_s128m_b4k": 17.55}),
    *_cp("S", "s13M-b4K", "ViT-B-32", {
        "datacomp_s_s13m_b4k": 3.92, "commonpool_s_clip_s13m_b4k": 5.05, "commonpool_s_laion_s13m_b4k": 3.05,
        "commonpool_s_image_s13m_b4k": 3.92, "commonpool_s_text_s13m_b4k": 4.60,
        "commonpool_s_basic_s13m_b4k": 3.77, "commonpool_s_s13m_b4k": 2.70}),
    ("ViT-B-32", "metaclip_400m", f"{METACLIP_BASE}/b32_400m.pt", "timm/vit_base_patch32_clip_224.metaclip_400m",
     True, 65.58, {}),
    ("ViT-B-32", "metaclip_fullcc", f"{METACLIP_BASE}/b32_fullcc2.5b.pt",
     "timm/vit_base_patch32_clip_224.metaclip_2pt5b", True, 67.66, {}),
    ("ViT-B-32-256", "datacomp_s34b_b86k", "", "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K", False, 72.81, {}),
    ("ViT-B-16", "laion400m_e31", f"{GITHUB_BASE}/vit_b_16-laion400m_e31-00efa78f.pt",
     "timm/vit_base_patch16_clip_224.laion400m_e31", False, 66.98, {}),
    ("ViT-B-16", "laion400m_e32", f"{GITHUB_BASE}/vit_b_16-laion400m_e32-55e67d44.pt",
     "timm/vit_base_patch16_clip_224.laion400m_e32", False, 67.05, {}),
    ("ViT-B-16", "laion2b_s34b_b88k", "", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", False, 70.23, {}),
    ("ViT-B-16", "datacomp_xl_s13b_b90k", "", "laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K", False, 73.49, {}),
    *_cp("L", "s1B-b8K", "ViT-B-16", {
        "datacomp_l_s1b_b8k": 63.10, "commonpool_l_clip_s1b_b8k": 57.77, "commonpool_l_laion_s1b_b8k": 55.26,
        "commonpool_l_image_s1b_b8k": 57.19, "commonpool_l_text_s1b_b8k": 56.05,
        "commonpool_l_basic_s1b_b8k": 51.55, "commonpool_l_s1b_b8k": 45.93}),
    ("ViT-B-16", "dfn2b", "", "apple/DFN2B-CLIP-ViT-B-16", True, 76.24, {}),
    ("ViT-B-16", "metaclip_400m", f"{METACLIP_BASE}/b16_400m.pt", "timm/vit_base_patch16_clip_224.metaclip_400m",
     True, 70.80, {}),
    ("ViT-B-16", "metaclip_fullcc", f"{METACLIP_BASE}/b16_fullcc2.5b.pt",
     "timm/vit_base_patch16_clip_224.metaclip_2pt5b", True, 72.12, {}),
    ("ViT-B-16-plus-240", "laion400m_e31", f"{GITHUB_BASE}/vit_b_16_plus_240-laion400m_e31-8fb26589.pt",
     "timm/vit_base_patch16_plus_clip_240.laion400m_e31", False, 69.04, {}),
    # open_clip points the e32 weights' hub copy at the e31 repository; kept as published.
    ("ViT-B-16-plus-240", "laion400m_e32", f"{GITHUB_BASE}/vit_b_16_plus_240-laion400m_e32-699c4b84.pt",
     "timm/vit_base_patch16_plus_clip_240.laion400m_e31", False, 69.19, {}),
    ("ViT-L-14", "laion400m_e31", f"{GITHUB_BASE}/vit_l_14-laion400m_e31-69988bb6.pt",
     "timm/vit_large_patch14_clip_224.laion400m_e31", False, 72.71, {}),
    ("ViT-L-14", "laion400m_e32", f"{GITHUB_BASE}/vit_l_14-laion400m_e32-3d133497.pt",
     "timm/vit_large_patch14_clip_224.laion400m_e32", False, 72.77, {}),
    ("ViT-L-14", "laion2b_s32b_b82k", "", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", False, 75.25, INCEPTION),
    ("ViT-L-14", "datacomp_xl_s13b_b90k", "", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", False, 79.21, {}),
    ("ViT-L-14", "commonpool_xl_clip_s13b_b90k", "", "laion/CLIP-ViT-L-14-CommonPool.XL.clip-s13B-b90K", False,
     76.37, {}),
    ("ViT-L-14", "commonpool_xl_laion_s13b_b90k", "", "laion/CLIP-ViT-L-14-CommonPool.XL.laion-s13B-b90K", False,
     75.45, {}),
    ("ViT-L-14", "commonpool_xl_s13b_b90k", "", "laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K", False, 72.29, {}),
    ("ViT-L-14", "metaclip_400m", f"{METACLIP_BASE}/l14_400m.pt", "timm/vit_large_patch14_clip_224.metaclip_400m",
     True, 76.20, {}),
    ("ViT-L-14", "metaclip_fullcc", f"{METACLIP_BASE}/l14_fullcc2.5b.pt",
     "timm/vit_large_patch14_clip_224.metaclip_2pt5b", True, 79.17, {}),
    ("ViT-L-14", "dfn2b", "", "apple/DFN2B-CLIP-ViT-L-14", True, 81.41, {}),
    ("ViT-L-14", "dfn2b_s39b", "", "apple/DFN2B-CLIP-ViT-L-14-39B", False, None, {}),
    ("ViT-H-14", "laion2b_s32b_b79k", "", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", False, 77.96, {}),
    ("ViT-H-14", "metaclip_fullcc", f"{METACLIP_BASE}/h14_fullcc2.5b.pt",
     "timm/vit_huge_patch14_clip_224.metaclip_2pt5b", True, 80.51, {}),
    ("ViT-H-14", "metaclip_altogether", f"{METACLIP_BASE}/h14_v1.2_altogether.pt",
     "timm/vit_huge_patch14_clip_224.metaclip_altogether", False, None, {}),
    ("ViT-H-14", "dfn5b", "", "apple/DFN5B-CLIP-ViT-H-14", True, 83.44, SQUASH),
    ("ViT-g-14", "laion2b_s12b_b42k", "", "laion/CLIP-ViT-g-14-laion2B-s12B-b42K", False, 76.63, {}),
    ("ViT-g-14", "laion2b_s34b_b88k", "", "laion/CLIP-ViT-g-14-laion2B-s34B-b88K", False, 78.47, {}),
    ("ViT-bigG-14", "laion2b_s39b_b160k", "", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", False, 80.09, {}),
    ("ViT-bigG-14", "metaclip_fullcc", f"{METACLIP_BASE}/G14_fullcc2.5b.pt",
     "timm/vit_gigantic_patch14_clip_224.metaclip_2pt5b", True, None, {}),
]

# Full sha256 pins for files other than OpenAI's (whose URLs carry theirs): key "<hub repo>/<file>" for a
# Hugging Face hub file (its LFS sha256, shown on the hub's file page), or a release file's name. Add a pin
# only from a digest read from the publisher; a file without one is refused unless the user sets
# CLIPFORGE_ALLOW_UNPINNED=1 (clipforge.weights.download). None could be read from the publishers while this
# table was written (no network), so it starts empty.
PINNED_SHA256: dict[str, str] = {}

# The families beyond OpenAI's shape (open-clip-torch 3.3 `pretrained.py`). open_clip publishes no
# hash for these hub files: sha256 None, checked against what the hub announces when downloaded.
# ImageNet top-1: None where open_clip's results table (as stored here) has no row.
SIGLIP = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "squash"}
SIGLIP_ARCHS = (
    "ViT-B-16-SigLIP", "ViT-B-16-SigLIP-256", "ViT-B-16-SigLIP-i18n-256", "ViT-B-16-SigLIP-384",
    "ViT-B-16-SigLIP-512", "ViT-L-16-SigLIP-256", "ViT-L-16-SigLIP-384", "ViT-SO400M-14-SigLIP",
    "ViT-SO400M-16-SigLIP-i18n-256", "ViT-SO400M-14-SigLIP-378", "ViT-SO400M-14-SigLIP-384",
    "ViT-B-32-SigLIP2-256", "ViT-B-16-SigLIP2", "ViT-B-16-SigLIP2-256", "ViT-B-16-SigLIP2-384", "ViT-B-16-SigLIP2-512",
    "ViT-L-16-SigLIP2-256", "ViT-L-16-SigLIP2-384", "ViT-L-16-SigLIP2-512", "ViT-SO400M-14-SigLIP2",
    "ViT-SO400M-14-SigLIP2-378", "ViT-SO400M-16-SigLIP2-256", "ViT-SO400M-16-SigLIP2-384",
    "ViT-SO400M-16-SigLIP2-512", "ViT-gopt-16-SigLIP2-256", "ViT-gopt-16-SigLIP2-384",
)
# open_clip serves the 378 px SO400M/14 from the 384 px repository (same tensors, other resolution).
_SIGLIP_REPO = {"ViT-SO400M-14-SigLIP-378": "timm/ViT-SO400M-14-SigLIP-384"}
ENTRIES += [(arch, "webli", "", _SIGLIP_REPO.get(arch, f"timm/{arch}"), False, None, SIGLIP)
            for arch in SIGLIP_ARCHS]
ENTRIES += [
    ("ViT-H-14-378", "dfn5b", "", "apple/DFN5B-CLIP-ViT-H-14-378", True, None, SQUASH),
    ("ViT-H-14-worldwide", "metaclip2_worldwide", "", "timm/vit_huge_patch14_clip_224.metaclip2_worldwide",
     True, None, {}),
    ("ViT-H-14-worldwide-378", "metaclip2_worldwide", "", "timm/vit_huge_patch14_clip_378.metaclip2_worldwide",
     False, None, SQUASH),
    ("ViT-bigG-14-worldwide", "metaclip2_worldwide", "", "timm/vit_gigantic_patch14_clip_224.metaclip2_worldwide",
     False, None, {}),
    ("ViT-bigG-14-worldwide-378", "metaclip2_worldwide", "",
     "timm/vit_gigantic_patch14_clip_378.metaclip2_worldwide", False, None, SQUASH),
]

# open_clip's transformers text towers (open-clip-torch 3.3 `pretrained.py`; issue 16). Top-1 from the results
# table (mlfoundations/open_clip commit f862f86c); the `mrl` tags have no row. The activation of each
# architecture's image tower, where it is not erf GELU: roberta-ViT-B-32's config says quick_gelu. The
# -siglip twins were trained in open_clip on timm's `vit_*_siglip_384`, whose blocks use erf GELU.
HF_TOWER_ACTIVATION = {"roberta-ViT-B-32": "quick_gelu"}
ENTRIES += [
    ("roberta-ViT-B-32", "laion2b_s12b_b32k", "", "laion/CLIP-ViT-B-32-roberta-base-laion2B-s12B-b32k", False,
     61.71, {}),
    ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "", "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
     False, 62.36, {}),
    ("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k", "",
     "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k", False, 76.95, {}),
    ("nllb-clip-base", "v1", "", "visheratin/nllb-clip-base-oc", False, 24.32, {}),
    ("nllb-clip-large", "v1", "", "visheratin/nllb-clip-large-oc", False, 36.72, {}),
    ("nllb-clip-base-siglip", "v1", "", "visheratin/nllb-clip-base-siglip", False, 39.09, SIGLIP),
    ("nllb-clip-base-siglip", "mrl", "", "visheratin/nllb-siglip-mrl-base", False, None, SIGLIP),
    ("nllb-clip-large-siglip", "v1", "", "visheratin/nllb-clip-large-siglip", False, 51.75, SIGLIP),
    ("nllb-clip-large-siglip", "mrl", "", "visheratin/nllb-siglip-mrl-large", False, None, SIGLIP),
]

# CLIPA-v2 (UCSC-VLAA; open-clip-torch 3.3 `pretrained.py`, `_apcfg`): GELU, ImageNet mean/std, bilinear, squash.
# Top-1: None (open_clip's results table could not be read while these rows were written: no network).
CLIPA = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bilinear",
         "resize_mode": "squash"}
ENTRIES += [(arch, tag, "", f"UCSC-VLAA/{arch}-{data}", False, None, CLIPA) for arch, tag, data in (
    ("ViT-L-14-CLIPA", "datacomp1b", "datacomp1B"), ("ViT-L-14-CLIPA-336", "datacomp1b", "datacomp1B"),
    ("ViT-H-14-CLIPA", "datacomp1b", "datacomp1B"), ("ViT-H-14-CLIPA-336", "laion2b", "laion2B"),
    ("ViT-H-14-CLIPA-336", "datacomp1b", "datacomp1B"), ("ViT-bigG-14-CLIPA", "datacomp1b", "datacomp1B"),
    ("ViT-bigG-14-CLIPA-336", "datacomp1b", "datacomp1B"))]
