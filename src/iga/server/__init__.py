"""`iga serve`: an HTTP server that A1111 clients already speak (`/sdapi/v1`), iga's own API (`/iga/v1`) and a
preset-first web page (`/`). Every request becomes a guard ``Request`` and yields a ``Plan`` exactly as
`iga generate` does; generation runs on one bounded job queue with per-model locks.

    from iga.server import ServerConfig, create_app
    app = create_app(ServerConfig(models_dir="models"))     # an ASGI app (FastAPI)
"""

from iga.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def create_app(config: ServerConfig | None = None):
    """The FastAPI application for ``config`` (imports FastAPI only when called)."""
    from iga.server.app import build_app

    return build_app(config or ServerConfig())
