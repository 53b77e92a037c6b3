"""Kill `embed` anywhere: SIGKILL a child process at random moments of an in-place edit or a streamed rewrite.

Each trial starts a child that imports iga, says "ready", and embeds a recipe into a ~32 MB .safetensors file; the
parent kills it with SIGKILL after a random delay spread over the measured length of an uninterrupted embed. Then it
does what a user's next run does (journal recovery, then the next embed into the same folder) and classifies the file
as seen after recovery:

  intact     same bytes as before the trial          embedded   same bytes as an uninterrupted embed
  corrupted  anything else (must be 0)               temp left  .iga-tmp files after the next run (must be 0)

Half the kills land at a random moment of the whole embed; the other half wait until the write has begun (a temp
file or an armed journal exists) and then strike at a random point of it. Also counted: kills that landed mid-write
(a temp file or an armed journal existed when the child died).

    python bench/bench_kill_embed.py [--trials 60] [--mb 32]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

CHILD = """
import sys, time
import iga.checkpoint as ck
path, tag = sys.argv[1], sys.argv[2]
print("ready", flush=True)
t0 = time.perf_counter()
ck.embed_recipe(path, {"iga_version": "1.0.0", "architecture": "sd1", "note": tag})
print(time.perf_counter() - t0, flush=True)
"""


def recipe(tag: str) -> dict:
    """The recipe the child embeds for ``tag`` (kept in step with CHILD)."""
    return {"iga_version": "1.0.0", "architecture": "sd1", "note": tag}


def make_model(path: Path, mb: int) -> None:
    """A valid safetensors file of about ``mb`` MB with a tight header (so the first embed must rewrite)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal(mb * 256 * 1024).astype(np.float32)}, str(path), metadata={"k": "v"})


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def temp_files(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".iga-tmp"))


def start_child(path: Path, tag: str, env: dict[str, str]) -> subprocess.Popen:
    """Start an embed in a child process and wait until it has imported iga (so the delay covers the edit only)."""
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(path), tag], stdout=subprocess.PIPE, env=env, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def run_child(path: Path, tag: str, env: dict[str, str]) -> float:
    """One uninterrupted embed in a child; returns how long the embed itself took (seconds, as the child measured)."""
    p = start_child(path, tag, env)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0
    return float(out.strip())


def kill_during(path: Path, tag: str, env: dict[str, str], delay: float, journal_dir: Path, targeted: bool) -> bool:
    """SIGKILL an embed after ``delay`` seconds (counted from the start of its write when ``targeted``); True when it
    died mid-write (temp file or armed journal present)."""
    p = start_child(path, tag, env)
    if targeted:
        _wait_for_write(path.parent, journal_dir, p)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait(60)
    return bool(temp_files(path.parent)) or _journal_armed(journal_dir)


def _wait_for_write(folder: Path, journal_dir: Path, p: subprocess.Popen) -> None:
    """Busy-wait until the child has a temp file or an armed journal (or has finished): aims kills at the write."""
    while p.poll() is None and not temp_files(folder) and not _journal_armed(journal_dir):
        pass


def _journal_armed(journal_dir: Path) -> bool:
    try:
        return any(open(journal_dir / n, "rb").read(8) == b"IGAUNDO2" for n in os.listdir(journal_dir))
    except OSError:
        return False


def next_run(path: Path, tag: str) -> None:
    """What the user's next command does: recover an interrupted in-place edit, then embed again."""
    import iga.checkpoint as ck

    ck.recover_interrupted_edit(path)
    ck.embed_recipe(path, recipe(tag))


def classify(path: Path, before: str, embedded: str) -> str:
    import iga.checkpoint as ck

    ck.recover_interrupted_edit(path)  # a torn in-place header is the journal's job, not corruption
    d = digest(path)
    return "intact" if d == before else "embedded" if d == embedded else "corrupted"


def trials(kind: str, n: int, work: Path, pristine: Path, env: dict[str, str], rng: random.Random) -> Counter:
    """Run n kill trials of one embed path ("rewrite" or "in_place"); returns the outcome counts."""
    import iga.checkpoint as ck

    target = work / kind / "m.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    states = _expected_states(kind, pristine, work / f"{kind}-ref")
    window = _calibrate(kind, target, pristine, env, states)
    counts: Counter = Counter()
    for i in range(n):
        before_tag, tag = _reset(kind, target, pristine, i)
        before, embedded = states[before_tag], states[tag]
        targeted = i % 2 == 1  # odd trials aim at the write itself: a random point of the copy / the header write
        delay = rng.uniform(0, window / 3 if kind == "rewrite" else 0.002) if targeted else rng.uniform(0, window)
        journal_dir = Path(env["IGA_CACHE_DIR"]) / "journal"
        counts["mid-write"] += kill_during(target, tag, env, delay, journal_dir, targeted)
        counts[classify(target, before, embedded)] += 1
        next_run(target, tag)
        counts["temp left"] += len(temp_files(target.parent))
        assert ck.read_recipe_dict(target) == recipe(tag)
    counts["window ms"] = round(window * 1000)
    return counts


def _expected_states(kind: str, pristine: Path, ref: Path) -> dict[str, str]:
    """Digests of the file before a trial ("orig", "A", "B") and after an uninterrupted embed ("A", "B")."""
    import iga.checkpoint as ck

    ref.mkdir(parents=True, exist_ok=True)
    f = ref / "m.safetensors"
    shutil.copyfile(pristine, f)
    states = {"orig": digest(f)}
    ck.embed_recipe(f, recipe("A"))
    states["A"] = digest(f)
    ck.embed_recipe(f, recipe("B"))  # in place: same header length
    states["B"] = digest(f)
    ck.embed_recipe(f, recipe("A"))
    assert digest(f) == states["A"], "in-place edits must be deterministic for this benchmark"
    shutil.rmtree(ref)
    return states


def _reset(kind: str, target: Path, pristine: Path, i: int) -> tuple[str, str]:
    """Put the target in its pre-trial state; returns (state before, tag the child embeds)."""
    import iga.checkpoint as ck

    shutil.copyfile(pristine, target)
    if kind == "rewrite":
        return "orig", "A"
    ck.embed_recipe(target, recipe("A"))  # has slack now: the child's edit goes in place
    return "A", "B"


def _calibrate(kind: str, target: Path, pristine: Path, env: dict[str, str], states: dict[str, str]) -> float:
    """How long an uninterrupted embed of this kind takes in a child (the kill delay is spread over it, plus 50%)."""
    times = []
    for i in range(3):
        _, tag = _reset(kind, target, pristine, i)
        times.append(run_child(target, tag, env))
    return max(times) * 1.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=60, help="total trials, split over both embed paths")
    ap.add_argument("--mb", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="iga-kill-") as d:
        work = Path(d)
        os.environ["IGA_CACHE_DIR"] = str(work / "cache")  # the parent's recovery must see the child's journal
        env = {**os.environ}
        pristine = work / "pristine.safetensors"
        make_model(pristine, args.mb)
        print(f"file: {pristine.stat().st_size:,} bytes; {args.trials} SIGKILL trials")
        total: Counter = Counter()
        for kind, n in (("rewrite", args.trials - args.trials // 2), ("in_place", args.trials // 2)):
            t0 = time.perf_counter()
            c = trials(kind, n, work, pristine, env, rng)
            print(f"{kind:9s} trials={n:3d} intact={c['intact']:3d} embedded={c['embedded']:3d} "
                  f"corrupted={c['corrupted']} mid-write kills={c['mid-write']:3d} "
                  f"temp files left after next run={c['temp left']}  (kill window {c['window ms']} ms, "
                  f"{time.perf_counter() - t0:.1f} s)")
            total.update({k: v for k, v in c.items() if k != "window ms"})
        ok = total["corrupted"] == 0 and total["temp left"] == 0
        print(f"total     corrupted={total['corrupted']} temp files left={total['temp left']}: "
              + ("OK" if ok else "FAILED"))
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
