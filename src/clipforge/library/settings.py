"""The settings of one `add` run, checked before any photo is touched.

A bad setting (`--max-pixels -5`, `--batch-size 0`, `--workers -1`) is the run's error, said
once, never a per-photo failure: recorded against each photo it would make every photo
"failed", and later runs would skip them as failed-and-unchanged. For the same reason a
photo refused as too large under one run's smaller pixel limit is tried again by a run whose
limit admits it: its failure belonged to that run's setting, not to the photo.

After each add the library also makes sure no 'ok' image lacks its vector (a writer that
bypassed the library lock could leave one, invisible to search): `files_missing_vectors`.
"""

from __future__ import annotations

import os
import re

from clipforge.library.store import ImageRecord, Store

__all__ = ["check_add_settings", "check_max_pixels", "files_missing_vectors", "release_pixel_failures"]

_PIXELS_REASON = "too many pixels"
_LIMIT_META = "pixel_limit"
_PIXEL_COUNT = re.compile(r"= ([\d,]+) pixels exceeds the limit")


def check_max_pixels(max_pixels: int | None) -> None:
    """ValueError unless `max_pixels` is None (the default limit) or a positive number of pixels."""
    import numbers

    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral)
                                   or int(max_pixels) < 1):
        raise ValueError(f"max_pixels must be a positive number of pixels (e.g. 178956970, the default), "
                         f"got {max_pixels!r}")


def check_add_settings(batch_size: int, workers: int | None) -> None:
    """ValueError naming the setting when `batch_size` < 1 or `workers` < 0."""
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1 (images per model batch and per commit), got {batch_size!r}")
    if workers is not None and (isinstance(workers, bool) or int(workers) < 0):
        raise ValueError(f"workers must be 0 (decode in this process) or more, got {workers!r}")


def release_pixel_failures(store: Store, max_pixels: int) -> int:
    """Forget 'failed: too many pixels' records whose pixel count `max_pixels` now admits, so this run
    reads those photos again; returns how many.

    The limit of each run is kept (`meta` "pixel_limit"); after a run with limit R every such failure
    has more than R pixels, so a run whose limit is not above the last one's skips the scan.
    """
    last = store.get_meta(_LIMIT_META)
    if last is not None and last.isdigit() and int(last) >= int(max_pixels):
        return 0
    ids = []
    for image_id, reason in store.failed_with_reason(_PIXELS_REASON):
        found = _PIXEL_COUNT.search(reason)
        if found and int(found.group(1).replace(",", "")) <= max_pixels:
            ids.append(image_id)
    with store.transaction() as tx:
        if ids:
            tx.delete_images(ids)
        tx.set_meta(_LIMIT_META, str(int(max_pixels)))
    return len(ids)


def files_missing_vectors(store: Store, model: str) -> list[ImageRecord]:
    """The 'ok' images (still on disk) whose vector of `model` is missing, to embed: indexed with another model, or
    their vector lost. The scan is skipped while nothing voided the last one that found none
    (`Store.vectors_checked`)."""
    removals = store.removals()
    if store.vectors_checked(model):
        return []
    missing = store.images_missing_vectors(model)
    if not missing:
        with store.transaction() as tx:
            tx.record_vectors_checked(model, removals)
    return [record for record in missing if os.path.lexists(record.path)]
