"""Recipe v1: what a checkpoint promises about how it must be sampled (pydantic v2 models).

Structure is checked by pydantic; names and cross-field rules by ``iga.recipe.validate`` so that every
problem is reported at once, with its field path, the bad value and the fix.
Every model allows extra fields: fields added by a newer minor version survive a load/save round trip.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from iga.catalog import CFG_VARIANTS

RECIPE_VERSION = "1.4.0"  # 1.1 adds the optional `calibration` block; 1.2 `hashes.header_sha256`; 1.3 flow
# models' `training_schedule.dynamic_shift` and the distilled `guidance` block; 1.4 `control` and `refiner`

PREDICTION_ALIASES = {
    "eps": "eps", "epsilon": "eps", "noise": "eps",
    "v": "v", "v_prediction": "v", "v-prediction": "v", "vpred": "v", "v_pred": "v",
    "x0": "x0", "sample": "x0",
    "flow": "flow", "flow_prediction": "flow", "rectified_flow": "flow",
}

PredictionType = Literal["eps", "v", "x0", "flow"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=False, populate_by_name=True)


class DynamicShift(_Model):
    """Flux-style resolution-dependent shift: mu grows linearly with the image's token count L from base_shift
    (at base_seq_len) to max_shift (at max_seq_len), and the flow shift is exp(mu)."""

    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = Field(256, ge=1)
    max_seq_len: int = Field(4096, ge=2)
    pixels_per_token: int = Field(16, ge=1, description="image pixels per token side (VAE factor x patch size: "
                                  "16 for Flux), so L = (width / p) * (height / p)")


class TrainingSchedule(_Model):
    """The noise schedule the model was trained with (discrete VP betas, or rectified flow)."""

    kind: Literal["scaled_linear", "linear", "squaredcos_cap_v2", "flow"] = "scaled_linear"
    beta_start: float = Field(0.00085, gt=0, lt=1)
    beta_end: float = Field(0.012, gt=0, lt=1)
    num_train_timesteps: int = Field(1000, ge=2, le=100_000)
    zero_terminal_snr: bool = False
    shift: float | None = Field(None, gt=0, description="flow models: SD3-style timestep shift")
    dynamic_shift: DynamicShift | None = Field(None, description="flow models: a shift that depends on the "
                                               "resolution (Flux); replaces `shift`")
    quantize: bool | None = Field(None, description="round timesteps to integers when sampling (diffusers' "
                                  "DPM-Solver does this with Karras sigmas)")


class SamplerSpec(_Model):
    """The sampler the model was made for."""

    name: str = Field(description="any spelling iga knows; stored as the canonical (ComfyUI) name")
    mode: Literal["ode", "ancestral", "sde"] | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="sampler options, e.g. eta, s_noise")


class SchedulerSpec(_Model):
    """The sigma schedule: a named spacing, or an explicit grid, and which step counts it allows."""

    name: str
    grid: list[float] | None = Field(None, description="explicit descending sigma grid ending in 0")
    canonical_steps: int | None = Field(None, ge=1, le=10_000)
    subsample: list[int] | None = Field(None, description="other allowed step counts (monotone subsampling)")
    params: dict[str, Any] = Field(default_factory=dict, description="schedule options, e.g. rho")


class CfgSpec(_Model):
    """Classifier-free guidance: default and range, the variant and guidance rescale."""

    default: float
    min: float
    max: float
    variant: Literal[CFG_VARIANTS] = "cfg"  # type: ignore[valid-type]
    rescale: float = Field(0.0, ge=0.0, le=1.0)


class GuidanceSpec(_Model):
    """Distilled guidance: a strength the model takes as an input (Flux dev's guidance embedding; Forge's
    'Distilled CFG Scale', ComfyUI's FluxGuidance), not classifier-free guidance, which such models run at 1."""

    default: float
    min: float
    max: float


class StepsSpec(_Model):
    """Sampling steps: default and range."""

    default: int
    min: int
    max: int


class VaeSpec(_Model):
    """The VAE the model was made for (None for pixel-space models)."""

    id: str | None = None
    embedded: bool = False
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ResolutionSpec(_Model):
    """Preferred sizes ("WxH") and the largest one the model handles."""

    preferred: list[str] = Field(default_factory=list)
    max: str | None = None


class Constraints(_Model):
    """Samplers and schedules that must never be used with this model (hard), or the only ones allowed."""

    forbid_samplers: list[str] = Field(default_factory=list)
    forbid_schedules: list[str] = Field(default_factory=list)
    allow_samplers: list[str] | None = None
    allow_schedules: list[str] | None = None


class Preset(_Model):
    """A named, validated combination of settings ("Quality", "Fast")."""

    name: str = Field(min_length=1, max_length=64)
    steps: int | None = None
    cfg: float | None = None
    guidance: float | None = None
    sampler: str | None = None
    schedule: str | None = None
    description: str | None = None


class StrengthRange(_Model):
    """A strength the publisher validated: default and range."""

    default: float
    min: float
    max: float


class ControlAdapter(_Model):
    """A control adapter (ControlNet) the model was trained or validated with (added in schema 1.4)."""

    id: str = Field(min_length=1, description="the adapter's id in the model store (or its file stem)")
    kind: str | None = Field(None, description="what its conditioning image is: canny, depth, openpose, ...")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the adapter file")
    strength: StrengthRange = Field(default_factory=lambda: StrengthRange(default=1.0, min=0.0, max=2.0))


class RefinerSpec(_Model):
    """A second model that finishes the last part of the sigma grid (SDXL's refiner; added in schema 1.4)."""

    model_id: str = Field(min_length=1, description="the refiner's id in the model store")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the refiner's weights")
    switch: float = Field(0.8, gt=0.0, lt=1.0, description="fraction of the steps the base model runs")


class Hashes(_Model):
    """Integrity: SHA-256 of the tensor data, of the recipe's canonical JSON (without this field) and, from 1.2, of
    the tensor index and the other metadata (``iga.checkpoint.hashing.header_sha256``)."""

    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    metadata_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    header_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class Calibration(_Model):
    """Where a recipe came from: the `iga calibrate` sweep that derived it (added in schema 1.1)."""

    date: str = Field(description="UTC, ISO 8601")
    iga_version: str = Field(description="the iga that ran the calibration")
    budget: dict[str, Any] = Field(default_factory=dict, description="prompts, seeds, settings tried per stage")
    thresholds: dict[str, Any] = Field(default_factory=dict, description="the documented rules that decided")
    figures: dict[str, Any] = Field(default_factory=dict, description="the measured figures of the chosen settings")
    evidence: dict[str, str] = Field(default_factory=dict, description="why each forbidden sampler or schedule is")


class Recipe(_Model):
    """Recipe v1: the native sampling recipe of one checkpoint."""

    iga_version: str = RECIPE_VERSION
    model_id: str | None = None
    architecture: str | None = Field(None, description="sd1 | sd2 | sdxl | sdxl_refiner | demo | ...")
    prediction_type: PredictionType
    training_schedule: TrainingSchedule | None = None
    sampler: SamplerSpec
    scheduler: SchedulerSpec
    cfg: CfgSpec
    guidance: GuidanceSpec | None = Field(None, description="distilled guidance (guidance-distilled models only)")
    steps: StepsSpec
    vae: VaeSpec | None = None
    clip_skip: int | None = Field(None, ge=1, le=24)
    resolution: ResolutionSpec | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    presets: list[Preset] = Field(default_factory=list)
    default_preset: str | None = Field(None, description="preset used when a request names none")
    hashes: Hashes | None = None
    calibration: Calibration | None = None
    control: list[ControlAdapter] = Field(default_factory=list, description="control adapters validated with "
                                          "this model, each with its strength range (1.4)")
    refiner: RefinerSpec | None = Field(None, description="the refiner this model hands over to (1.4)")

    @field_validator("prediction_type", mode="before")
    @classmethod
    def _prediction_alias(cls, v: Any) -> Any:
        if isinstance(v, str):
            return PREDICTION_ALIASES.get(v.strip().lower(), v)
        return v

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON data (None fields dropped, unknown fields kept)."""
        return self.model_dump(mode="json", exclude_none=True)

    def preset(self, name: str) -> Preset:
        """Return the preset called ``name`` (case-insensitive) or raise KeyError listing the presets."""
        for p in self.presets:
            if p.name.lower() == name.strip().lower():
                return p
        names = ", ".join(p.name for p in self.presets) or "none"
        raise KeyError(f"no preset {name!r} in this recipe (presets: {names})")

    def allowed_steps(self) -> list[int] | None:
        """The allowed step counts when the schedule restricts them (canonical + subsample), else None."""
        sub = self.scheduler.subsample
        if not sub:
            return None
        allowed = set(sub)
        if self.scheduler.canonical_steps:
            allowed.add(self.scheduler.canonical_steps)
        return sorted(allowed)


def parse_size(text: str) -> tuple[int, int]:
    """Parse 'WxH' into (width, height); raise ValueError with the expected form."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a size; write it as WIDTHxHEIGHT, e.g. 1024x1024")
    return int(parts[0]), int(parts[1])
