"""`iga serve`: the HTTP server (A1111-compatible API, iga's API, the web page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from iga.server.config import DEFAULT_PORT


def serve_cmd(
    models: Annotated[Optional[Path], typer.Option("--models", help="folder of .safetensors checkpoints and diffusers "
                                                   "folders (default: the bundled models)")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="the model selected at start (an id from "
                                                 "the models folder)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on; anything but loopback needs --token or "
                                      "--insecure")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (7860, as A1111, so its clients find iga unchanged)")] = DEFAULT_PORT,
    token: Annotated[Optional[str], typer.Option(help="secret every API request must carry (Bearer, or the Basic "
                                                 "password); also IGA_SERVE_TOKEN", envvar="IGA_SERVE_TOKEN")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="allow --host beyond loopback without a token")] = False,
    mode: Annotated[str, typer.Option(help="guard mode of requests that do not choose one: strict, guarded or "
                                      "permissive")] = "guarded",
    queue: Annotated[int, typer.Option("--queue", help="jobs waiting or running before new ones get 503 + "
                                       "Retry-After")] = 16,
    workers: Annotated[int, typer.Option(help="generation threads (one job at a time per model)")] = 1,
    max_loaded: Annotated[int, typer.Option("--max-loaded", help="models kept loaded (least recently used "
                                            "unloaded)")] = 2,
    max_steps: Annotated[int, typer.Option("--max-steps", help="most sampling steps one request may run")] = 150,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="where every image is saved with its "
                                                "provenance")] = Path("outputs"),
    no_save: Annotated[bool, typer.Option("--no-save", help="keep images in memory only (the gallery and the "
                                          "responses still carry their provenance)")] = False,
) -> None:
    """Serve the A1111 HTTP API, iga's API and a preset-first web page; every request goes through the guard.

    Open http://127.0.0.1:7860/ for the page (presets first, Advanced knobs with the recipe's ranges, refusals
    with the guard's reason, overrides with a reason, live previews, a gallery with replay). Scripts written for
    A1111 (e.g. the webuiapi client) work unchanged: the values they send by default stand for "use the recipe";
    other values are deliberate and must be named as overrides (override_settings.iga_overrides or the
    X-IGA-Override header) when they deviate. API docs at /docs.

    Examples:
      iga serve
      iga serve --models ~/models --model sd15.safetensors
      iga serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    from iga.server import ServerConfig

    config = ServerConfig(models_dir=models, default_model=model, host=host, port=port, token=token,
                          insecure=insecure, mode=mode, queue_size=queue, workers=workers, max_loaded=max_loaded,
                          max_steps=max_steps, out_dir=None if no_save else out)
    try:
        config.check()
        from iga.server import create_app

        app = create_app(config)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    import uvicorn

    typer.echo(f"iga serve: http://{host}:{port}/ (API docs at /docs); {len(app.state.service.pool.entries)} "
               f"model(s), current {app.state.service.pool.current}; Ctrl-C stops", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def register(app: typer.Typer) -> None:
    """Add `iga serve` to the CLI."""
    app.command("serve")(serve_cmd)
