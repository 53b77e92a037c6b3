"""img2img and inpainting match diffusers' own pipelines on tiny random SD1 models (same seed, same sigmas).

Conventions pinned here (both documented in iga.stages and iga.guard.img2img):
- iga encodes the init image with the VAE posterior's mean; diffusers samples it with the generator. The tests hand
  diffusers iga's init latent directly (a 4-channel "image" is taken as latents), so both start from the same one.
- the diffusers steps/strength rule is iga's default ("diffusers" convention): int(steps * strength) steps run.
- below strength 1 diffusers starts from the init latent noised to the first sigma, as iga always does.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import iga  # noqa: E402
from iga.models import clear_cache, testing  # noqa: E402
from iga.stages import pixels_tensor  # noqa: E402
from test_generate_support import PROMPT  # noqa: E402

SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")
STEPS, CFG, STRENGTH, SEED = 8, 7.0, 0.6, 4

pytestmark = pytest.mark.usefixtures("offline_audit")


def _euler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")


def _uint8(images) -> np.ndarray:
    return (images[0] * 255.0).round().astype(np.uint8)


def _init_image(path):
    from PIL import Image

    rng = np.random.default_rng(3)
    grad = np.linspace(0, 255, 64, dtype=np.float32)
    arr = np.stack([np.add.outer(grad, grad) / 2, np.tile(grad, (64, 1)), 255 - np.tile(grad, (64, 1)).T], -1)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr, "RGB").save(path)
    return path


def _mask(path):
    from PIL import Image

    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 8, 48, 40))  # on the 8-pixel latent grid, so nearest downsampling is exact
    m.save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("img2img")
    out = {"init": _init_image(root / "init.png"), "mask": _mask(root / "mask.png")}
    for name, inpaint in (("sd1", False), ("sd1_inpaint", True)):
        tiny = testing.build_tiny("sd1", seed=51, inpaint=inpaint)
        out[name] = testing.save_folder(tiny, root / name)
    yield out
    clear_cache()


def _plan(model, files, **fields):
    return model.plan(PROMPT, sampler="euler", schedule="karras", steps=STEPS, cfg=CFG, seed=SEED, size="64x64",
                      init_image=str(files["init"]), denoise=STRENGTH, **fields)


def _init_latent(model, files):
    from PIL import Image

    with torch.inference_mode():
        return model.backend().encode_image(pixels_tensor(Image.open(files["init"])))


def test_img2img_reproduces_the_diffusers_img2img_pipeline(files):
    from diffusers import StableDiffusionImg2ImgPipeline

    model = iga.load(files["sd1"])
    plan = _plan(model, files)
    assert plan.img2img.start == STEPS - int(STEPS * STRENGTH) and len(plan.sigmas) == int(STEPS * STRENGTH) + 1
    ours = model.generate(plan=plan)[0].pixels
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(files["sd1"]), local_files_only=True,
                                                          safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = _euler()
    with torch.inference_mode():
        theirs = _uint8(pipe(PROMPT, image=_init_latent(model, files), strength=STRENGTH, num_inference_steps=STEPS,
                             guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED),
                             output_type="np").images)
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert ours.std() > 5 and diff.max() <= 2, (diff.max(), diff.mean())


def _inpaint_pipeline(folder):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(folder), local_files_only=True, safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = _euler()
    return pipe


def _diffusers_inpaint(model, files, folder) -> np.ndarray:
    """diffusers' inpainting pipeline from iga's init latent and masked-image latent (the picture with the masked
    region blacked out, as diffusers makes it; only an inpainting UNet reads it)."""
    from PIL import Image

    init = np.asarray(Image.open(files["init"]).convert("RGB"), dtype=np.float32) / 255
    keep = (np.asarray(Image.open(files["mask"]), dtype=np.float32) / 255 < 0.5)[..., None]
    masked = torch.from_numpy(init * keep).permute(2, 0, 1)[None]
    with torch.inference_mode():
        masked_latent = model.backend().encode_image(masked)
        return _uint8(_inpaint_pipeline(folder)(
            PROMPT, image=_init_latent(model, files), mask_image=Image.open(files["mask"]),
            masked_image_latents=masked_latent, strength=STRENGTH, height=64, width=64, num_inference_steps=STEPS,
            guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images)


def test_masked_sampling_reproduces_the_diffusers_inpaint_pipeline_on_an_ordinary_checkpoint(files):
    model = iga.load(files["sd1"])
    plan = _plan(model, files, mask=str(files["mask"]), mask_blur=0)
    assert plan.img2img.inpaint_method == "blend"
    ours = model.generate(plan=plan)[0].pixels
    diff = np.abs(ours.astype(int) - _diffusers_inpaint(model, files, files["sd1"]).astype(int))
    assert diff.max() <= 2, (diff.max(), diff.mean())


def test_an_inpainting_checkpoint_reproduces_the_diffusers_inpaint_pipeline(files):
    model = iga.load(files["sd1_inpaint"])
    plan = _plan(model, files, mask=str(files["mask"]), mask_blur=0)
    assert model.source.identity.variant == "inpaint" and plan.img2img.inpaint_method == "model"
    ours = model.generate(plan=plan)[0].pixels
    diff = np.abs(ours.astype(int) - _diffusers_inpaint(model, files, files["sd1_inpaint"]).astype(int))
    assert diff.max() <= 2, (diff.max(), diff.mean())


def test_an_inpainting_checkpoint_without_a_mask_is_refused_before_it_runs(files):
    from iga.guard import GuardRefused

    model = iga.load(files["sd1_inpaint"])
    with pytest.raises(GuardRefused) as e:
        model.plan(PROMPT, seed=1, size="64x64")
    assert any(f.field == "mask" and f.severity == "hard" for f in e.value.findings)
