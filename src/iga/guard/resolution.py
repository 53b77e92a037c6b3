"""One resolution in progress: the findings collector every guard step writes to, the four settings a preset can
set, the limits no mode lifts, and the exception that carries a refusal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from iga.recipe.schema import Recipe

from .plan import Finding, Mode, OverrideRecord, Request

MAX_SEED = 2**64 - 1
MAX_BATCH = 64
# Hard caps whatever the mode: far beyond any real use (A1111 stops at 150 steps and 2048 px), low enough that a
# hostile plan (an image's stored plan is a request too) cannot make iga run for hours or allocate gigabytes.
MAX_PLAN_STEPS = 1000
MAX_PLAN_PIXELS = 4096 * 4096


class GuardRefused(Exception):
    """The guard refused the request; ``findings`` says why, field by field."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        refused = [f for f in findings if f.outcome == "refused"]
        lines = "\n".join(f"  - {f.field}: {f.reason}" + (f" ({f.suggestion})" if f.suggestion else "")
                          for f in refused)
        super().__init__(f"refused by the guard ({len(refused)} problem(s)):\n{lines}")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Resolver:
    """One resolution: collects findings and overrides as the fields are decided."""

    def __init__(self, recipe: Recipe, request: Request, mode: Mode, no_recipe: bool, time: str):
        self.recipe, self.req, self.mode, self.no_recipe, self.time = recipe, request, mode, no_recipe, time
        self.findings: list[Finding] = []
        self.overrides: list[OverrideRecord] = []
        self.soft_fields: set[str] = set()

    def refused(self) -> bool:
        return any(f.outcome == "refused" for f in self.findings)

    def info(self, field: str, reason: str, recipe_value: Any = None, requested: Any = None) -> None:
        self.findings.append(Finding(field=field, severity="info", outcome="applied", recipe_value=recipe_value,
                                     requested_value=requested, reason=reason))

    def hard(self, field: str, reason: str, recipe_value: Any = None, requested: Any = None,
             suggestion: str | None = None) -> None:
        self.findings.append(Finding(field=field, severity="hard", outcome="refused", recipe_value=recipe_value,
                                     requested_value=requested, reason=reason, suggestion=suggestion))

    def soft(self, field: str, override_key: str, reason: str, recipe_value: Any, requested: Any,
             suggestion: str | None = None) -> None:
        """A deviation the mode decides on; accepted ones become OverrideRecords."""
        self.soft_fields.add(override_key)
        if self.mode == "strict":
            outcome, reason = "refused", f"{reason} (strict mode refuses every deviation from the recipe)"
        elif self.mode == "permissive":
            outcome, reason = "warned", f"{reason}; accepted (permissive mode)"
        elif override_key in self.req.overrides:
            outcome, reason = "overridden", f"{reason}; accepted as an explicit override"
        else:
            outcome = "refused"
            how = (f"override it explicitly: name {override_key} as an override with a reason (CLI: --override "
                   f"{override_key} --reason '...')")
            suggestion = f"{suggestion}, or {how}" if suggestion else how
        self.findings.append(Finding(field=field, severity="soft", outcome=outcome, recipe_value=recipe_value,
                                     requested_value=requested, reason=reason, suggestion=suggestion))
        if outcome != "refused":
            self.overrides.append(OverrideRecord(field=field, recipe_value=recipe_value, requested_value=requested,
                                                 mode=self.mode, reason=self.req.reason or (
                                                     "permissive mode" if self.mode == "permissive" else None),
                                                 time=self.time))


@dataclass(frozen=True)
class Settings:
    """The four settings a preset can set, and where each came from ("request", "preset '...'" or "recipe")."""

    sampler: str
    schedule: str
    steps: Any  # an int once _check_steps has accepted it; anything the request sent until then
    cfg: Any
    source: dict[str, str]

    def requested(self, field: str) -> bool:
        return self.source[field] == "request"
