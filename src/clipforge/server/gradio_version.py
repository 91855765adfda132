"""Which gradio the web page runs on, checked before it is imported.

The page relies on more than gradio's public API: its route names (`ui_guard` allows a fixed list and refuses the
rest), its upload parser and upload folder (`ui_upload_route`), its translation class (`gr.I18n`) and the folder
of its built frontend (`ui_assets`). The app extra once said ``gradio>=4``, which pip would satisfy with a gradio
4.44 that has neither `gr.I18n` nor ``gradio.route_utils.BUILD_PATH_LIB``: `serve` died in a traceback. A gradio
outside the range the page was built and attacked against is now one line naming what is installed and what to
install; a newer major version may open routes the guard has never seen, so it is refused too.
"""

from __future__ import annotations

import re
from importlib import metadata

from clipforge.errors import UserError

__all__ = ["GRADIO_RANGE", "GradioVersionError", "check_gradio"]

GRADIO_RANGE = ((6, 31), (7, 0))
"""The gradio versions the page runs on: from the first (tested, the constraints file's pin) up to, not
including, the second (the next major version)."""


class GradioVersionError(UserError, RuntimeError):
    """The installed gradio is outside `GRADIO_RANGE`."""


def _release(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_gradio(version: str | None = None) -> None:
    """Raise `GradioVersionError` unless gradio (`version`, default: the installed distribution's) lies in
    `GRADIO_RANGE`. Not installed: nothing is raised here; the import that follows names the extra."""
    if version is None:
        try:
            version = metadata.version("gradio")
        except metadata.PackageNotFoundError:
            return
    low, high = GRADIO_RANGE
    release = _release(version)
    if release is None or not low <= release < high:
        raise GradioVersionError(
            f"clipforge serve's web page needs gradio >= {low[0]}.{low[1]} and < {high[0]}.0 (it relies on gradio's "
            f"routes and upload folder, checked against those versions); gradio {version} is installed: "
            f"pip install 'clipforge[app]' (or serve the REST API alone with --no-ui)")
