"""What an `iga serve` instance is allowed to do, and its limits (one home for the server's limits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 7860  # A1111's port: clients written for it find iga unchanged
MAX_BODY_BYTES = 8 << 20  # a request body (img2img carries an init image and a mask, png-info an image, as base64)
MAX_PROMPT_CHARS = 10_000  # prompt and negative prompt, each (A1111 has no limit; a tokenizer truncates at 77)
MAX_IMAGES_PER_REQUEST = 16  # batch_size x n_iter
MAX_REQUEST_PIXELS = 16 * 1024 * 1024  # width x height x images of one request: the work one client can ask for
MAX_STEPS = 150  # A1111's slider maximum; the guard's own cap (MAX_PLAN_STEPS) is the engine's, far higher
GALLERY_SIZE = 100  # recent images kept in memory for the page
MAX_GALLERY_FILE = 32 << 20  # an output file larger than this is not loaded into the gallery at start
EVENTS_KEPT = 2000  # server-wide (lifecycle) events kept for subscribers
JOBS_KEPT = 200  # finished jobs kept (with their images) for clients that ask for them later


@dataclass
class ServerConfig:
    """Settings of one server; the CLI's flags map onto these one to one."""

    models_dir: Path | None = None  # None: the bundled models
    default_model: str | None = None  # a model id in models_dir; None: the bundled demo model or the first found
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None  # required as Bearer (or Basic password) on every API request when set
    insecure: bool = False  # listen beyond loopback without a token (the user said so explicitly)
    mode: str = "guarded"  # the default guard mode of a request that does not name one
    queue_size: int = 16  # jobs waiting or running; beyond it 503 with Retry-After
    workers: int = 1  # generation threads (each model still runs one job at a time)
    max_loaded: int = 2  # models kept loaded (least recently used evicted)
    out_dir: Path | None = Path("outputs")  # where every image is saved with provenance; None: memory only
    audit_log: Path | None = None  # None: IGA_AUDIT_LOG or the default
    max_steps: int = MAX_STEPS
    preview_interval: float = 0.25  # seconds between live preview frames of a running job
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Refuse settings that cannot work, with what to change."""
        if self.mode not in ("strict", "guarded", "permissive"):
            raise ValueError(f"--mode {self.mode!r}: choose strict, guarded or permissive")
        for name, value, low in (("--queue", self.queue_size, 1), ("--workers", self.workers, 1),
                                 ("--max-loaded", self.max_loaded, 1), ("--max-steps", self.max_steps, 1)):
            if value < low:
                raise ValueError(f"{name} {value}: must be {low} or more")
        if not 0 < self.port < 65536:
            raise ValueError(f"--port {self.port}: must be 1-65535")
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise ValueError(f"--host {self.host} lets other machines generate on this one: give --token SECRET "
                             f"(clients send it as a Bearer token or the Basic-auth password) or --insecure")
        if self.models_dir is not None and not Path(self.models_dir).is_dir():
            raise ValueError(f"--models {self.models_dir}: not a folder (put .safetensors files or diffusers "
                             f"folders in it)")


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable only from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
