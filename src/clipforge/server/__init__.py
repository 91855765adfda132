"""The web app: a FastAPI REST API (OpenAPI docs at /docs) and a gradio UI at /, one process.

    from clipforge.library import Library
    from clipforge.server import create_app
    app = create_app(Library("~/photos-library"), token="s3cret")   # any ASGI server runs it

or from the shell: `clipforge serve --library ~/photos-library`.
"""

from clipforge.server.app import create_app
from clipforge.server.limits import ServerLimits, parse_size
from clipforge.server.runner import ServeError, serve

__all__ = ["ServeError", "ServerLimits", "create_app", "parse_size", "serve"]
