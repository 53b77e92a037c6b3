"""Learned metrics (CLIP score, Inception features / FID, LPIPS) on random weights of the published shapes.

Every network is written to tmp_path by the test itself; nothing is downloaded.
"""

from __future__ import annotations

import fractions
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from iga.evaluation import learned  # noqa: E402
from iga.evaluation.frechet import feature_stats  # noqa: E402
from iga.evaluation.learned import (  # noqa: E402
    FIDInceptionV3,
    LPIPSVGG16,
    MissingWeightsError,
    clip_score,
    fid,
    inception_features,
    lpips,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _images(seed: int, n: int = 3, h: int = 32, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _save(state: dict, path) -> None:
    safetensors_torch.save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """He-initialised convs so that features neither vanish nor explode through the 40-odd layers."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("conv.weight"):
                torch.nn.init.kaiming_normal_(t, nonlinearity="relu")
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bn.bias")):
                t.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("inception") / "inception_fid.safetensors"
    _save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    """He-initialised VGG16 (as for Inception: every layer then contributes) and the default non-negative heads."""
    torch.manual_seed(1)
    net = LPIPSVGG16()
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.startswith("features.") and name.endswith("weight"):
                torch.nn.init.kaiming_normal_(t, nonlinearity="relu")
    path = tmp_path_factory.mktemp("lpips") / "lpips_vgg16.safetensors"
    _save(net.state_dict(), path)
    return path


def _lpips_reference(state: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """LPIPS written out functionally from Zhang et al. 2018 and the lpips package's published constants."""
    F = torch.nn.functional
    shift = torch.tensor([-0.030, -0.088, -0.188])[:, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[:, None, None]
    stages = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))  # conv indices up to relu1_2 ... relu5_3

    def features(x):
        x = (torch.from_numpy(x).permute(0, 3, 1, 2).double() / 127.5 - 1 - shift) / scale
        out = []
        for n, stage in enumerate(stages):
            x = F.max_pool2d(x, 2) if n else x
            for i in stage:
                w, bias = state[f"features.{i}.weight"].double(), state[f"features.{i}.bias"].double()
                x = F.relu(F.conv2d(x, w, bias, padding=1))
            out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
        return out

    layers = zip(features(a), features(b))
    return sum(
        F.conv2d((fa - fb) ** 2, state[f"lin{i}.model.1.weight"].double()).mean(dim=(1, 2, 3))
        for i, (fa, fb) in enumerate(layers)
    ).numpy()


def _tiny_clip(sign: float = 1.0):
    """A tiny CLIP whose image and text embeddings share a common direction (times ``sign`` for text).

    Random CLIP embeddings are nearly orthogonal, so half the scores would clip to 0 and prompts could not be
    told apart; a shared final-layer-norm bias and shared projection make the cosines clearly positive.
    """
    from transformers import CLIPConfig, CLIPModel

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=49408, max_position_embeddings=77),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(2)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        common = torch.ones(32)
        for norm in (model.vision_model.post_layernorm, model.text_model.final_layer_norm):
            norm.weight.mul_(0.3)
            norm.bias.copy_(common)
        model.text_projection.weight.copy_(sign * model.visual_projection.weight)
    return model


def _write_clip(model, folder):
    from iga.models.tokenizer import clip_tokenizer

    model.save_pretrained(str(folder))
    clip_tokenizer().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return _write_clip(_tiny_clip(), tmp_path_factory.mktemp("clip") / "tiny-clip")


def _fid_via_range(mu1, s1, mu2, s2):
    """Exact Frechet distance for covariances of rank <= 16, in O(d^2) instead of sqrtm's O(d^3).

    Tr sqrt(S1 S2) = Tr sqrt(A^1/2 B A^1/2) with A, B the covariances restricted to the range of S1.
    """
    q, _ = np.linalg.qr(s1 @ np.random.default_rng(0).standard_normal((s1.shape[0], 16)))
    a, b = q.T @ s1 @ q, q.T @ s2 @ q
    w, v = np.linalg.eigh(a)
    ra = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(ra @ b @ ra), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


# --------------------------------------------------------------------------------------------------- LPIPS


def test_lpips_of_an_image_with_itself_is_zero(lpips_file):
    x = _images(0)
    np.testing.assert_array_equal(lpips(x, x, lpips_file), np.zeros(3))


def test_lpips_is_symmetric_and_positive_for_different_images(lpips_file):
    a, b = _images(0), _images(1)
    d_ab, d_ba = lpips(a, b, lpips_file), lpips(b, a, lpips_file)
    assert d_ab.dtype == np.float64 and d_ab.shape == (3,)
    assert (d_ab > 0).all()
    np.testing.assert_allclose(d_ab, d_ba, rtol=1e-6)


def test_lpips_grows_with_the_size_of_a_perturbation(lpips_file):
    base = _images(0, n=1)
    noise = np.random.default_rng(5).integers(-1, 2, base.shape) * np.array([[[[4]]], [[[40]]]])
    near, far = (np.clip(base.astype(int) + n, 0, 255).astype(np.uint8) for n in noise)
    assert lpips(base, near, lpips_file)[0] < lpips(base, far, lpips_file)[0]


def test_lpips_matches_the_published_formula_written_out_functionally(lpips_file):
    state = safetensors_torch.load_file(str(lpips_file))
    a, b = _images(0, h=40, w=24), _images(1, h=40, w=24)
    np.testing.assert_allclose(lpips(a, b, lpips_file), _lpips_reference(state, a, b), rtol=1e-4)


def test_lpips_compares_unit_normalised_features_and_is_linear_in_the_heads(lpips_file, tmp_path):
    state = dict(safetensors_torch.load_file(str(lpips_file)))
    a, b = _images(0), _images(1)
    base = lpips(a, b, lpips_file)
    # relu5_3 = relu(conv 28): scaling that conv scales only the last features, which LPIPS normalises away
    scaled = dict(state, **{k: state[k] * 7.0 for k in ("features.28.weight", "features.28.bias")})
    _save(scaled, tmp_path / "scaled_trunk.safetensors")
    np.testing.assert_allclose(lpips(a, b, tmp_path / "scaled_trunk.safetensors"), base, rtol=1e-5)
    doubled = dict(state, **{f"lin{i}.model.1.weight": state[f"lin{i}.model.1.weight"] * 2 for i in range(5)})
    _save(doubled, tmp_path / "doubled_heads.safetensors")
    np.testing.assert_allclose(lpips(a, b, tmp_path / "doubled_heads.safetensors"), 2 * base, rtol=1e-5)


def test_lpips_gives_the_same_distances_from_one_file_or_a_folder_of_two(lpips_file, tmp_path):
    state = safetensors_torch.load_file(str(lpips_file))
    _save({k: v for k, v in state.items() if k.startswith("features.")}, tmp_path / "vgg16.safetensors")
    _save({k: v for k, v in state.items() if k.startswith("lin")}, tmp_path / "lpips_vgg.safetensors")
    a, b = _images(0), _images(1)
    np.testing.assert_array_equal(lpips(a, b, tmp_path), lpips(a, b, lpips_file))


def test_lpips_folder_without_the_heads_names_the_missing_file(lpips_file, tmp_path):
    shutil.copy(lpips_file, tmp_path / "vgg16.safetensors")
    with pytest.raises(MissingWeightsError) as err:
        lpips(_images(0), _images(1), tmp_path)
    assert str(tmp_path / "lpips_vgg.safetensors") in str(err.value)
    assert "lin0.model.1.weight" in str(err.value)


def test_lpips_refuses_heads_with_negative_weights(lpips_file, tmp_path):
    state = safetensors_torch.load_file(str(lpips_file))
    state["lin3.model.1.weight"] = -state["lin3.model.1.weight"]
    _save(state, tmp_path / "negative.safetensors")
    with pytest.raises(ValueError, match="lin3.model.1.weight"):
        lpips(_images(0), _images(1), tmp_path / "negative.safetensors")


def test_lpips_refuses_unpaired_or_too_small_images(lpips_file):
    with pytest.raises(ValueError, match="one shape"):
        lpips(_images(0, n=2), _images(1, n=3), lpips_file)
    with pytest.raises(ValueError, match="at least 16"):
        lpips(_images(0, h=8, w=8), _images(1, h=8, w=8), lpips_file)


def test_a_torch_saved_pth_loads_through_weights_only(lpips_file, tmp_path):
    state = safetensors_torch.load_file(str(lpips_file))
    torch.save(state, tmp_path / "lpips.pth")
    a, b = _images(0), _images(1)
    np.testing.assert_array_equal(lpips(a, b, tmp_path / "lpips.pth"), lpips(a, b, lpips_file))


def test_a_pth_holding_python_objects_is_refused(lpips_file, tmp_path):
    state = dict(safetensors_torch.load_file(str(lpips_file)))
    state["note"] = fractions.Fraction(1, 3)  # not a tensor: only a full unpickle could build it
    torch.save(state, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="weights_only"):
        lpips(_images(0), _images(1), tmp_path / "pickled.pth")


def test_networks_are_loaded_once_per_file_version(lpips_file, tmp_path):
    path = tmp_path / "cached.safetensors"
    shutil.copy(lpips_file, path)
    x = _images(0, n=1)
    lpips(x, x, path)
    before = learned._cached.cache_info()
    lpips(x, x, path)
    after = learned._cached.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a file replaced in place
    lpips(x, x, path)
    assert learned._cached.cache_info().misses == after.misses + 1


# ----------------------------------------------------------------------------------------- Inception / FID


def test_inception_features_are_2048_float64_per_image_and_independent_of_batching(inception_file):
    x = _images(3, n=3, h=12, w=20)
    f = inception_features(x, inception_file)
    assert f.shape == (3, 2048) and f.dtype == np.float64 and np.isfinite(f).all()
    assert np.abs(f[0] - f[1]).max() > 1e-3 * np.abs(f).max()  # different images, different features
    np.testing.assert_allclose(inception_features(x, inception_file, batch_size=1), f, rtol=1e-4, atol=1e-6)


def test_fid_of_a_set_with_itself_is_about_zero_and_positive_against_another_set(inception_file, monkeypatch):
    # the real frechet_distance takes ~16 s per 2048 x 2048 sqrtm on one core; the slow test below checks it
    calls = []

    def spy(*stats):
        calls.append(stats)
        return _fid_via_range(*stats)

    monkeypatch.setattr(learned, "frechet_distance", spy)
    a, b = _images(4, n=3, h=8, w=8), _images(5, n=3, h=8, w=8)
    same, other = fid(a, a, inception_file), fid(a, b, inception_file)
    assert other > 0 and abs(same) < 1e-6 * other
    fa = inception_features(a, inception_file)
    for got, want in zip(calls[1], (*feature_stats(fa), *feature_stats(inception_features(b, inception_file)))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.slow
def test_fid_through_the_real_frechet_distance_matches_the_exact_low_rank_value(inception_file):
    a, b = _images(4, n=3, h=8, w=8), _images(5, n=3, h=8, w=8)
    fa, fb = inception_features(a, inception_file), inception_features(b, inception_file)
    value = fid(a, b, inception_file)  # one 2048 x 2048 sqrtm inside frechet_distance
    assert value > 0 and value == pytest.approx(_fid_via_range(*feature_stats(fa), *feature_stats(fb)), rel=1e-3)


def test_fid_needs_two_images_per_side(inception_file):
    with pytest.raises(ValueError, match="at least 2"):
        fid(_images(0, n=1, h=8, w=8), _images(1, n=2, h=8, w=8), inception_file)


def test_missing_inception_weights_raise_an_error_naming_the_path(tmp_path):
    path = tmp_path / "nowhere" / "inception_fid.safetensors"
    with pytest.raises(MissingWeightsError) as err:
        inception_features(_images(0), path)
    assert isinstance(err.value, FileNotFoundError) and err.value.path == str(path)
    message = str(err.value)
    assert str(path) in message and "Mixed_5b.branch1x1.conv.weight" in message and "pytorch-fid" in message


def test_a_mis_shaped_inception_state_dict_is_refused_naming_the_key(tmp_path):
    _save({"Mixed_5b.branch1x1.conv.weight": torch.zeros(3, 3)}, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError) as err:
        inception_features(_images(0), tmp_path / "wrong.safetensors")
    message = str(err.value)
    assert "Mixed_5b.branch1x1.conv.weight: expected shape (64, 192, 1, 1), got (3, 3)" in message
    assert "missing" in message and "more" in message


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 16, 16, 3), np.float32),
        np.zeros((2, 16, 16, 4), np.uint8),
        np.zeros((16, 16, 3), np.uint8),
        np.zeros((0, 16, 16, 3), np.uint8),
        [[[[0, 0, 0]]]],
    ],
    ids=["float", "rgba", "single-image", "empty", "list"],
)
def test_every_metric_refuses_images_that_are_not_uint8_n_h_w_3(bad, inception_file, lpips_file, clip_dir):
    with pytest.raises(ValueError, match="uint8"):
        inception_features(bad, inception_file)
    with pytest.raises(ValueError, match="uint8"):
        lpips(bad, bad, lpips_file)
    with pytest.raises(ValueError, match="uint8"):
        clip_score(bad, ["a cat", "a dog"], clip_dir)


# ---------------------------------------------------------------------------------------------------- CLIP


def test_clip_score_is_in_0_100_deterministic_and_depends_on_the_prompt(clip_dir):
    x = _images(6, n=4)
    cats = clip_score(x, ["a photo of a cat"] * 4, clip_dir)
    assert cats.dtype == np.float64 and cats.shape == (4,)
    assert ((cats > 0) & (cats <= 100)).all()
    np.testing.assert_array_equal(clip_score(x, ["a photo of a cat"] * 4, clip_dir, batch_size=4), cats)
    dogs = clip_score(x, ["an oil painting of two dogs"] * 4, clip_dir)
    assert np.abs(cats - dogs).max() > 1e-3


def test_clip_score_is_100_times_the_cosine_of_clip_model_embeddings(clip_dir):
    from transformers import CLIPModel

    from iga.models.tokenizer import clip_tokenizer

    x, prompts = _images(7, n=2), ["a red square", "a blue circle on a table"]
    model = CLIPModel.from_pretrained(str(clip_dir), local_files_only=True).eval()
    mean, std = (torch.tensor(c)[:, None, None] for c in (learned.OPENAI_CLIP_MEAN, learned.OPENAI_CLIP_STD))
    pixels = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std
    tok = clip_tokenizer()(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels)
    want = 100 * (out.image_embeds * out.text_embeds).sum(-1).clamp_min(0).double().numpy()
    np.testing.assert_allclose(clip_score(x, prompts, clip_dir), want, rtol=1e-5)


def test_clip_score_clips_negative_cosines_to_zero(tmp_path):
    folder = _write_clip(_tiny_clip(sign=-1.0), tmp_path / "opposed")
    np.testing.assert_array_equal(clip_score(_images(8, n=2), ["a cat", "a dog"], folder), np.zeros(2))


def test_clip_score_resizes_the_short_side_and_crops_the_centre(clip_dir):
    from PIL import Image

    wide = _images(9, n=1, h=32, w=48)
    assert clip_score(wide, ["a cat"], clip_dir)[0] == clip_score(wide[:, :, 8:40], ["a cat"], clip_dir)[0]
    big = _images(12, n=1, h=64, w=96)
    small = np.asarray(Image.fromarray(big[0]).resize((48, 32), Image.Resampling.BICUBIC))[None, :, 8:40]
    assert clip_score(big, ["a cat"], clip_dir)[0] == clip_score(small, ["a cat"], clip_dir)[0]


def test_clip_score_uses_mean_and_std_from_preprocessor_config(clip_dir, tmp_path):
    folder = shutil.copytree(clip_dir, tmp_path / "clip")
    x, prompts = _images(10, n=2), ["a cat", "a dog"]
    before = clip_score(x, prompts, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    assert np.abs(clip_score(x, prompts, folder) - before).max() > 1e-3


def test_clip_reads_pytorch_model_bin_through_weights_only(clip_dir, tmp_path):
    folder = shutil.copytree(clip_dir, tmp_path / "clip-bin")
    state = safetensors_torch.load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    x, prompts = _images(11, n=2), ["a cat", "a dog"]
    np.testing.assert_allclose(clip_score(x, prompts, folder), clip_score(x, prompts, clip_dir), rtol=1e-6)


def test_clip_folder_without_weights_names_model_safetensors(clip_dir, tmp_path):
    folder = shutil.copytree(clip_dir, tmp_path / "clip-empty")
    (folder / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="model.safetensors") as err:
        clip_score(_images(0, n=1), ["a cat"], folder)
    assert str(folder) in str(err.value)


def test_missing_clip_folder_raises_missing_weights_error(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        clip_score(_images(0, n=1), ["a cat"], tmp_path / "no-clip")
    assert str(tmp_path / "no-clip") in str(err.value)


def test_clip_score_needs_one_prompt_per_image(clip_dir):
    with pytest.raises(ValueError, match="one prompt per image"):
        clip_score(_images(0, n=2), ["a cat"], clip_dir)
    with pytest.raises(ValueError, match="list of strings"):
        clip_score(_images(0, n=1), "a cat", clip_dir)
