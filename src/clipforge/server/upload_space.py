"""The web UI's upload folder as a ledger: what it holds, who uploaded each file, what is reserved.

gradio stores every file a browser uploads in one folder and answers with the file's path; a
client then names that path in its events. Three things are decided here, in memory, without
walking the folder on each upload (a walk over 40,000 tiny files took a second of event loop):

* **Space**: an upload reserves its declared size (and one file) before gradio writes a byte,
  so parallel uploads cannot together pass the byte budget (they once reached 380 MB of 200 MB);
  files are counted as well as bytes, so 40,000 tiny uploads cannot pass as "0.8 MB".
* **Files of one request**: gradio takes up to 1,000 files in one multipart request; each file part
  takes its place in the budget as it arrives (`upload_form.UploadForm`, `UploadLedger.grow`), so a request
  cannot pass the file budget by arriving as one (six requests once left 6,000 files against 2,000).
* **Age**: entries older than the maximum age are deleted, oldest first (insertion order).
* **Uploads in flight**: one address's reservations may hold at most half of the byte and of the file budget at
  once (`_over_half`); while an address has an upload in flight, its newest stored upload is not kept (below).
* **Fairness**: when the folder is full, room is made from the biggest holders first (bytes, or files when files
  are short, the uploader then counted with the files of its upload; among equals the address with the oldest
  upload), each its oldest upload first, again and again until the new upload fits; but no address gives its
  newest upload (the files it stored last, together: one request's) while that is younger than `MIN_AGE_S`. When
  the upload cannot fit even so (uploads in flight or young newest uploads hold the rest), nothing is evicted and
  it is refused (507; `wait_s`: when a young upload in the way may go). A lone user's uploads turn over, oldest
  first; a client that filled the folder evicts its own first (all but its newest, whatever their age: one
  address cannot hold more than one request's worth, at most half the space, out of reach); a class of 30 phones
  fits, each student's latest photo kept; and no browser's fresh upload is evicted for others, however many
  addresses each holding less than it upload after it. (Room was once made only from an address holding more
  than half: 30 students with 4 phone photos each, or two addresses with 100 MB of random bytes each, made every
  upload a 507 for the 30 minutes uploads are kept. Then from the biggest holders by size alone: a browser's
  100 KB upload was deleted seconds after it was made by the tenth of ten addresses uploading 90 KB each into a
  1 MB space, every one of them holding less than it; audit 61. Then only from holders above an equal share, and
  no upload younger than `MIN_AGE_S`: one address filling the space with 20 uploads locked every other browser
  out, and a class of 30 had 15 photos refused again; review 61.) Only stored files are evicted: the files of an
  upload still arriving are not in the ledger until it has ended (`settle`). The ledger does not know which
  stored files a running UI event is reading; an event opens its file as it starts (`MIN_AGE_S`).
* **Owner**: each file is bound to the uploader (a random cookie this server gave that browser);
  a client that merely knows the path of someone else's upload cannot use it.
* **Gone**: the last `max_files` deleted uploads are remembered with their owners and why they went
  (`removed`), so a tab left open past the maximum age is told to upload its file again, instead of
  getting the answer meant for a client naming a server path.

`sweep` removes what a failed upload left behind (gradio's temporary files, emptied folders).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from clipforge.atomic import files_under

__all__ = ["EVICTED", "EXPIRED", "MIN_AGE_S", "Reservation", "UploadLedger", "sweep", "upload_bytes_used"]

EXPIRED = "expired"
"""`UploadLedger.removed`: deleted for its age."""
EVICTED = "evicted"
"""`UploadLedger.removed`: deleted to make room for a newer upload (its address held the most)."""
MIN_AGE_S = 120.0
"""Seconds an address's newest upload is kept before it may be deleted to make room for another (`UploadLedger`). A
page uploads a file and then names it in an event (a click on Search or Classify), which waits its turn in the
model's fair queue and opens the file only as it starts: the UI's event/answer window is `ui_events.UNREAD_AGE_S`
(60 s: an answer unread that long is forgotten), and as long again is left for the click. An upload evicted sooner
was lost to the page that had just sent it (410 "upload it again", and its next upload was again the biggest). Only
the newest is kept so: many addresses that each keep one young upload can hold the space (an address's one request
is at most half of it), re-sending it every `MIN_AGE_S` (200 MB: ~1.7 MB/s from two addresses); one address
cannot."""

_UPLOAD_FOLDER = re.compile(r"^[0-9a-f]{64}$")  # gradio names each upload's folder by a sha256


@dataclass
class _Entry:
    size: int
    added: float
    host: str = ""
    owners: set[str] = field(default_factory=set)


@dataclass
class Reservation:
    bytes: int
    files: int
    host: str = ""


class UploadLedger:
    """Bytes, files, owners and reservations of one upload folder (thread-safe, O(1) per upload)."""

    def __init__(self, folder: str, max_bytes: int, max_files: int, max_age_s: float,
                 min_age_s: float | None = None) -> None:
        self.folder = os.path.realpath(folder)
        self.max_bytes = int(max_bytes)
        self.max_files = int(max_files)
        self.max_age_s = float(max_age_s)
        self.min_age_s = MIN_AGE_S if min_age_s is None else float(min_age_s)  # read when built: tests may set it
        self._lock = threading.Lock()
        self._refused = threading.local()  # `wait_s` of this thread's last refusal
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_host: dict[str, OrderedDict[str, None]] = {}  # host -> its entries' paths, oldest first
        self._held: dict[str, list[int]] = {}  # host -> [bytes, files] of its entries
        self._doomed: list[str] = []  # evicted entries' paths, for the caller to delete
        self._removed: OrderedDict[str, tuple[frozenset[str], str]] = OrderedDict()  # path -> (owners, why)
        self.bytes = self.files = 0
        self.reserved_bytes = self.reserved_files = 0
        self._reserved_by_host: dict[str, int] = {}  # bytes of uploads in flight, per address
        self._reserved_files_by_host: dict[str, int] = {}  # files of uploads in flight, per address
        # once, at start: files from an earlier run, oldest first (each address's entries are kept in that order)
        for path, info in sorted(files_under(self.folder), key=lambda item: item[1].st_mtime):
            self._add(str(path), info.st_size, info.st_mtime, None)

    def _add(self, path: str, size: int, added: float, owner: str | None, host: str = "") -> None:
        entry = self._entries.get(path)
        if entry is None:
            self._removed.pop(path, None)
            entry = self._entries[path] = _Entry(size, added, host)
            self.bytes += size
            self.files += 1
            self._by_host.setdefault(host, OrderedDict())[path] = None
            held = self._held.setdefault(host, [0, 0])
            held[0] += size
            held[1] += 1
        elif entry.host != host:  # the same bytes from another address (gradio names folders by content): the
            # file is now that address's newest upload. Refreshed where it stood, it became the first address's
            # newest, and that address's real newest lost its protection (evicted 14 s after it was made).
            owners = entry.owners
            self._forget(path)
            self._add(path, size, added, None, host)
            self._entries[path].owners |= owners
            entry = self._entries[path]
        else:  # the same bytes under the same name again from the same address: refresh
            self.bytes += size - entry.size
            self._held[entry.host][0] += size - entry.size
            entry.size, entry.added = size, added
            self._entries.move_to_end(path)
            self._by_host[entry.host].move_to_end(path)
        if owner:
            entry.owners.add(owner)

    def _forget(self, path: str, why: str | None = None) -> None:
        """Drop an entry; with `why` (it is being deleted), remember its owners and the reason."""
        entry = self._entries.pop(path)
        if why is not None and entry.owners:
            self._removed[path] = (frozenset(entry.owners), why)
            while len(self._removed) > self.max_files:
                self._removed.popitem(last=False)
        self.bytes -= entry.size
        self.files -= 1
        del self._by_host[entry.host][path]
        held = self._held[entry.host]
        held[0] -= entry.size
        held[1] -= 1
        if not held[1]:
            del self._held[entry.host], self._by_host[entry.host]

    def _fits(self, nbytes: int, nfiles: int) -> bool:
        return (self.bytes + self.reserved_bytes + nbytes <= self.max_bytes
                and self.files + self.reserved_files + nfiles <= self.max_files)

    def _make_room(self, nbytes: int, nfiles: int, host: str, upload_files: int) -> bool:
        """Evict the oldest entries of the biggest holders until `nbytes`/`nfiles` more fit (`_plan`);
        False, with nothing evicted, when they cannot (`wait_s` then says when a young upload in the way may go)."""
        self._refused.wait = None
        plan = self._plan(nbytes, nfiles, host, upload_files)
        for path in plan or ():
            self._forget(path, EVICTED)
            self._doomed.append(path)
        return plan is not None

    @property
    def wait_s(self) -> float | None:
        """Seconds until the first upload that was too young to evict for this thread's last refused `reserve` or
        `grow` is `MIN_AGE_S` old (room may then be made: the 507's `Retry-After`); None when none was in the way."""
        return getattr(self._refused, "wait", None)

    def _plan(self, nbytes: int, nfiles: int, host: str, upload_files: int) -> list[str] | None:
        """The entries to evict, in order, for `nbytes`/`nfiles` more from `host` to fit (module docstring), found
        before any is evicted: None when they cannot, and then nothing is evicted for an upload refused all the
        same. The biggest holder gives its oldest entry, again and again, but no address gives its newest upload
        (the entries it stored last, together: one request's files) while that is younger than `MIN_AGE_S`.
        `host`, the uploader, is ranked with the others: its own older uploads go when it holds the most, and when
        it then has nothing it may give (none stored, or only its young newest) the upload is refused, so nobody
        holding less than it is evicted for it. Where files are short, it counts with the `upload_files` of its
        upload (one request of 50 files in a space of 20 had evicted another address's 2 before it was refused);
        where bytes are, with its stored files alone (one photo is taken by evicting the biggest holders' oldest,
        even where every address holds less than that photo: a newcomer in a lecture of 100 one-photo students)."""
        total = [self.bytes, self.files]

        def over(kind: int) -> bool:
            return (total[0] + self.reserved_bytes + nbytes > self.max_bytes if kind == 0
                    else total[1] + self.reserved_files + nfiles > self.max_files)

        plan: list[str] = []
        if not over(0) and not over(1):
            return plan
        now = time.time()
        held = {h: list(counts) for h, counts in self._held.items()}
        queued = {h: iter(self._by_host[h]) for h in held}  # each holder's entries, oldest first
        heads = {h: next(queued[h]) for h in held}
        # when each holder stored its newest upload (its last entries share that time), while it is young
        # (not while it has an upload in flight: that one is about to be its newest; one address kept a 1,000-file
        # upload stored and another always in flight, and so held every file of the space for as long as it liked)
        kept = {h: added for h in held if not self._in_flight(h)
                if now - (added := self._entries[next(reversed(self._by_host[h]))].added) < self.min_age_s}
        holders = {*held, host}
        young: list[float] = []  # when the newest upload of each holder passed over for its age may go

        def weight(holder: str, kind: int) -> int:
            return (held[holder][kind] if holder in held else 0) + (upload_files if kind == 1 and holder == host else 0)

        def age(holder: str) -> float:  # among holders of as much, the one with the oldest upload goes first
            return self._entries[heads[holder]].added if holder in heads else float("inf")

        def refused() -> None:
            self._refused.wait = max(0.0, min(young)) if young else None

        while over(0) or over(1):
            kind = 1 if over(1) else 0
            # a heap of holders, biggest first: one eviction costs O(log holders), not a scan of every address
            # (2,000 of them may hold one file each)
            heap = [(-weight(h, kind), age(h), h) for h in holders]
            heapq.heapify(heap)
            while over(kind):  # evicting never makes the other kind pass its budget
                if not heap:
                    return refused()
                _, _, biggest = heapq.heappop(heap)
                if biggest not in held:
                    if biggest == host:  # the uploader would hold the most, with nothing stored to give up
                        return refused()
                    continue
                path = heads[biggest]
                added = self._entries[path].added
                if biggest in kept and added >= kept[biggest]:  # all it has left is its newest upload, still young
                    young.append(kept[biggest] + self.min_age_s - now)
                    if biggest == host:
                        return refused()
                    continue
                size = self._entries[path].size
                plan.append(path)
                total[0] -= size
                total[1] -= 1
                held[biggest][0] -= size
                held[biggest][1] -= 1
                if held[biggest][1]:
                    heads[biggest] = next(queued[biggest])
                else:
                    del held[biggest], heads[biggest]
                if biggest in held or biggest == host:
                    heapq.heappush(heap, (-weight(biggest, kind), age(biggest), biggest))
        return plan

    def doomed(self) -> list[str]:
        """Paths evicted to make room since the last call, for the caller to delete (off the event loop)."""
        with self._lock:
            paths, self._doomed = self._doomed, []
        return paths

    def expired(self, now: float | None = None) -> list[str]:
        """Forget entries older than the maximum age; their paths, for the caller to delete."""
        now = time.time() if now is None else now
        gone: list[str] = []
        with self._lock:
            while self._entries:
                path, entry = next(iter(self._entries.items()))
                if now - entry.added <= self.max_age_s:
                    break
                self._forget(path, EXPIRED)
                gone.append(path)
        return gone

    def _over_half(self, host: str, nbytes: int, nfiles: int) -> bool:
        """Whether `host`'s uploads in flight would hold more than half the budget, bytes or files (only stored
        files can be evicted): uploads declaring 20 MB each and trickling in held the whole space; and 1,000-file
        requests always one in flight, a slow last byte each, held the files budget (review 61)."""
        return (2 * (self._reserved_by_host.get(host, 0) + nbytes) > self.max_bytes
                or 2 * (self._reserved_files_by_host.get(host, 0) + nfiles) > self.max_files)

    def _in_flight(self, host: str) -> bool:
        return bool(self._reserved_by_host.get(host) or self._reserved_files_by_host.get(host))

    def reserve(self, nbytes: int, nfiles: int = 1, host: str = "") -> Reservation | None:
        """Hold room for an upload of `nbytes` from `host`, evicting as the module docstring says (the paths:
        `doomed()`), or None when the folder would pass its budget all the same, or when `host` would hold more
        than half of it in flight (`_over_half`)."""
        with self._lock:
            self._refused.wait = None  # a refusal below says its own wait, never an earlier call's
            if self._over_half(host, nbytes, nfiles) or not self._make_room(nbytes, nfiles, host, nfiles):
                return None
            self.reserved_bytes += nbytes
            self.reserved_files += nfiles
            self._reserved_by_host[host] = self._reserved_by_host.get(host, 0) + nbytes
            self._reserved_files_by_host[host] = self._reserved_files_by_host.get(host, 0) + nfiles
            return Reservation(nbytes, nfiles, host)

    def grow(self, reservation: Reservation, files: int) -> bool:
        """Raise an upload's reservation to `files` files as its parts arrive; False when they cannot fit."""
        with self._lock:
            self._refused.wait = None
            more = files - reservation.files
            if more <= 0:
                return True
            if self._over_half(reservation.host, 0, more) or not self._make_room(0, more, reservation.host, files):
                return False
            self.reserved_files += more
            self._reserved_files_by_host[reservation.host] = self._reserved_files_by_host.get(reservation.host, 0) + more
            reservation.files = files
            return True

    def settle(self, reservation: Reservation, stored: list[tuple[str, int]], owner: str | None,
               resolved: bool = False) -> None:
        """The upload ended: release its reservation and record the files it stored (path, size); `resolved`: the
        paths are real paths already (resolved off the event loop: 1,000 of them are 1,000 `realpath` walks)."""
        now = time.time()
        if not resolved:
            stored = [(os.path.realpath(path), size) for path, size in stored]
        with self._lock:
            self.reserved_bytes -= reservation.bytes
            self.reserved_files -= reservation.files
            left = self._reserved_by_host.pop(reservation.host, 0) - reservation.bytes
            if left > 0:
                self._reserved_by_host[reservation.host] = left
            left = self._reserved_files_by_host.pop(reservation.host, 0) - reservation.files
            if left > 0:
                self._reserved_files_by_host[reservation.host] = left
            for path, size in stored:
                self._add(path, size, now, owner, reservation.host)

    def owns(self, path: str, owner: str | None) -> bool:
        """`path` (resolved) was uploaded by `owner`."""
        if not owner:
            return False
        with self._lock:
            entry = self._entries.get(os.path.realpath(path))
            return entry is not None and owner in entry.owners

    def removed(self, path: str, owner: str | None) -> str | None:
        """`EXPIRED` or `EVICTED` when `path` (resolved) was `owner`'s upload and has been deleted, else None."""
        if not owner:
            return None
        with self._lock:
            owners, why = self._removed.get(os.path.realpath(path), (frozenset(), None))
            return why if owner in owners else None

    def known(self, path: str) -> bool:
        with self._lock:
            return os.path.realpath(path) in self._entries


def delete_files(paths: list[str], root: str) -> None:
    """Delete `paths` and then their folders when emptied (never `root` itself)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
        parent = os.path.dirname(path)
        if parent != root:
            with contextlib.suppress(OSError):
                os.rmdir(parent)


def sweep(root: str, ledger: UploadLedger) -> int:
    """Remove what failed uploads left at the top of `root`: gradio's temporary `tmp*` files and empty
    upload folders. Called only when no upload is in flight (their temporary files are in use)."""
    removed = 0
    with os.scandir(root) as entries:
        for entry in entries:
            path = os.path.join(root, entry.name)
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and _UPLOAD_FOLDER.match(entry.name):
                    os.rmdir(path)  # only succeeds when empty
                    removed += 1
                elif entry.name.startswith("tmp") and not ledger.known(path):
                    os.unlink(path)
                    removed += 1
    return removed


def upload_bytes_used(upload_dir: str | os.PathLike[str]) -> int:
    """Bytes held by files under `upload_dir`."""
    return sum(info.st_size for _, info in files_under(upload_dir))
