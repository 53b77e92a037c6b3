"""`iga serve` under load: concurrent A1111 clients on the bundled demo model, and the per-request overhead of
the server against the bare in-process ``Model.generate`` of the same plan.

    python bench/bench_serve.py                 # 16 clients x 25 requests, 20 overhead pairs (a few minutes)
    python bench/bench_serve.py --quick         # 4 clients x 5 requests, 8 pairs

The server is a subprocess (``iga serve --no-save`` on a free port, its own audit log and model index in a
temporary folder). After warm-up (requests until the model is loaded, then ``--warmup`` more) its RSS is read
from /proc/PID/status; again after the load run.

Load: ``--clients`` threads, each with its own ``requests.Session``, send ``--requests`` POST /sdapi/v1/txt2img
with webuiapi's default payload (seed = a distinct number per request). A 200 must carry an image; a 503 must
carry Retry-After (answered: the client moves on); anything else is an error.

Overhead: one client sends the same payload with a fixed seed; the plan the server resolved (from the response's
``info``) is run in this process with ``iga.load().generate(plan=...)``. The two alternate (HTTP, in-process,
HTTP, ...) and never overlap, with a short pause between them so neither process's idle-spinning worker threads
eat into the other's time; this process uses as many torch threads as the server reports in the plan's
runtime. The images must be pixel-identical (else the two sides did not do the same work).
Overhead = median HTTP round trip / median in-process generation - 1.

Targets (the issue): 0 errors; every request answered; RSS after the run within 10 % of RSS after warm-up;
overhead < 5 %. Exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server_support import ServeProcess  # noqa: E402  (the one way tests and benches start `iga serve`)

PAYLOAD = {"prompt": "a red circle on a blue background", "steps": 20, "cfg_scale": 7, "sampler_name": "Euler a",
           "scheduler": "automatic", "width": 512, "height": 512}
START_TIMEOUT = 120  # seconds for the server to answer at all (imports on a busy machine)
REQUEST_TIMEOUT = 300  # one request may wait behind a full queue on a slow machine
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def txt2img(session, base: str, seed: int):
    """(status, seconds, response) of one POST /sdapi/v1/txt2img; the clock stops when the body has arrived."""
    t = time.perf_counter()
    r = session.post(base + "/sdapi/v1/txt2img", json={**PAYLOAD, "seed": seed}, timeout=REQUEST_TIMEOUT)
    return r.status_code, time.perf_counter() - t, r


def has_image(r) -> bool:
    try:
        images = r.json().get("images") or []
        return bool(images) and base64.b64decode(images[0])[:8] == PNG_MAGIC
    except (ValueError, AttributeError):
        return False


def warm_up(server: ServeProcess, n: int) -> None:
    import requests

    with requests.Session() as s:
        status, seconds, r = txt2img(s, server.base, 0)  # loads the model
        if status != 200 or not has_image(r):
            raise SystemExit(f"warm-up request answered {status}: {r.text[:500]}\n{server.log()}")
        print(f"first request (model load): {seconds:.2f} s", flush=True)
        for k in range(n):
            status, _, r = txt2img(s, server.base, k + 1)
            if status != 200:
                raise SystemExit(f"warm-up request answered {status}: {r.text[:500]}")


def load_run(base: str, clients: int, per_client: int) -> tuple[Counter, list[str], float, list[float]]:
    """Every client sends its requests back to back; returns status counts, error samples, wall, latencies."""
    import requests

    counts: Counter = Counter()
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    go = threading.Barrier(clients)  # all clients start together: the queue fills at once

    def client(c: int) -> None:
        with requests.Session() as s:
            go.wait()
            for k in range(per_client):
                seed = 1000 + c * per_client + k
                try:
                    status, seconds, r = txt2img(s, base, seed)
                except requests.RequestException as e:
                    with lock:
                        counts["no answer"] += 1
                        errors.append(f"client {c} request {k}: {type(e).__name__}: {e}")
                    continue
                if status == 200 and has_image(r):
                    kind = "200 image"
                elif status == 503 and r.headers.get("Retry-After"):
                    kind = "503 Retry-After"
                else:
                    kind = f"error {status}"
                with lock:
                    counts[kind] += 1
                    if kind == "200 image":
                        latencies.append(seconds)
                    elif kind.startswith("error"):
                        errors.append(f"client {c} request {k}: {status} {r.text[:300]}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return counts, errors, time.perf_counter() - t, latencies


def overhead_run(base: str, pairs: int, warm: int, gap: float, seed: int) -> dict:
    """Alternate one HTTP request and one in-process generation of the same plan; medians of each side."""
    import requests
    import torch

    import iga
    from iga.guard import Plan

    with requests.Session() as s:
        status, _, r = txt2img(s, base, seed)
        if status != 200:
            raise SystemExit(f"overhead reference request answered {status}: {r.text[:500]}")
        served = json.loads(r.json()["info"])["iga"]["plans"][0]
        threads = (served.get("runtime") or {}).get("threads") or torch.get_num_threads()
        torch.set_num_threads(int(threads))
        plan = Plan.from_dict(served).model_copy(update={"pixels_sha256": None, "runtime": None})
        model = iga.load()
        for _ in range(warm):  # weights, oneDNN kernels: the server has paid these in its warm-up
            model.generate(plan=plan)
        http_s, local_s = [], []
        for _ in range(pairs):
            time.sleep(gap)
            status, seconds, r = txt2img(s, base, seed)
            if status != 200:
                raise SystemExit(f"overhead request answered {status}: {r.text[:500]}")
            http_s.append(seconds)
            time.sleep(gap)
            t = time.perf_counter()
            out = model.generate(plan=plan)
            local_s.append(time.perf_counter() - t)
        http_pixels = json.loads(r.json()["info"])["iga"]["plans"][0].get("pixels_sha256")
        local_pixels = out[0].plan.pixels_sha256
    med_http, med_local = statistics.median(http_s), statistics.median(local_s)
    return {"threads": threads, "http": med_http, "local": med_local, "overhead": med_http / med_local - 1,
            "identical": http_pixels == local_pixels, "http_min": min(http_s), "local_min": min(local_s)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    ap.add_argument("--warmup", type=int, default=10, help="requests after the model has loaded, before RSS")
    ap.add_argument("--pairs", type=int, default=20, help="HTTP / in-process pairs of the overhead run")
    ap.add_argument("--gap", type=float, default=0.2, help="seconds of quiet between the two sides of a pair")
    ap.add_argument("--quick", action="store_true", help="4 clients x 5 requests, 8 pairs")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.requests, args.warmup, args.pairs = 4, 5, 3, 8

    with tempfile.TemporaryDirectory(prefix="iga-bench-serve-") as tmp:
        os.environ["IGA_AUDIT_LOG"] = str(Path(tmp) / "bench-audit.jsonl")  # the in-process side writes none,
        os.environ["IGA_MODEL_INDEX"] = str(Path(tmp) / "bench-models.json")  # but never into the user's files
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        server = ServeProcess(Path(tmp), "--no-save", start_timeout=START_TIMEOUT)
        try:
            load_before = Path("/proc/loadavg").read_text().split()[0]
            warm_up(server, args.warmup)
            rss_warm = rss_mib(server.proc.pid)
            n = args.clients * args.requests
            print(f"load: {args.clients} clients x {args.requests} requests ...", flush=True)
            counts, errors, wall, lat = load_run(server.base, args.clients, args.requests)
            if server.proc.poll() is not None:
                raise SystemExit(f"iga serve died during the load run:\n{server.log()}")
            rss_after = rss_mib(server.proc.pid)
            print(f"overhead: {args.pairs} pairs (HTTP, in-process) ...", flush=True)
            ov = overhead_run(server.base, args.pairs, warm=3, gap=args.gap, seed=7)
        finally:
            server.stop()
    load_after = Path("/proc/loadavg").read_text().split()[0]

    answered = counts["200 image"] + counts["503 Retry-After"]
    n_errors = n - answered
    rss_growth = rss_after / rss_warm - 1
    lat.sort()
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))

    print()
    print(f"{'':38} {'value':>12}")
    print(f"{'requests sent':38} {n:>12}")
    for kind in ("200 image", "503 Retry-After"):
        print(f"{'  ' + kind:38} {counts[kind]:>12}")
    for kind, c in sorted(counts.items()):
        if kind not in ("200 image", "503 Retry-After"):
            print(f"{'  ' + kind:38} {c:>12}")
    print(f"{'load wall (s)':38} {wall:>12.1f}")
    print(f"{'throughput (images/s)':38} {counts['200 image'] / wall:>12.2f}")
    print(f"{'latency under load p50 / p95 (s)':38} {p(0.5):>5.2f} / {p(0.95):<4.2f}")
    print(f"{'server RSS after warm-up (MiB)':38} {rss_warm:>12.1f}")
    print(f"{'server RSS after the run (MiB)':38} {rss_after:>12.1f}")
    # other work on the machine makes 2-thread torch spin and stall: the figures are read against this
    print(f"{'load average before / after':38} {load_before:>5} / {load_after}")
    print(f"{'torch threads (server = bench)':38} {ov['threads']:>12}")
    print(f"{'median HTTP round trip (s)':38} {ov['http']:>12.4f}")
    print(f"{'median in-process generate (s)':38} {ov['local']:>12.4f}")
    print(f"{'min HTTP / min in-process (s)':38} {ov['http_min']:>5.4f} / {ov['local_min']:.4f}")
    print(f"{'same pixels over HTTP and in-process':38} {str(ov['identical']):>12}")
    for e in errors[:5]:
        print(f"error sample: {e}")

    targets = [
        ("server errors", f"{n_errors}", "0", n_errors == 0),
        ("every request answered", f"{answered}/{n}", f"{n}/{n}", answered == n),
        ("RSS growth over the run", f"{rss_growth:+.1%}", "within 10 %", abs(rss_growth) <= 0.10),
        ("overhead vs in-process generate", f"{ov['overhead']:+.1%}", "< 5 %", ov["overhead"] < 0.05),
        ("HTTP and in-process images identical", str(ov["identical"]), "True", ov["identical"]),
    ]
    print()
    print(f"{'target':38} {'measured':>12} {'wanted':>12}  result")
    for name, got, want, ok in targets:
        print(f"{name:38} {got:>12} {want:>12}  {'pass' if ok else 'MISS'}")
    missed = [t[0] for t in targets if not t[3]]
    print(f"\niga serve, {args.clients}x{args.requests}: {n_errors} errors, {answered}/{n} answered, RSS "
          f"{rss_growth:+.1%}, overhead {ov['overhead']:+.1%} -> "
          f"{'all targets met' if not missed else 'MISSED: ' + ', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
