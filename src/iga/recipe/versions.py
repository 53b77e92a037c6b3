"""Recipe versions and the migration registry.

A recipe names its schema version in ``iga_version`` (semver). Same major, newer minor: loaded, and fields this
iga does not know are preserved on round trip. Newer major: refused. Older versions are migrated step by step
by the functions registered here; each migration is a pure function on plain dicts and has its own test.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from .schema import RECIPE_VERSION

Migration = Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]]


class RecipeVersionError(ValueError):
    """The recipe's schema version cannot be read by this iga."""


@dataclass(frozen=True)
class Version:
    """A parsed semantic version (major.minor.patch)."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: Any) -> Version:
    """Parse 'MAJOR.MINOR[.PATCH]'; raise RecipeVersionError with the expected form."""
    if not isinstance(text, str):
        raise RecipeVersionError(f"iga_version must be a string like \"1.0.0\", got {text!r}")
    parts = text.strip().split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise RecipeVersionError(f"iga_version {text!r} is not a version like \"1.0.0\"")
    nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    return Version(*nums)


CURRENT = parse_version(RECIPE_VERSION)

# Flat keys of the IGA proposal's "structural layers" listing (section 2.2), which we call version 0.1.
_FLAT_KEYS = {"steps_default", "steps_range", "cfg_range", "sigma_grid", "vae_id", "resolution_hints"}


def detect_version(data: dict[str, Any]) -> Version:
    """The schema version of a raw recipe dict (0.1 for the proposal's flat layout without iga_version)."""
    if "iga_version" in data:
        return parse_version(data["iga_version"])
    if _FLAT_KEYS & set(data) or isinstance(data.get("sampler"), str):
        return Version(0, 1, 0)
    raise RecipeVersionError(
        "the recipe has no \"iga_version\" field; add \"iga_version\": \"1.0.0\" (or run `iga schema` to see the format)"
    )


def _from_0_1(d: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """0.1 (flat proposal layout: sampler/scheduler strings, steps_range, cfg_range, ...) -> 1.0."""
    notes: list[str] = []
    out: dict[str, Any] = {k: v for k, v in d.items() if k not in _FLAT_KEYS | {
        "sampler", "scheduler", "cfg_default", "forbid_samplers", "forbid_schedules", "iga_version"}}
    out["iga_version"] = "1.0.0"
    sampler = d.get("sampler")
    out["sampler"] = {"name": sampler} if isinstance(sampler, str) else sampler
    sched = d.get("scheduler")
    out["scheduler"] = {"name": sched} if isinstance(sched, str) else (sched or {"name": "explicit"})
    if "sigma_grid" in d:
        out["scheduler"]["grid"] = d["sigma_grid"]
        if out["scheduler"].get("name") is None:
            out["scheduler"]["name"] = "explicit"
    if "steps_range" in d:
        lo, hi = d["steps_range"]
        default = d.get("steps_default", lo)
        out["steps"] = {"default": default, "min": lo, "max": hi}
    if "cfg_range" in d:
        lo, hi = d["cfg_range"]
        default = d.get("cfg_default")
        if default is None:
            default = round((lo + hi) / 2 * 2) / 2  # the middle of the range, to the nearest 0.5
            notes.append(f"cfg.default was not given in the 0.1 recipe; set to the middle of cfg_range: {default}")
        out["cfg"] = {"default": default, "min": lo, "max": hi}
    if "vae_id" in d:
        out["vae"] = {"id": d["vae_id"], "embedded": False}
    if "resolution_hints" in d:
        out["resolution"] = {"preferred": list(d["resolution_hints"])}
    if "forbid_samplers" in d or "forbid_schedules" in d:
        out["constraints"] = {"forbid_samplers": d.get("forbid_samplers", []),
                              "forbid_schedules": d.get("forbid_schedules", [])}
    notes.append("migrated from the flat 0.1 layout (IGA proposal section 2.2) to Recipe 1.0.0")
    return out, notes


def _from_1_0(d: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """1.0 -> 1.1: 1.1 only adds the optional `calibration` block, so the content is unchanged."""
    return {**d, "iga_version": "1.1.0"}, []


def _from_1_1(d: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """1.1 -> 1.2: 1.2 only adds the optional `hashes.header_sha256`; a 1.1 file verifies what it covers."""
    return {**d, "iga_version": "1.2.0"}, []


def _from_1_2(d: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """1.2 -> 1.3: 1.3 only adds flow models' optional `dynamic_shift` and `guidance`; content is unchanged."""
    return {**d, "iga_version": "1.3.0"}, []


def _from_1_3(d: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """1.3 -> 1.4: 1.4 only adds the optional `control` adapters and `refiner`; content is unchanged."""
    return {**d, "iga_version": "1.4.0"}, []


# from (major, minor) -> migration producing the next version
MIGRATIONS: dict[tuple[int, int], Migration] = {(0, 1): _from_0_1, (1, 0): _from_1_0, (1, 1): _from_1_1,
                                                (1, 2): _from_1_2, (1, 3): _from_1_3}


def migrate(data: dict[str, Any]) -> tuple[dict[str, Any], Version, list[str]]:
    """Bring a raw recipe dict to the current major version; return (data, original version, notes)."""
    original = detect_version(data)
    if original.major > CURRENT.major:
        raise RecipeVersionError(
            f"this recipe uses schema {original}, a newer major version than this iga reads ({CURRENT}); "
            "upgrade iga (pip install -U iga-diffusion) to use it"
        )
    d, notes, v = copy.deepcopy(data), [], original
    while (v.major, v.minor) < (CURRENT.major, CURRENT.minor):
        step = MIGRATIONS.get((v.major, v.minor))
        if step is None:
            raise RecipeVersionError(f"no migration from recipe schema {v} to {CURRENT}; re-author it as {CURRENT}")
        d, step_notes = step(d)
        notes += step_notes
        v = detect_version(d)
    return d, original, notes
