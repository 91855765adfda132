"""The limits a server puts on what one request may ask of it.

A library server runs a neural network and decodes images sent by strangers, so every input
has a ceiling: body bytes (counted while the body arrives, not after), decoded pixels
(a 60-byte PNG can claim 20000x20000 pixels), time, results, labels and text lengths.
All of them live in one frozen object so a deployment can see and change them in one place.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MAX_IMAGE_ID", "ServerLimits", "limits_from_flags", "parse_size"]

MAX_IMAGE_ID = 2**63 - 1
"""Image ids are SQLite rowids: positive 64-bit integers."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30}


def parse_size(value: str | int) -> int:
    """`20MB`, `512kib`, `1000000` -> bytes; a clear ValueError for anything else."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        return value
    match = _SIZE.match(str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"cannot read size {value!r}: expected a number with an optional unit such as 20MB or 512KiB")
    try:
        size = int(float(match.group(1)) * _UNITS[unit])
    except OverflowError:  # 400 digits are `inf` as a float
        raise ValueError(f"size {value!r} is too large") from None
    if size <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


@dataclass(frozen=True)
class ServerLimits:
    """Ceilings for one request. Defaults suit a personal photo server on a laptop."""

    max_upload_bytes: int = 20 * 10**6
    """Largest image file accepted (uploads, query images, classify images)."""
    max_pixels: int = 50_000_000
    """Largest decoded image (width x height); bigger headers are refused before decoding."""
    request_timeout_s: float = 60.0
    """Wall time for one /api request (its model work and its turn), and for its body to arrive: slower ones get a 503
    (a body still arriving, a 408). A body may take longer while it keeps `min_body_rate` (a slow link's upload)."""
    min_body_rate: int = 32 * 1024
    """Bytes a second a request body must average to be given more than `request_timeout_s`: a body of N bytes has
    `request_timeout_s` + N / this to arrive (a 4 MB photo over a 400 kbit/s link: 60 s were not enough, 185 s are).
    A client holds at most its address's share of `max_receiving_bytes` meanwhile."""
    max_top_k: int = 200
    max_labels: int = 100
    """Labels per classify request, and tags per search."""
    max_label_chars: int = 200
    """Characters of one label in a JSON list."""
    max_labels_chars: int = 2000
    """Characters of a comma-separated label string ("cat, dog, car")."""
    max_text_chars: int = 1000
    max_page_size: int = 500
    max_offset: int = 1_000_000_000
    """Largest `offset` of /api/images (SQLite takes 64-bit integers; larger numbers are refused, not crashed on)."""
    listing_cache_s: float = 10.0
    """On a Milvus store, seconds the library's page order and stats are reused (each reads every row of the
    collection, SQLite answers both with indexes): anonymous page and stats requests cost one such scan per
    period. The server's own writes show at once, other processes' within this time."""
    thumb_size: int = 256
    max_thumb_size: int = 1024
    form_overhead_bytes: int = 256 * 1024
    """Room for multipart headers and text fields on top of `max_upload_bytes`."""
    header_timeout_s: float = 10.0
    """A connection must send its request headers, and keep a body arriving, within this many seconds; one whose
    client takes nothing of its answer for this long is dropped (`protocol`)."""
    keep_alive_s: int = 5
    """An idle keep-alive connection is closed after this many seconds."""
    drain_bytes: int = 100 * 10**6
    """Of a body over the limit, up to this many bytes are read and discarded so the client can read the 413."""
    max_json_items: int = 10_000
    """Structural characters (quotes, commas, colons, brackets) one JSON body may hold, counted before it is
    parsed: a search or classify body needs a few hundred; a million keys stalled the server for seconds."""
    max_prompts: int = 400
    """Prompts one classify may encode (labels x templates): 8,000 prompts cost minutes of CPU."""
    max_sending_bytes: int = 512 * 2**20
    """Bytes of originals and thumbnails the answers still being sent may hold, all clients together (a client
    that asks and never reads holds the whole file); one address may hold a quarter, or one file of any size."""
    max_receiving_bytes: int = 256 * 2**20
    """Bytes of request bodies the server holds at once, counted as they arrive, from their first byte until they are
    answered, all clients together; one address may hold a quarter, or one body of any size. A body that passes
    either is refused (429/503), the rest of it dropped (`server.receiving`)."""
    max_client_requests: int = 8
    """Searches/classifications/additions one client may have running or waiting at once; more get 429."""
    max_ui_request_bytes: int = 2**20
    """Largest JSON body of a web-UI event (files travel separately, through the upload endpoint)."""
    ui_cache_bytes: int = 200 * 10**6
    """Bytes the web UI's upload folder may hold (`serve --ui-upload-space`); when it is full, the oldest uploads of
    the addresses holding the most make room, never an address's newest younger than `upload_space.MIN_AGE_S`
    (`upload_space`); otherwise a 507."""
    ui_cache_files: int = 2000
    """Files the web UI's upload folder may hold (40,000 tiny files once passed as "0.8 MB")."""
    ui_cache_age_s: float = 1800.0
    """Web-UI uploads older than this many seconds are deleted (`serve --ui-upload-age`)."""
    ui_unread_events: int = 32
    """Answers of web-UI events one browser session may leave unread (gradio keeps each until it is read)."""
    ui_unread_sessions: int = 64
    """Browser sessions of one address that may have unread answers at once."""
    ui_pending_per_host: int = 16
    """UI events one address may have waiting or unread, all its sessions together (each holds its inputs)."""
    ui_new_sessions_per_minute: int = 120
    """Browser sessions one address may start a minute (a page load is one)."""
    ui_page_builds: int = 1
    """Answers of `/` and `/config` gradio builds at once, server-wide (each holds a thread and the GIL for its few
    milliseconds; answers already built are served without one: `server.ui_config_cache`)."""
    ui_page_builds_per_host: int = 2
    """Builds of `/` and `/config` one address may have running or waiting; one more is refused (429)."""
    ui_event_slots: int = 256
    """UI events gradio runs at once, server-wide (its default 40): each waits for its turn in the model's fair
    queue inside one, so with 40 three addresses' pending events made everyone else wait in gradio's line."""
    ui_sessions: int = 1000
    """Browser sessions whose UI state gradio keeps (least recently used dropped first; gradio's default 10,000)."""
    ui_streams_per_host: int = 32
    """gradio streams (heartbeat, queue/data) one address may hold open at once; an open tab holds one or two."""
    ui_streams: int = 2000
    """gradio streams the whole server may hold open at once (each is a socket: file descriptors run out)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(value) or value <= 0:  # NaN passes `<= 0` (and `--timeout nan` parses)
                raise ValueError(f"server limit {name} must be a positive number, got {value}")

    @property
    def max_base64_chars(self) -> int:
        """Longest base64 image in a JSON body: as many characters as a file part's bytes, so one body
        limit holds for both (a JSON image is at most 3/4 of `max_upload_bytes` once decoded)."""
        return self.max_upload_bytes // 4 * 4

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: one file at the limit plus its form fields."""
        return self.max_upload_bytes + self.form_overhead_bytes

    @property
    def max_ui_upload_body_bytes(self) -> int:
        """Largest body of the web UI's upload route: the page sends every file chosen at once in one request (8
        photos of 3-4 MB were one 28 MB body, refused whole), so it may hold one address's share of
        `max_receiving_bytes`, or one file at the limit where that is more; each file is still `max_upload_bytes`
        at most (gradio's own check) and takes its room in the upload folder's budget as it arrives."""
        return max(self.max_body_bytes, self.max_receiving_bytes // 4)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def limits_from_flags(max_upload: str | int = "20MB", max_pixels: str | int = 50_000_000,
                      timeout: str | float = 60.0, ui_upload_space: str | int | None = None,
                      ui_upload_age: str | float | None = None) -> ServerLimits:
    """The limits `clipforge serve --max-upload --max-pixels --timeout --ui-upload-space --ui-upload-age` asked for;
    a ValueError naming the flag. The last two are the web page's upload space (`ui_cache_bytes`, a teacher whose
    class of 30 uploads 4 phone photos each wants more than 200 MB) and how long its uploads are kept
    (`ui_cache_age_s`); None keeps `ServerLimits`' default.

    Each flag is read here, not by argparse or `ServerLimits`, so that its error is one line naming the flag the
    user typed and the form expected (`ServerLimits` names its fields, "server limit max_pixels", which is right
    for the Python API and meaningless on a command line), and so that `nan`, `inf`, zero and negatives get the
    same words as text that is not a number.
    """
    def refused(flag: str, value: object, expected: str) -> ValueError:
        return ValueError(f"{flag} {str(value)!r}: expected {expected}")

    try:
        upload = parse_size(max_upload)
    except ValueError:
        raise refused("--max-upload", max_upload, "a positive size such as 20MB or 512KiB") from None
    try:
        pixels = int(str(max_pixels).strip())
    except ValueError:
        pixels = 0
    if not 0 < pixels <= MAX_IMAGE_ID:  # a 400-digit count overflowed the float check in `ServerLimits`
        raise refused("--max-pixels", max_pixels, "a positive whole number of pixels such as 50000000")
    try:
        seconds = float(str(timeout).strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:  # NaN passes `<= 0`, and asyncio.wait_for takes it
        raise refused("--timeout", timeout, "a positive number of seconds such as 60")
    space, age = ServerLimits.ui_cache_bytes, ServerLimits.ui_cache_age_s
    if ui_upload_space is not None:
        try:
            space = parse_size(ui_upload_space)
        except ValueError:
            raise refused("--ui-upload-space", ui_upload_space, "a positive size such as 200MB or 1GB") from None
        if space < upload:  # one photo at the limit must fit, or every large one is a 507
            raise refused("--ui-upload-space", ui_upload_space,
                          f"a size of at least --max-upload ({upload:,} bytes)")
    if ui_upload_age is not None:
        try:
            age = float(str(ui_upload_age).strip())
        except ValueError:
            age = math.nan
        if not math.isfinite(age) or age <= 0:
            raise refused("--ui-upload-age", ui_upload_age, "a positive number of seconds such as 1800")
    return ServerLimits(max_upload_bytes=upload, max_pixels=pixels, request_timeout_s=seconds,
                        ui_cache_bytes=space, ui_cache_age_s=age)
