"""What a checkpoint file that cannot be read actually is: cut short, an error page, or empty.

Why its own module: a half-finished download or copy, and a server that answered a weights URL with
a web page, are the commonest reasons a checkpoint does not load, and the readers underneath
(safetensors, torch's zip reader and its weights-only unpickler) say so in their own words: "invalid
header length", "mmap can only be used with files saved with ...", "Unsupported operand 0" (which
`torch_load_safely` once turned into a false alarm about a pickle that runs code). The generic
reader (`clipforge.weights.loading`), the unpickler wrapper (`clipforge.weights.torch_pickle`) and
Chinese-CLIP's download check (`clipforge.weights.cn_clip`) ask this module first, so every path
names the real cause in one line, with the sizes that prove it.

A safetensors header listing more tensors than any CLIP (`MAX_TENSORS`) is plainly no checkpoint either: every
reader asks `safetensors_refusal` before safetensors parses a header, and `too_many_tensors` once it has listed
the names, so such a file is refused before any tensor is read. Standard library only (and the floor module
`clipforge.regular_file`).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

__all__ = ["MAX_TENSORS", "damage_of", "safetensors_refusal", "safetensors_shortfall", "too_many_tensors"]

_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
MAX_TENSORS = 5_000
"""Tensors a checkpoint clipforge reads may hold. Counted on the meta device: the largest CLIP clipforge builds,
RN50x64, has 1,353 (its BatchNorm buffers among them), ViT-bigG-14 974 (about 1,300 in transformers' layout, whose
attention is four tensors a layer, not two), SigLIP 2 gopt 828, SO400M 672, Chinese-CLIP ViT-H-14 783 (911 as a
ChineseCLIPModel). A 69 MB file of 900,000 one-byte tensors cost 37 s and 1.5 GB before "not a CLIP state dict"."""
_LARGEST = "the largest CLIP clipforge builds, RN50x64, has 1,353"
_FIELD = b'"data_offsets"'  # once in every entry any safetensors writer makes


def too_many_tensors(path: str | os.PathLike[str], count: int, subject: str = "its safetensors header lists"
                     ) -> str | None:
    """"PATH: `subject` N tensors, more than ..." when `count` passes `MAX_TENSORS`, else None."""
    if count <= MAX_TENSORS:
        return None
    return (f"{path}: {subject} {count:,} tensors, more than the {MAX_TENSORS:,} a checkpoint clipforge reads may "
            f"hold ({_LARGEST}): not a CLIP checkpoint")


def safetensors_refusal(path: str | os.PathLike[str]) -> str | None:
    """Why safetensors must not open `path`, else None: it is no regular file (a FIFO blocked the read for ever),
    or its header lists more than `MAX_TENSORS` tensors. The count is of ``"data_offsets"`` in the header's bytes,
    read a megabyte at a time (milliseconds where safetensors' parse of 900,000 entries took 3 s and 765 MB); a
    header written to hide it (escaped names, entries as arrays) is counted by `too_many_tensors` once
    safetensors has listed its names, still before any tensor is read."""
    from clipforge.regular_file import NotRegularFileError, open_regular_file

    count, carry = 0, b""
    try:
        with open_regular_file(path) as fh:
            head = fh.read(8)
            if len(head) < 8:
                return None
            (left,) = struct.unpack("<Q", head)
            if left > _MAX_HEADER:
                return None  # safetensors refuses it by its length
            while left > 0 and (chunk := fh.read(min(left, 1 << 20))):
                left -= len(chunk)
                data = carry + chunk
                count += data.count(_FIELD)
                carry = data[1 - len(_FIELD):]  # a field cut by the chunk's end: too short to be counted twice
    except NotRegularFileError as err:
        return str(err)
    except OSError:
        return None  # the reader names it
    return too_many_tensors(path, count)
_AGAIN = "(an interrupted download or copy?): fetch or copy it again"


def safetensors_shortfall(path: str | os.PathLike[str]) -> str | None:
    """Why a file that starts as safetensors (an 8-byte header length, then ``{``) is cut short, else None.

    Cut inside the header, no reader can even list its tensors; cut after it, the header's largest data
    offset says how long the file must be. Either way the sentence gives both sizes."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(9)
            if len(head) < 9 or head[8:9] != b"{":
                return None
            (header_len,) = struct.unpack("<Q", head[:8])
            if header_len > _MAX_HEADER:
                return None
            if header_len > size - 8:
                return (
                    f"{path} is cut short: a safetensors file whose header alone is {header_len + 8:,} bytes, "
                    f"but the file has {size:,} {_AGAIN}"
                )
            fh.seek(8)
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__"
        and isinstance(entry, dict)
        and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2
        and isinstance(entry["data_offsets"][1], int)
    ]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return (
            f"{path} is cut short: its safetensors header describes {expected:,} bytes, but the file has "
            f"{size:,} {_AGAIN}"
        )
    return None


def damage_of(path: str | os.PathLike[str]) -> str | None:
    """One sentence naming what `path` is when it is plainly no checkpoint, else None: empty, a web page or
    other text where weights were expected (a server's error answer saved under the weights' name), a
    safetensors file cut short, or a zip archive (torch.save's format) without its end."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(512)
            if size >= 22:
                fh.seek(max(0, size - 65_557))  # the zip end record sits in the last 22 + 65,535 bytes
                tail = fh.read()
            else:
                tail = b""
    except OSError:
        return None
    if size == 0:
        return f"{path} is empty (0 bytes) {_AGAIN}"
    if (cut := safetensors_shortfall(path)) is not None:
        return cut
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")) and b"PK\x05\x06" not in tail:
        return (
            f"{path} is cut short: a zip archive (torch.save's format) of {size:,} bytes without its end, "
            f"the central directory {_AGAIN}"
        )
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<error")):
        return (
            f"{path} is a web page ({size:,} bytes), not weights: a server's answer (an error, a login or a "
            "redirect page) saved in place of the file"
        )
    if text.startswith((b"{", b"[")) and size < 1_000_000:
        return (
            f"{path} is JSON text ({size:,} bytes), not weights (a config file, or a server's message saved in "
            "place of the file)"
        )
    return None
