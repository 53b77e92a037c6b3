"""SD3 and Flux backends from diffusers folders: iga's engine reproduces diffusers' own pipelines.

Tiny random SD3, Flux-dev (guidance-distilled) and Flux-schnell (no guidance input) models are saved as diffusers
folders; diffusers' StableDiffusion3Pipeline / FluxPipeline and iga (load_backend + an Euler plan from
``iga.resolve``) generate 64x64 in 4 steps from the same seed. Sigmas: SD3's static shift is iga's "normal"
schedule; Flux's ``linspace(1, 1/N, N)`` shifted by exp(mu) (mu from the image token count) is iga's "simple".
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import iga  # noqa: E402
from iga.guard import Request  # noqa: E402
from iga.models import clear_cache, testing  # noqa: E402
from iga.models.base import Backend  # noqa: E402
from iga.models.loader import load_backend  # noqa: E402
from iga.recipe import parse_recipe_dict  # noqa: E402
from test_generate_support import PROMPT, one_thread  # noqa: E402,F401

STEPS, SIZE, SEEDS = 4, 64, [0, 1]
NEGATIVE = "blurry, low quality"
VARIANTS = {"sd3": 70, "flux_dev": 71, "flux_schnell": 72}  # variant -> weight seed

pytestmark = pytest.mark.usefixtures("offline_audit", "one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, module_audit):
    """{variant: folder} of the three tiny models."""
    root = tmp_path_factory.mktemp("flow")
    yield {v: testing.save_folder(testing.build_tiny(v, seed=s), root / v) for v, s in VARIANTS.items()}
    clear_cache()


@pytest.fixture(scope="module")
def pipes(folders):
    """{variant: the diffusers pipeline} on the same folders."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    out = {}
    for v, folder in folders.items():
        cls = StableDiffusion3Pipeline if v == "sd3" else FluxPipeline
        pipe = cls.from_pretrained(str(folder), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        out[v] = pipe
    return out


def _plan(backend, *, cfg: float, negative: str, seed: int, guidance: float | None = None):
    arch = backend.architecture
    recipe, _ = parse_recipe_dict({
        "iga_version": "1.3.0", "model_id": f"tiny-{arch}", "architecture": arch, "prediction_type": "flow",
        "training_schedule": backend.training_schedule,  # the folder's scheduler, in recipe terms
        "sampler": {"name": "euler"}, "scheduler": {"name": "normal" if arch == "sd3" else "time_uniform"},
        "steps": {"default": STEPS, "min": 1, "max": 50}, "cfg": {"default": cfg, "min": 0.0, "max": 20.0},
    })
    req = Request(prompt=PROMPT, negative_prompt=negative, seed=seed, size=f"{SIZE}x{SIZE}", steps=STEPS, cfg=cfg)
    plan, _ = iga.resolve(recipe, req, "permissive")
    return plan.model_copy(update={"guidance": guidance}) if guidance is not None else plan


def _diffusers_sigmas(pipe, variant: str) -> np.ndarray:
    """The sigmas the pipeline's scheduler uses for this size (Flux: its dynamic shift from the token count)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    sched = pipe.scheduler
    if variant == "sd3":
        sched.set_timesteps(STEPS)
    else:
        c = sched.config
        tokens = (SIZE // 16) ** 2
        mu = calculate_shift(tokens, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=mu)
    return sched.sigmas.numpy()


def _diffusers_image(pipe, variant: str, seed: int, case: str) -> np.ndarray:
    kw: dict = {"guidance_scale": 3.5}
    if variant == "sd3":
        kw = {"guidance_scale": 4.0, "negative_prompt": NEGATIVE}
    elif case == "true_cfg":
        kw.update(true_cfg_scale=2.0, negative_prompt=NEGATIVE)
    with torch.inference_mode():
        out = pipe(PROMPT, num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type="np",
                   generator=torch.Generator("cpu").manual_seed(seed), **kw).images[0]
    return (out * 255.0).round().astype(np.uint8)


CASES = [("sd3", "cfg"), ("flux_dev", "guidance"), ("flux_schnell", "plain"), ("flux_dev", "true_cfg")]


@pytest.mark.parametrize(("variant", "case"), CASES)
def test_iga_reproduces_the_diffusers_pipeline(folders, pipes, variant, case):
    from iga.generate import render

    backend = load_backend(folders[variant])
    for seed in SEEDS:
        if variant == "sd3":  # true CFG with a negative prompt
            plan = _plan(backend, cfg=4.0, negative=NEGATIVE, seed=seed)
        elif variant == "flux_schnell":  # no CFG, no guidance input
            plan = _plan(backend, cfg=1.0, negative="", seed=seed)
        else:  # dev: distilled guidance 3.5; "true_cfg" adds real CFG 2 with a negative prompt (uncond pass)
            cfg, neg = (2.0, NEGATIVE) if case == "true_cfg" else (1.0, "")
            plan = _plan(backend, cfg=cfg, negative=neg, seed=seed, guidance=3.5)
        theirs_sigmas = _diffusers_sigmas(pipes[variant], variant)
        assert np.allclose(plan.sigmas, theirs_sigmas, rtol=0, atol=1e-6), (plan.sigmas, theirs_sigmas)
        [ours], nfe = render(plan, backend)
        theirs = _diffusers_image(pipes[variant], variant, seed, case)
        assert ours.std() > 5
        d = np.abs(ours.astype(int) - theirs.astype(int))
        # measured: sd3 0/255, flux 1/255 on a few pixels (float rounding at a .5 boundary)
        assert d.max() <= 2 and d.mean() < 0.01, (variant, case, seed, int(d.max()), float(d.mean()))
        assert nfe == STEPS


def test_folders_load_through_iga_and_report_their_architecture(folders):
    from iga.checkpoint import detect_architecture
    from iga.guard.source import describe_model, folder_markers
    from iga.models.flow_backends import FluxBackend, SD3Backend

    expected = {"sd3": (SD3Backend, "sd3"), "flux_dev": (FluxBackend, "flux"), "flux_schnell": (FluxBackend, "flux")}
    for variant, folder in folders.items():
        cls, arch = expected[variant]
        model = iga.load(folder)
        backend = model.backend()
        assert isinstance(backend, cls) and isinstance(backend, Backend)
        assert (backend.architecture, backend.prediction_type, backend.vae_scale_factor) == (arch, "flow", 8)
        assert backend.latent_shape(64, 48) == (16, 6, 8)
        assert backend.identity["format"] == "diffusers_folder"
        assert model.source.identity.architecture == arch
        assert describe_model(folder).detected_prediction == "flow"
        assert folder_markers(folder) == (arch, "flow")
        info = detect_architecture(folder)
        assert (info.architecture, info.prediction_type) == (arch, "flow")
        assert backend is load_backend(folder)  # cached
        if arch == "flux":
            assert backend.guidance_embeds is (variant == "flux_dev")
            with pytest.raises(ValueError, match="multiple of 16"):
                backend.latent_shape(72, 64)


def test_iga_generate_through_model_matches_render(folders):
    """``Model.generate`` (the path the CLI takes) gives the same pixels as ``render`` on the backend."""
    from iga.generate import render

    model = iga.load(folders["flux_dev"])
    plan = _plan(model.backend(), cfg=1.0, negative="", seed=5, guidance=3.5)
    [img] = model.generate(plan=plan)
    assert np.array_equal(img.pixels, render(plan, model.backend())[0][0])


def test_flux_refuses_what_it_cannot_do(folders):
    dev, schnell = load_backend(folders["flux_dev"]), load_backend(folders["flux_schnell"])
    cond, _ = dev.encode_prompt([PROMPT], [""], width=64, height=64)
    x = torch.zeros(1, 16, 8, 8)
    with pytest.raises(ValueError, match="guidance"):
        dev.raw_model(x, torch.tensor([500.0]), cond)
    with pytest.raises(ValueError, match="clip_skip"):
        dev.encode_prompt([PROMPT], [""], clip_skip=2, width=64, height=64)
    s_cond, _ = schnell.encode_prompt([PROMPT], [""], width=64, height=64)
    assert schnell.raw_model(x, torch.tensor([500.0]), {**s_cond, "guidance": torch.tensor([3.5])}).shape == x.shape
    with pytest.raises(ValueError, match="multiple of 16"):
        schnell.latent_shape(60, 64)


def test_encodings_equal_diffusers(folders, pipes):
    """Prompt embeddings equal the pipelines' encode_prompt (SD3 clip_skip: iga k = diffusers k-1)."""
    sd3 = load_backend(folders["sd3"])
    for ours_skip, theirs_skip in ((1, None), (2, 1)):
        cond, uncond = sd3.encode_prompt([PROMPT], [NEGATIVE], clip_skip=ours_skip, width=64, height=64)
        pe, _, pooled, _ = pipes["sd3"].encode_prompt(PROMPT, None, None, do_classifier_free_guidance=False,
                                                      clip_skip=theirs_skip)
        # prompt and negative are encoded as one batch here, one by one there: equal up to float rounding
        torch.testing.assert_close(cond["encoder_hidden_states"], pe, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cond["pooled_projections"], pooled, rtol=1e-5, atol=1e-5)
        assert cond["encoder_hidden_states"].shape == (1, 77 + 256, 64)
    flux = load_backend(folders["flux_dev"])
    cond, _ = flux.encode_prompt([PROMPT], [""], width=64, height=64)
    pe, pooled, text_ids = pipes["flux_dev"].encode_prompt(PROMPT, None)
    torch.testing.assert_close(cond["encoder_hidden_states"], pe, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cond["pooled_projections"], pooled, rtol=1e-5, atol=1e-5)
    assert torch.equal(cond["txt_ids"][0], text_ids) and cond["img_ids"].shape == (1, 16, 3)


def test_vendored_t5_tokenizer_is_googles_vocabulary(folders):
    from iga.models.t5_tokenizer import load_t5_tokenizer

    tok = load_t5_tokenizer()
    assert len(tok) == 32100 and (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok("a red circle")["input_ids"] == [3, 9, 1131, 8196, 1]  # "▁" "a" "▁red" "▁circle" "</s>"
    saved = load_t5_tokenizer(folders["sd3"] / "tokenizer_3")
    for text in (PROMPT, "Ünïcödé — 123 <extra_id_0>", ""):
        assert saved(text)["input_ids"] == tok(text)["input_ids"]
