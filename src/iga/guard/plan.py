"""Request (what the user asked for), Plan (the effective settings of one generation), Finding, OverrideRecord.

A Plan is plain, versioned data: it is what provenance stores in every image and what replay reads back,
so it round-trips exactly through JSON (``Plan.model_validate_json(plan.model_dump_json()) == plan``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iga.models.stable_diffusion import DEFAULT_AESTHETIC_SCORE, DEFAULT_NEGATIVE_AESTHETIC_SCORE

PLAN_SCHEMA = "iga.plan/1"
Mode = Literal["strict", "guarded", "permissive"]
Severity = Literal["hard", "soft", "info"]
Outcome = Literal["refused", "overridden", "warned", "applied"]
OVERRIDABLE = ("sampler", "schedule", "steps", "cfg", "vae", "clip_skip", "size", "guidance", "shift", "lora",
               "control", "hires", "refiner")
DenoiseSteps = Literal["diffusers", "a1111", "comfyui"]
Conventions = Literal["k-diffusion", "comfyui"]
InpaintArea = Literal["whole", "only_masked"]


class LoraRequest(BaseModel):
    """One LoRA asked for: a file (or a store id) and its weight."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a LoRA .safetensors file, or its id in the model store")
    weight: float = 1.0


class ControlRequest(BaseModel):
    """One control adapter asked for (ControlNet): the adapter, its conditioning image, strength and window."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a ControlNet file or folder, or its id in the model store")
    image: str = Field(description="the conditioning image (already preprocessed: edges, depth, pose, ...)")
    strength: float | None = None
    start: float = Field(0.0, description="fraction of the steps where the adapter starts acting")
    end: float = Field(1.0, description="fraction of the steps where it stops")


class Request(BaseModel):
    """What the user asked for: every field optional; a preset name allowed; overrides named explicitly."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None
    sampler: str | None = Field(None, description="any spelling; 'DPM++ 2M Karras' also sets the schedule")
    schedule: str | None = None
    steps: int | None = None
    cfg: float | None = None
    guidance: float | None = Field(None, description="distilled guidance (guidance-distilled flow models, e.g. Flux "
                                   "dev); not CFG")
    shift: float | None = Field(None, description="advanced: the flow timestep shift (SD3/Flux; default: the "
                                "recipe's, or its dynamic rule at this size)")
    cfg_variant: str | None = None
    cfg_rescale: float | None = None
    eta: float | None = None
    seed: int | None = None
    seeds: list[int] | None = None
    size: str | None = Field(None, description="WIDTHxHEIGHT")
    vae: str | None = Field(None, description="a VAE id or a path to a VAE file")
    clip_skip: int | None = None
    prediction_type: str | None = Field(None, description="advanced: treat the model as this prediction type")
    sigmas: list[float] | None = Field(None, description="advanced: an explicit sigma list ending in 0")
    conventions: Conventions | None = Field(None, description="advanced: whose sampling conventions to follow: "
                                            "k-diffusion (A1111, diffusers Euler; default) or comfyui (timesteps "
                                            "rounded to a training step, first noise x sqrt(1 + sigma^2))")
    prompt: str = ""
    negative_prompt: str = ""
    batch: int = 1
    init_image: str | None = Field(None, description="img2img: the image to start from (a file path)")
    denoise: float | None = Field(None, description="img2img/inpaint: how much of the sigma grid to run, 0..1")
    denoise_steps: DenoiseSteps | None = Field(None, description="how steps and denoise choose the sigmas: diffusers "
                                               "(default), a1111 or comfyui")
    mask: str | None = Field(None, description="inpaint: a mask image (white = repaint) or an image with alpha")
    mask_blur: int | None = Field(None, description="inpaint: Gaussian blur radius of the mask in pixels (A1111: 4)")
    inpaint_area: InpaintArea | None = Field(None, description="inpaint: whole picture, or only the masked region "
                                             "cropped with padding, rendered at full size and pasted back")
    inpaint_padding: int | None = Field(None, description="inpaint only_masked: pixels around the mask (A1111: 32)")
    hires: float | None = Field(None, description="hires fix: upscale factor of the second pass")
    hires_steps: int | None = Field(None, description="hires fix: second-pass steps (default: the first pass's)")
    hires_denoise: float | None = Field(None, description="hires fix: second-pass denoise (default 0.7)")
    hires_upscaler: str | None = Field(None, description="hires fix: latent, latent-nearest, lanczos, ... ")
    loras: list[LoraRequest] = Field(default_factory=list)
    controls: list[ControlRequest] = Field(default_factory=list)
    refiner: str | None = Field(None, description="SDXL refiner: a model file/folder or store id; 'none': without "
                                "the recipe's refiner")
    refiner_switch: float | None = Field(None, description="SDXL refiner: fraction of the steps the base model runs")
    overrides: list[str] = Field(default_factory=list, description=f"fields to override: {', '.join(OVERRIDABLE)}")
    reason: str | None = None


class Finding(BaseModel):
    """One verdict of the guard on one field."""

    field: str
    severity: Severity
    outcome: Outcome
    recipe_value: Any = None
    requested_value: Any = None
    reason: str
    suggestion: str | None = None


class OverrideRecord(BaseModel):
    """An accepted deviation from the recipe: what, from what to what, under which mode, why, and when."""

    field: str
    recipe_value: Any = None
    requested_value: Any = None
    mode: Mode
    reason: str | None = None
    time: str  # UTC, ISO 8601


class ModelIdentity(BaseModel):
    """Which checkpoint a plan is for, and how to recognise it again."""

    name: str
    path: str | None = Field(None, description="the model's local path: recorded only when the user opts in "
                             "(IGA_RECORD_MODEL_PATH=1), so shared images do not reveal local folders")
    architecture: str = "unknown"
    variant: str | None = Field(None, description="within a family: Flux dev/schnell, SD3 3/3.5")
    weights_sha256: str | None = None
    weights_files: list[str] | None = Field(None, description="a folder's .safetensors files its weights_sha256 "
                                            "covers (relative paths)")
    file_sha256: str | None = None
    autov2: str | None = None
    recipe_source: Literal["embedded", "sidecar", "none", "given"] = "none"
    recipe_sha256: str | None = None


class VaeIdentity(BaseModel):
    """The VAE a plan uses: the model's own or a separate file."""

    id: str | None = None
    path: str | None = None
    source: Literal["checkpoint", "file", "none"] = "checkpoint"
    file_sha256: str | None = None
    autov2: str | None = None


class InputImage(BaseModel):
    """An image a plan reads (init image, mask, control image): named by the SHA-256 of its file, so replay finds
    and verifies it; its path only with IGA_RECORD_MODEL_PATH=1."""

    path: str | None = None
    sha256: str
    width: int
    height: int


class Img2Img(BaseModel):
    """Start from an image part-way down the sigma grid (img2img), optionally repainting only a mask (inpaint)."""

    init_image: InputImage
    denoise: float = Field(description="fraction of the grid run (A1111 'Denoising strength', diffusers 'strength')")
    denoise_steps: DenoiseSteps = "diffusers"
    grid_steps: int = Field(description="steps of the full grid the sigmas are cut from")
    start: int = Field(description="index in the full grid of the first sigma run")
    mask: InputImage | None = None
    mask_blur: int = 4
    inpaint_area: InpaintArea = "whole"
    inpaint_padding: int = 32
    inpaint_method: Literal["model", "blend"] | None = Field(
        None, description="model: a 9-channel inpainting UNet; blend: masked sampling on an ordinary checkpoint")


class Hires(BaseModel):
    """Hires fix: after the first pass, upscale and run a second, partial pass at the larger size."""

    scale: float
    width: int
    height: int
    upscaler: str
    steps: int
    denoise: float
    grid_steps: int
    start: int
    sigmas: list[float]
    nfe: int | None = None


class LoraUse(BaseModel):
    """A LoRA applied to the model, with what its own metadata says it was trained for."""

    name: str
    path: str | None = None
    file_sha256: str
    addnet_sha256: str | None = Field(None, description="SHA-256 of the tensor data (A1111's 'Lora hashes' use its "
                                      "first 12 hex)")
    weight: float
    architecture: str | None = None
    prediction_type: str | None = None
    format: str | None = Field(None, description="kohya | diffusers | peft (the key layout)")
    weight_range: list[float] | None = Field(None, description="[min, max] weight the LoRA's own recipe allows")
    narrowed: list[str] = Field(default_factory=list, description="what the LoRA's recipe changed in the recipe")
    effective: dict[str, Any] | None = Field(None, description="the recipe's cfg and steps ranges and constraints "
                                             "in force after this LoRA's narrowing (only when it narrowed any)")


class ControlUse(BaseModel):
    """A control adapter (ControlNet) with its conditioning image, strength and active window."""

    name: str
    path: str | None = None
    file_sha256: str
    image: InputImage
    strength: float
    start: float = 0.0
    end: float = 1.0


class Refiner(BaseModel):
    """The SDXL refiner stage: the base model runs the sigmas up to the switch, the refiner the rest."""

    model: "ModelIdentity"
    switch: float = Field(description="fraction of the steps the base model runs (A1111 'Refiner switch at')")
    switch_index: int = Field(description="index in the plan's sigmas where the refiner takes over")
    cfg: float | None = Field(None, description="the refiner's CFG (None: the plan's)")
    aesthetic_score: float = DEFAULT_AESTHETIC_SCORE
    negative_aesthetic_score: float = DEFAULT_NEGATIVE_AESTHETIC_SCORE


class Plan(BaseModel):
    """Every effective setting of one generation; serialisable, versioned, replayable."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_: Literal["iga.plan/1"] = Field(PLAN_SCHEMA, alias="schema")
    iga_version: str
    created: str
    mode: Mode
    preset: str | None = None
    model: ModelIdentity
    prompt: str = ""
    negative_prompt: str = ""
    seed: int
    seeds: list[int]
    batch_index: int | None = None
    prediction_type: str
    training_schedule: dict[str, Any] | None = None
    sampler: str
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    eta: float | None = None
    schedule: str
    schedule_params: dict[str, Any] = Field(default_factory=dict)
    steps: int
    sigmas: list[float]
    noise_scaling: Literal["sigma", "vp_max"] = Field(
        "sigma", description="initial latent: noise * sigma_0 (k-diffusion, A1111, diffusers Euler) or noise * "
        "sqrt(sigma_0^2 + 1) (VP models: ComfyUI at full denoise, diffusers DPMSolver/DDIM)")
    nfe: int | None = None
    cfg: float
    guidance: float | None = Field(None, description="distilled guidance fed to the model as an input (Flux dev's "
                                   "guidance embedding; Forge's 'Distilled CFG Scale'); None for models without one")
    cfg_variant: str = "cfg"
    cfg_rescale: float = 0.0
    width: int
    height: int
    clip_skip: int = 1
    vae: VaeIdentity | None = None
    img2img: Img2Img | None = None
    hires: Hires | None = None
    loras: list[LoraUse] = Field(default_factory=list)
    controls: list[ControlUse] = Field(default_factory=list)
    refiner: Refiner | None = None
    findings: list[Finding] = Field(default_factory=list)
    overrides: list[OverrideRecord] = Field(default_factory=list)
    runtime: dict[str, Any] | None = Field(None, description="what computed the pixels (torch version, threads, "
                                           "device, dtype): float results can change with them, so replay reuses them")
    pixels_sha256: str | None = Field(None, description="SHA-256 of the image's uint8 RGB pixels before encoding "
                                      "(lets replay prove identity even for JPEG/WebP)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (with the "schema" key)."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        """Compact JSON text."""
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        """Validate a plan read back from an image or a file."""
        return cls.model_validate(data)

    def as_request(self) -> Request:
        """The request that asks for exactly this plan's settings (its sigma list only when it was explicit): how a
        stored plan goes back through the guard."""
        vae = None
        if self.vae is not None and self.vae.source == "file":
            from iga.store.used import vae_file

            vae = vae_file(self)  # the recorded path, or the file with the recorded hash (ValueError if neither)
        elif self.vae is not None:
            vae = self.vae.id
        ts = self.training_schedule or {}
        shift = ts.get("shift") if ts.get("kind") == "flow" else None
        from iga.store.used import lora_files

        loras = [LoraRequest(path=path, weight=weight) for _sha, path, weight in lora_files(self)]
        conventions = "comfyui" if ts.get("quantize") or self.noise_scaling == "vp_max" else None
        return Request(**self._stage_fields(), loras=loras, sampler=self.sampler, schedule=self.schedule,
                       steps=self.steps, cfg=self.cfg, guidance=self.guidance, shift=shift, conventions=conventions,
                       cfg_variant=self.cfg_variant, cfg_rescale=self.cfg_rescale, eta=self.eta, seed=self.seed,
                       size=f"{self.width}x{self.height}", vae=vae, clip_skip=self.clip_skip,
                       prediction_type=self.prediction_type, prompt=self.prompt, negative_prompt=self.negative_prompt,
                       sigmas=list(self.sigmas) if self.schedule == "explicit" else None)

    def _stage_fields(self) -> dict[str, Any]:
        """The img2img, inpaint, hires-fix and ControlNet request fields that ask for this plan's passes again (its
        input images and ControlNets found again by hash: ValueError when they are not here)."""
        from iga.guard.images import stored_input_path

        out: dict[str, Any] = {}
        spec = self.img2img
        if spec is not None:
            out.update(init_image=stored_input_path(spec.init_image, "init image"), denoise=spec.denoise,
                       denoise_steps=spec.denoise_steps)
            if spec.mask is not None:
                out.update(mask=stored_input_path(spec.mask, "mask"), mask_blur=spec.mask_blur,
                           inpaint_area=spec.inpaint_area, inpaint_padding=spec.inpaint_padding)
        if self.hires is not None:
            h = self.hires
            out.update(hires=h.scale, hires_steps=h.steps, hires_denoise=h.denoise, hires_upscaler=h.upscaler)
        if self.controls:
            from iga.store.used import control_files

            out["controls"] = [ControlRequest(path=path, image=stored_input_path(c.image, "control image"),
                                              strength=c.strength, start=c.start, end=c.end)
                               for (_sha, path), c in zip(control_files(self), self.controls)]
        out.update(self._refiner_fields())
        return out

    def _refiner_fields(self) -> dict[str, Any]:
        """The refiner found again by its weights hash (ValueError when it is not here); a plan without one asks for
        none, so that a recipe's refiner is not added on replay."""
        if self.refiner is None:
            return {"refiner": "none"}
        from iga.store.used import refiner_model

        return {"refiner": refiner_model(self), "refiner_switch": self.refiner.switch}

    def for_image(self, k: int) -> "Plan":
        """The plan of image k of the batch alone (its own seed), as stored in that image."""
        return self.model_copy(update={"seed": self.seeds[k], "seeds": [self.seeds[k]], "batch_index": k})
