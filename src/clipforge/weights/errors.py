"""Exceptions of the weights layer.

Each one carries a message meant to be read by a person at a terminal: it names the file or
URL involved and what to do next, because weight problems are usually environmental (offline
machine, half-finished download, a checkpoint from an untrusted source).
"""

from __future__ import annotations

from clipforge.errors import UserError


class DownloadError(UserError, RuntimeError):
    """A checkpoint could not be fetched and verified."""


class UnsafeCheckpointError(UserError, RuntimeError):
    """A checkpoint's pickle asks for a global outside the allowlist (it could run code)."""

    def __init__(self, path: object, forbidden: str, hint: str = "") -> None:
        self.path = str(path)
        self.forbidden = forbidden
        message = (f"refusing to load {self.path}: its pickle references the forbidden global "
                   f"{forbidden!r}, which could run arbitrary code when unpickled")
        super().__init__(message + (f"; {hint}" if hint else ""))


class CheckpointFormatError(UserError, ValueError):
    """A file is not a checkpoint format we can read, or its contents are not a CLIP."""
