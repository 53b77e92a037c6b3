"""`iga doctor --self-test`: deliberately broken setups, each with one injected cause, and whether the doctor
names that cause first.

Every setup also leaves the recipe in a harmless way (another sampler the recipe allows), so naming the
injected cause first is a ranking the doctor has to earn, not the only deviation it can see. The demo setups run
on the bundled (trained) demo model; the VAE and clip-skip setups need a latent model with a text encoder and
run on a tiny random-weight SD1 model built here (the only kind this machine can make without downloads). The
NaN setup wraps the demo model's UNet so that it returns NaN from a given step on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from iga.guard import Request

from .case import Case

PROMPT = "a red circle on a blue background"
NAN_FROM_T = 300.0  # the faulty UNet returns NaN for timesteps below this (the last third of the trajectory)


@dataclass(frozen=True)
class BrokenSetup:
    """One injected fault: what the user did, and the setting (or "model") the doctor should name first."""

    name: str
    expect: str
    fields: dict[str, Any] = field(default_factory=dict)
    model: str = "demo"  # "demo" or "sd1" (tiny random weights)
    fault: str = ""  # "nan_late": the UNet emits NaN late in the trajectory


SETUPS: tuple[BrokenSetup, ...] = (
    BrokenSetup("wrong prediction type (eps on a v model)", "prediction_type",
                {"prediction_type": "eps", "sampler": "euler"}),
    BrokenSetup("CFG far above the recipe's range (15; recipe 1.5-4)", "cfg", {"cfg": 15.0, "sampler": "euler"}),
    BrokenSetup("too few steps (4; recipe 15-40)", "steps", {"steps": 4, "sampler": "euler"}),
    BrokenSetup("turbo schedule (8 steps) on an ordinary model", "schedule",
                {"schedule": "turbo", "steps": 8, "sampler": "euler"}),
    BrokenSetup("LCM sampler on an ordinary model", "sampler", {"sampler": "lcm", "cfg": 2.0}),
    BrokenSetup("a model that emits NaN from step ~14", "model", {"sampler": "euler"}, fault="nan_late"),
    BrokenSetup("a VAE that does not match the checkpoint", "vae", {"vae": "OTHER_VAE", "sampler": "dpmpp_2m",
                                                                     "size": "64x64"}, model="sd1"),
    BrokenSetup("clip skip beyond the text encoder's layers (12 of 3)", "clip_skip",
                {"clip_skip": 12, "sampler": "dpmpp_2m", "size": "64x64"}, model="sd1"),
)


def _sd1(work: Path) -> tuple[Path, Path]:
    """A tiny random SD1 checkpoint and a second, unrelated VAE file (built once per folder)."""
    from iga.models import testing

    single, vae = work / "tiny" / "sd1.safetensors", work / "tiny" / "other-vae.safetensors"
    if not single.exists():
        testing.save_family(work / "tiny", ["sd1"], seed=3)
    if not vae.exists():
        testing.save_vae(testing.tiny_vae(seed=2), vae)
    return single, vae


def _nan_late(model: Any) -> None:
    """Make the model's UNet return NaN for timesteps below NAN_FROM_T (an injected fault, in memory only)."""
    backend = model.backend()
    healthy = backend.raw_model

    def faulty(x, t, cond):
        out = healthy(x, t, cond)
        return out * float("nan") if float(t.max()) < NAN_FROM_T else out

    backend.raw_model = faulty


def run_setup(setup: BrokenSetup, work: Path) -> dict[str, Any]:
    """Diagnose one setup; the row says what the doctor named first and whether that is the injected cause."""
    from iga.generate import Model
    from iga.paths import default_model_path

    from .doctor import run_doctor

    fields = dict(setup.fields)
    path = default_model_path()
    if setup.model == "sd1":
        path, other_vae = _sd1(work)
        if fields.get("vae") == "OTHER_VAE":
            fields["vae"] = str(other_vae)
    case = Case("plan", setup.name, str(path), Request(prompt=PROMPT if setup.model == "demo" else "a cat",
                                                         seed=3, **fields))
    model = Model(path)
    if setup.fault == "nan_late":
        _nan_late(model)
    slug = "".join(ch if ch.isalnum() else "-" for ch in setup.name.lower())[:40]
    diag = run_doctor(case, work / slug, model=model, sweeps=False)
    first = diag.causes[0] if diag.causes else None
    named = (first.field or "model") if first else ""
    # nothing named: show what putting the injected setting back measured, below the cause threshold
    below = next((f"{c.name}: {c.result}" for c in diag.checks if c.name.startswith(f"{setup.expect} ")), "")
    return {"setup": setup.name, "expected": setup.expect, "named": named,
            "diagnosis": first.cause if first else "nothing found", "evidence": first.evidence if first else below,
            "right": named == setup.expect, "causes": len(diag.causes)}


def run_matrix(work: Path, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Every setup of SETUPS, in order."""
    rows = []
    for n, setup in enumerate(SETUPS):
        rows.append(run_setup(setup, work))
        if progress:
            progress(n + 1, len(SETUPS))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README's table: setup -> diagnosis -> right or wrong."""
    lines = ["| injected fault | the doctor's first cause | evidence (measured) | right |", "|---|---|---|---|"]
    for r in rows:
        ev = r["evidence"].replace("|", "\\|")
        lines.append(f"| {r['setup']} | {r['diagnosis']} | {ev} | {'yes' if r['right'] else '**no**'} |")
    right = sum(r["right"] for r in rows)
    lines.append(f"\n{right} of {len(rows)} named first.")
    return "\n".join(lines)
