"""The page of `iga serve` in a real browser: presets, the guard's refusal and override, the gallery, replay, audit.

One server (a subprocess on a free port, with its own output folder, audit log and model index) and one headless
Chromium serve every test of the module. Chromium and its driver come from Debian (/usr/bin); the driver path is
always given explicitly so Selenium Manager never tries to download one. With IGA_SCREENSHOTS=1 the tests also
write the screenshots in docs/ (serve-page.png, serve-refusal.png, serve-advanced.png).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parents[1] / "docs"
JOB_TIMEOUT = 180  # the first generation loads the model; the machine may be busy
OVERRIDE_REASON = "checking a longer schedule on the demo model"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed in this environment")
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException, StaleElementReferenceException, WebDriverException)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from server_support import ServeProcess  # noqa: E402


# --- fixtures -------------------------------------------------------------------------------------------------------


def _get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`iga serve` on a free port; yields its base URL and the paths it writes."""
    tmp = tmp_path_factory.mktemp("serve")
    served = ServeProcess(tmp, "--out", str(tmp / "out"))
    try:
        yield {"base": served.base, "tmp": tmp, "log": served.log_path}
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"browser tests need Debian's Chromium and its driver; missing: {', '.join(missing)} "
                    "(apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="iga-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,1000"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    except WebDriverException as e:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"Chromium could not be started by {CHROMEDRIVER}: {e.msg}")
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(server, browser):
    """The page freshly loaded, its models and presets drawn, no job running."""
    browser.get(server["base"] + "/")
    wait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    wait(browser, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#presets [data-preset]")))
    return browser


# --- helpers --------------------------------------------------------------------------------------------------------


def wait(driver, seconds: float = 10) -> WebDriverWait:
    # the page redraws its lists when a job ends, so an element found a moment ago may be gone: look again
    return WebDriverWait(driver, seconds, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])


def status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def gallery_count(driver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item"))


def generate_and_wait(driver, click_id: str = "generate") -> None:
    """Click `click_id`, wait until the job ends, and require a new image in the gallery."""
    before = gallery_count(driver)
    driver.find_element(By.ID, click_id).click()

    def finished(d):
        s = d.find_element(By.ID, "status")
        if "error" in (s.get_attribute("class") or ""):
            return "error"
        return "ok" if gallery_count(d) > before and d.find_element(By.ID, "generate").is_enabled() else False

    outcome = wait(driver, JOB_TIMEOUT).until(finished)
    assert outcome == "ok", f"the job did not produce an image: {status(driver)!r}"


def open_advanced(driver) -> None:
    adv = driver.find_element(By.ID, "advanced")
    if adv.get_attribute("open") is None:
        adv.find_element(By.TAG_NAME, "summary").click()
    wait(driver).until(EC.visibility_of_element_located((By.ID, "steps")))


def ask_for_steps(driver, steps: int) -> None:
    open_advanced(driver)
    field = driver.find_element(By.ID, "steps")
    field.clear()
    field.send_keys(str(steps))
    driver.find_element(By.ID, "prompt").send_keys("a small red square")
    driver.find_element(By.ID, "generate").click()
    wait(driver, 30).until(EC.visibility_of_element_located((By.ID, "refusal")))


def screenshot(driver, name: str) -> None:
    """Write docs/<name> only when asked (IGA_SCREENSHOTS=1), so an ordinary run leaves the docs alone."""
    if os.environ.get("IGA_SCREENSHOTS") != "1":
        return
    width = 1280
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(int(height) + 40, 600), 2400))
    driver.execute_script("window.scrollTo(0, 0)")
    try:
        DOCS.mkdir(exist_ok=True)
        driver.get_screenshot_as_file(str(DOCS / name))
    finally:
        driver.set_window_size(width, 1000)


# --- tests ----------------------------------------------------------------------------------------------------------


def test_choosing_a_preset_and_generating_puts_an_image_in_the_gallery(page):
    fast = page.find_element(By.CSS_SELECTOR, '#presets [data-preset="Fast"]')
    assert "15 steps" in fast.text
    assert "model calls" in fast.text
    fast.click()
    assert fast.get_attribute("aria-pressed") == "true"
    assert "selected" in fast.get_attribute("class")
    quality = page.find_element(By.CSS_SELECTOR, '#presets [data-preset="Quality"]')
    assert quality.get_attribute("aria-pressed") == "false"

    page.find_element(By.ID, "prompt").send_keys("a small red square")
    page.find_element(By.ID, "seed").send_keys("7")
    # the demo job takes well under a second: record every progress line rather than hoping to catch one
    page.execute_script("""
        window.progressSeen = [];
        new MutationObserver(() => window.progressSeen.push(document.getElementById('progress-text').textContent))
          .observe(document.getElementById('progress-text'), {childList: true, characterData: true, subtree: true});
    """)
    generate_and_wait(page)
    seen = page.execute_script("return window.progressSeen")
    assert any(t.startswith("step ") and "/15" in t and "σ" in t for t in seen), seen

    item = page.find_element(By.CSS_SELECTOR, "#gallery .gallery-item img")
    wait(page, 30).until(lambda d: d.execute_script(
        "const i = arguments[0]; return i.complete && i.naturalWidth > 0", item))
    assert item.size["width"] >= 128
    assert page.execute_script("return getComputedStyle(arguments[0]).imageRendering", item) == "pixelated"
    # the new image opens with its provenance: the preset's plan
    detail = page.find_element(By.ID, "detail")
    assert detail.is_displayed()
    plan = {dd.get_attribute("data-key"): dd.text for dd in detail.find_elements(By.CSS_SELECTOR, "dd[data-key]")}
    assert plan["preset"] == "Fast"
    assert plan["steps"] == "15"
    assert plan["seed"] == "7"
    assert page.find_element(By.ID, "detail-infotext").text.strip()
    screenshot(page, "serve-page.png")


def test_advanced_is_closed_by_default_and_opens_on_the_recipe_ranges_with_forbidden_choices_disabled(page):
    adv = page.find_element(By.ID, "advanced")
    assert adv.get_attribute("open") is None
    assert not page.find_element(By.ID, "sampler").is_displayed()

    open_advanced(page)
    steps_range = page.find_element(By.CSS_SELECTOR, '[data-range="steps"]').text
    assert "15–40" in steps_range and "default 20" in steps_range
    assert "1.5–4" in page.find_element(By.CSS_SELECTOR, '[data-range="cfg"]').text
    assert "32x32" in page.find_element(By.CSS_SELECTOR, '[data-range="size"]').text

    lcm = page.find_element(By.CSS_SELECTOR, '#sampler option[value="lcm"]')
    assert not lcm.is_enabled()
    assert lcm.get_attribute("title"), "a forbidden sampler says why in its title"
    turbo = page.find_element(By.CSS_SELECTOR, '#schedule option[value="turbo"]')
    assert not turbo.is_enabled()
    assert "(recipe)" in page.find_element(By.CSS_SELECTOR, '#sampler option[value="dpmpp_2m"]').text
    assert "(recipe)" in page.find_element(By.CSS_SELECTOR, '#schedule option[value="karras"]').text
    # the reasons for the greyed choices appear beside the select while it is hovered or focused
    ActionChains(page).move_to_element(page.find_element(By.ID, "sampler")).perform()
    forbidden = page.find_element(By.ID, "sampler-forbidden")
    wait(page).until(lambda d: forbidden.is_displayed())
    assert "lcm" in forbidden.text
    screenshot(page, "serve-advanced.png")


def test_steps_outside_the_recipe_range_are_refused_inline_with_the_reason_and_an_override_form(page):
    ask_for_steps(page, 60)
    refusal = page.find_element(By.ID, "refusal")
    finding = refusal.find_element(By.CSS_SELECTOR, '#refusal-findings li[data-field="steps"]')
    assert "sev-soft" in finding.get_attribute("class")
    assert finding.find_element(By.CSS_SELECTOR, ".reason").text.strip()
    assert "60" in finding.text
    assert page.find_element(By.ID, "override-reason").is_displayed()
    assert page.find_element(By.ID, "override-submit").is_displayed()

    # an override without a reason is not sent: the status line says what is missing
    before = gallery_count(page)
    page.find_element(By.ID, "override-submit").click()
    wait(page).until(lambda d: "reason" in status(d))
    assert "error" in page.find_element(By.ID, "status").get_attribute("class")
    assert refusal.is_displayed() and gallery_count(page) == before
    page.find_element(By.ID, "override-reason").send_keys("a reason typed for the screenshot")
    screenshot(page, "serve-refusal.png")


def test_a_hard_refusal_shows_the_reason_and_fix_but_no_override_form(page):
    open_advanced(page)
    # the page greys out a forbidden sampler; re-enable it to see what the guard answers when one is sent anyway
    page.execute_script("const o = document.querySelector('#sampler option[value=\"lcm\"]'); o.disabled = false;"
                        "o.selected = true; o.parentElement.dispatchEvent(new Event('change'));")
    page.find_element(By.ID, "generate").click()
    refusal = wait(page, 30).until(EC.visibility_of_element_located((By.ID, "refusal")))
    finding = refusal.find_element(By.CSS_SELECTOR, '#refusal-findings li[data-field="sampler"]')
    assert "sev-hard" in finding.get_attribute("class")
    assert finding.find_element(By.CSS_SELECTOR, ".reason").text.strip()
    assert not page.find_element(By.ID, "override-box").is_displayed()


def test_overriding_with_a_reason_generates_and_the_audit_view_shows_the_reason(page, server):
    ask_for_steps(page, 60)
    page.find_element(By.ID, "override-reason").send_keys(OVERRIDE_REASON)
    generate_and_wait(page, "override-submit")
    assert not page.find_element(By.ID, "refusal").is_displayed()

    # the new image's provenance names the override and its reason
    overrides = page.find_elements(By.CSS_SELECTOR, '#detail dd[data-key="overrides"]')
    assert any("steps" in o.text and OVERRIDE_REASON in o.text for o in overrides)
    assert page.find_element(By.CSS_SELECTOR, '#detail dd[data-key="steps"]').text == "60"

    page.find_element(By.CSS_SELECTOR, "#audit > summary").click()
    row = wait(page, 30).until(lambda d: next(
        (r.text for r in d.find_elements(By.CSS_SELECTOR, "#audit-rows tr.audit-row") if OVERRIDE_REASON in r.text),
        False))
    assert "steps" in row and "60" in row and "guarded" in row
    assert OVERRIDE_REASON in (server["tmp"] / "audit.jsonl").read_text()


def test_replaying_an_image_from_the_gallery_reports_identical(page):
    if gallery_count(page) == 0:  # run alone: make an image first
        page.find_element(By.ID, "prompt").send_keys("a small red square")
        generate_and_wait(page)
    item = page.find_element(By.CSS_SELECTOR, "#gallery .gallery-item")
    name = item.get_attribute("data-name")
    item.click()
    wait(page).until(EC.visibility_of_element_located((By.ID, "detail")))
    download = page.find_element(By.ID, "download")
    assert download.get_attribute("download") == name
    assert download.get_attribute("href").endswith("/iga/v1/images/" + name)

    page.find_element(By.ID, "replay").click()
    result = page.find_element(By.ID, "replay-result")
    verdict = wait(page, JOB_TIMEOUT).until(
        lambda d: result.text if result.text in ("identical", "differs", "failed", "cancelled", "unknown") else False)
    assert verdict == "identical", f"replay of {name}: {verdict} ({status(page)!r})"


def test_an_uploaded_init_image_and_mask_make_an_inpainting_plan_shown_with_the_image(page, server, tmp_path):
    from PIL import Image

    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(init)
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (0, 0, 16, 32))
    m.save(mask)
    passes = page.find_element(By.ID, "passes")
    passes.find_element(By.TAG_NAME, "summary").click()
    wait(page).until(EC.visibility_of_element_located((By.ID, "init-image")))
    page.find_element(By.ID, "init-image").send_keys(str(init))
    page.find_element(By.ID, "mask").send_keys(str(mask))
    page.find_element(By.ID, "denoise").send_keys("0.5")
    page.find_element(By.ID, "prompt").send_keys("a yellow star on a black background")
    generate_and_wait(page)
    newest = _get_json(server["base"] + "/iga/v1/gallery")["images"][0]
    plan = newest["plan"]
    assert plan["img2img"]["denoise"] == 0.5 and plan["img2img"]["mask"] is not None
    page.find_element(By.CSS_SELECTOR, f'#gallery .gallery-item[data-name="{newest["name"]}"]').click()
    wait(page).until(EC.visibility_of_element_located((By.ID, "detail")))
    rows = page.find_element(By.ID, "detail-plan").text
    assert "img2img" in rows and "denoise 0.5" in rows and "inpaint" in rows, rows


def test_a_server_error_is_shown_in_the_status_line_not_as_an_alert(page):
    # a model the server does not have: its 404 detail must reach the page's status line
    page.execute_script("const s = document.getElementById('model'); s.add(new Option('gone', 'no-such-model'));"
                        "s.value = 'no-such-model'; s.dispatchEvent(new Event('change'));")
    line = page.find_element(By.ID, "status")
    wait(page).until(lambda d: "no-such-model" in line.text)
    assert "error" in line.get_attribute("class")
    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text  # noqa: B018 - reading it is the check
