"""`iga serve` against hostile and broken requests: every one is a 4xx with a sentence that names the problem,
never a 500, and the server goes on serving.

One server (a subprocess on a free port, memory-only images, its own audit log and model index) serves the
module; a second, with --token, serves the authentication tests. Bad requests are refused before any model
work, so only the final "still serving" checks generate (the demo model: 32x32, well under a second once loaded).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")

from server_support import ServeProcess, free_port  # noqa: E402

START_TIMEOUT = 90  # imports and the app on a busy 2-core machine
GENERATE_TIMEOUT = 180  # the first generation loads the model
TOKEN = "s3cret"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WEBUIAPI_DEFAULTS = {"prompt": "a red circle on a blue background", "steps": 20, "cfg_scale": 7,
                     "sampler_name": "Euler a", "scheduler": "automatic", "width": 512, "height": 512, "seed": 3}


class Served(ServeProcess):
    """A running `iga serve`, with every status it answered (to assert it never said 500)."""

    def __init__(self, tmp: Path, *extra: str):
        super().__init__(tmp, "--no-save", *extra, start_timeout=START_TIMEOUT)
        self.session = requests.Session()
        self.statuses: list[tuple[str, int]] = []

    def post(self, path: str, *, timeout: float = 30, **kw) -> requests.Response:
        r = self.session.post(self.base + path, timeout=timeout, **kw)
        self.statuses.append((path, r.status_code))
        return r

    def stop(self) -> None:
        self.session.close()
        super().stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("abuse"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("token"), "--token", TOKEN)
    try:
        yield s
    finally:
        s.stop()


def detail(r: requests.Response) -> str:
    """The error sentence of an answer (it must be JSON with a detail)."""
    body = r.json()
    assert isinstance(body, dict) and body.get("detail"), f"no error sentence in {r.status_code} {r.text[:300]}"
    return body["detail"]


def txt2img(server: Served, *, timeout: float = 30, **fields) -> requests.Response:
    return server.post("/sdapi/v1/txt2img", timeout=timeout,
                       json={"prompt": "a red circle on a blue background", **fields})


def assert_image(r: requests.Response) -> None:
    assert r.status_code == 200, r.text[:500]
    images = r.json()["images"]
    assert images and base64.b64decode(images[0])[:8] == PNG_MAGIC


# --- broken bodies ----------------------------------------------------------------------------------------------


def test_malformed_json_is_400_saying_where_it_breaks(server):
    r = server.post("/sdapi/v1/txt2img", data=b'{"prompt": "x",', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in detail(r) and "line 1 column" in detail(r)


def test_a_json_array_body_is_422_asking_for_an_object(server):
    r = server.post("/sdapi/v1/txt2img", json=["a red circle", 20])
    assert r.status_code == 422
    assert "JSON object" in detail(r)


def test_a_ten_megabyte_prompt_is_413_at_the_body_limit(server):
    r = txt2img(server, prompt="a" * (10 << 20))
    assert r.status_code == 413
    assert "8,388,608" in detail(r)  # the limit, as the client should read it


def test_a_ten_megabyte_body_without_a_length_is_413_too(server):
    def chunks():  # a generator body goes out chunked: no Content-Length for the server to check up front
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"a" * (1 << 20)
        yield b'"}'

    try:
        r = server.post("/sdapi/v1/txt2img", data=chunks(), headers={"Content-Type": "application/json"})
    except requests.ConnectionError:
        pytest.skip("the server closed the connection before the client could read its answer")
    assert r.status_code == 413
    assert "8,388,608" in detail(r)


def test_a_twenty_thousand_character_prompt_is_refused_naming_the_limit(server):
    r = txt2img(server, prompt="red circle " * 1819 + "r")  # 20,000 characters, far below the body limit
    assert r.status_code in (413, 422)
    assert "prompt" in detail(r) and "10,000" in detail(r)


def test_a_wrong_type_is_422_naming_the_field(server):
    r = txt2img(server, steps="abc")
    assert r.status_code == 422
    assert "steps" in detail(r) and "integer" in detail(r)


# --- values out of range ----------------------------------------------------------------------------------------


def test_width_100000_is_refused_naming_the_size(server):
    r = txt2img(server, width=100000)
    assert 400 <= r.status_code < 500
    assert "size" in detail(r) and "100000" in detail(r)


def test_negative_steps_are_422_naming_steps(server):
    r = txt2img(server, steps=-1)
    assert r.status_code == 422
    assert "steps" in detail(r) and "-1" in detail(r)


def test_negative_batch_size_and_n_iter_are_422_not_multiplied_into_a_batch(server):
    r = txt2img(server, batch_size=-4, n_iter=-4, seed=1, timeout=GENERATE_TIMEOUT)
    assert r.status_code == 422 and "batch_size" in detail(r)


def test_a_boolean_for_steps_and_a_zero_height_are_named(server):
    r = txt2img(server, steps=True)
    assert r.status_code == 422 and "steps must be an integer" in detail(r)
    r = txt2img(server, height=0, width=64)
    assert r.status_code == 422 and "64x0" in detail(r)


def test_an_unknown_sampler_is_404_naming_it(server):
    r = txt2img(server, sampler_name="Nonesuch 9000")
    assert r.status_code == 404
    assert "Nonesuch 9000" in detail(r)


# --- model names are names, never paths ------------------------------------------------------------------------


def test_a_path_as_the_request_model_is_404_saying_models_are_named(server):
    r = txt2img(server, override_settings={"sd_model_checkpoint": "../../etc/passwd"})
    assert r.status_code == 404
    assert "never opened by path" in detail(r) and "../../etc/passwd" in detail(r)


def test_a_path_as_the_selected_model_is_404_saying_models_are_named(server):
    r = server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "../../etc/passwd"})
    assert r.status_code == 404
    assert "never opened by path" in detail(r)
    current = server.session.get(server.base + "/sdapi/v1/options", timeout=10).json()["sd_model_checkpoint"]
    assert "passwd" not in current


# --- uploaded images ---------------------------------------------------------------------------------------------


def _png_b64(width: int = 32, height: int = 32) -> str:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 20, 200)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _png_bomb_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` (an RGB image of that size is 1.2 GB decoded) in a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def img2img(server: Served, **fields) -> requests.Response:
    return server.post("/sdapi/v1/img2img", json={"prompt": "a red circle on a blue background", **fields})


def test_img2img_without_an_init_image_is_422_pointing_to_txt2img(server):
    r = img2img(server, init_images=[])
    assert r.status_code == 422 and "txt2img" in detail(r)


def test_two_init_images_are_422_asking_for_one_per_request(server):
    r = img2img(server, init_images=[_png_b64(), _png_b64()])
    assert r.status_code == 422 and "one per request" in detail(r)


def test_base64_that_is_not_an_image_is_422_naming_the_field(server):
    r = img2img(server, init_images=[base64.b64encode(b"just some text, not pixels").decode()])
    assert r.status_code == 422 and detail(r).startswith("init_images[0] is not a PNG, JPEG or WebP image")
    r = img2img(server, init_images=["data:image/png;base64," + base64.b64encode(PNG_MAGIC + b"broken").decode()])
    assert r.status_code == 422 and "init_images[0] is not an image iga can read" in detail(r)
    r = img2img(server, init_images=["not base64 at all!"])
    assert r.status_code == 422 and "not valid base64" in detail(r)


def test_a_png_claiming_twenty_thousand_pixels_square_is_refused_before_decoding(server):
    r = img2img(server, init_images=[base64.b64encode(_png_bomb_header(20000, 20000)).decode()])
    assert r.status_code == 422 and detail(r).startswith("init_images[0] claims more pixels than iga reads")
    r = img2img(server, init_images=[base64.b64encode(_png_bomb_header(9000, 9000)).decode()])  # below PIL's limit
    assert r.status_code == 422 and "init_images[0] is 9000x9000; iga reads images up to 67 megapixels" in detail(r)


def test_a_mask_of_another_size_is_422_without_the_servers_paths(server):
    r = img2img(server, init_images=[_png_b64()], mask=_png_b64(16, 16))
    message = detail(r)
    assert r.status_code == 422 and "is 16x16 but the init image is 32x32" in message
    assert "/" not in message.split(" but ")[0]  # the upload folder is not named


def test_a_path_where_an_image_belongs_is_refused_on_both_apis(server):
    r = img2img(server, init_images=["/etc/passwd"])
    assert r.status_code == 422 and "never opens a path" in detail(r)
    r = img2img(server, init_images=[_png_b64()], mask="../../outputs/mask.png")
    assert r.status_code == 422 and detail(r).startswith("mask") and "never opens a path" in detail(r)
    r = server.post("/iga/v1/plan", json={"prompt": "x", "init_image": "/etc/hostname"})
    assert r.status_code == 422 and detail(r).startswith("init_image")


def test_an_upload_over_the_body_limit_is_413(server):
    r = img2img(server, init_images=["A" * (9 << 20)])
    assert r.status_code == 413


def test_init_images_sent_to_txt2img_are_refused_pointing_to_img2img(server):
    r = txt2img(server, init_images=[_png_b64()])
    assert r.status_code == 422 and "/sdapi/v1/img2img" in detail(r)


# --- and afterwards ----------------------------------------------------------------------------------------------


def test_after_every_abuse_the_server_still_generates_and_never_answered_500(server):
    r = server.post("/sdapi/v1/txt2img", json=WEBUIAPI_DEFAULTS, timeout=GENERATE_TIMEOUT)
    assert_image(r)
    assert server.proc.poll() is None
    broken = [s for s in server.statuses if s[1] >= 500]
    assert not broken, server.statuses
    assert "Traceback" not in server.log()


# --- authentication ----------------------------------------------------------------------------------------------


def test_with_a_token_a_request_without_it_is_401(token_server):
    r = token_server.post("/sdapi/v1/txt2img", json=WEBUIAPI_DEFAULTS)
    assert r.status_code == 401
    assert "Bearer" in r.headers.get("WWW-Authenticate", "")
    r = token_server.post("/sdapi/v1/txt2img", json=WEBUIAPI_DEFAULTS, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_with_a_token_a_bearer_request_is_served(token_server):
    r = token_server.post("/sdapi/v1/txt2img", json=WEBUIAPI_DEFAULTS, timeout=GENERATE_TIMEOUT,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert_image(r)


def test_with_a_token_http_basic_with_it_as_password_is_served(token_server):
    # webuiapi sends HTTP Basic (username, password); the password is the token, the user name is anything
    r = token_server.post("/sdapi/v1/txt2img", json=WEBUIAPI_DEFAULTS, timeout=GENERATE_TIMEOUT,
                          auth=("webui", TOKEN))
    assert_image(r)
    r = token_server.post("/sdapi/v1/txt2img", json=WEBUIAPI_DEFAULTS, auth=("webui", "not-it"))
    assert r.status_code == 401


def test_listening_beyond_loopback_without_a_token_exits_2_naming_token(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "iga.cli", "serve", "--host", "0.0.0.0", "--port",
                           str(free_port()), "--no-save"], env={k: v for k, v in os.environ.items() if k != "IGA_SERVE_TOKEN"}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--token" in proc.stderr
