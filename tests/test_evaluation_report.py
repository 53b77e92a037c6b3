"""The eval report: report.html is self-contained and safe to open, report.md links only real files, writes are atomic."""

from __future__ import annotations

import base64
import io
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from iga.evaluation import report
from iga.evaluation.report import MAX_GRID_ROWS, write_report

SCRIPT_PROMPT = "<script>alert(1)</script> cat"
REFUSED_REASON = "cfg 31 above the guard's limit <b>30</b>"
METRICS = ["ssim", "psnr", "delta_hue"]
HEADLINE = [
    {"figure": "failure rate", "iga": "2.0 %", "baseline": "9.5 %", "ratio_or_difference": "0.21",
     "ci95": "[0.11, 0.38]", "note": "lower is better"},
    {"figure": "SSIM to reference", "iga": "0.912", "baseline": "0.874", "ratio_or_difference": "+0.038",
     "ci95": "[0.021, 0.055]", "note": ""},
]


# ------------------------------------------------------------------------------------------------------------ helpers


def _png(path: Path, index: int) -> None:
    """A 32x32 PNG whose colour is unique per index, so embedded bytes can be matched back to their file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (index * 37 % 256, index * 91 % 256, index * 53 % 256)).save(path)


def _row(**kw) -> dict:
    row = {"role": "point", "arm": "", "axis": "sampler", "value": "euler", "value_order": 0, "prompt": "a red cube",
           "seed": 1, "sampler": "euler", "schedule": "karras", "steps": 20, "cfg": 7.0, "image": "",
           "failure": "", "refused": ""}
    row.update({m: 0.5 for m in METRICS})
    row.update(kw)
    return row


def _stat(mean, ci=None) -> dict:
    return {"mean": mean, "ci": ci}


def _summary(axis: str, values: list[str], *, numeric: bool = False, headline: bool = True) -> dict:
    per_value = {}
    for i, v in enumerate(values):
        stats = {"ssim": _stat(0.8 + 0.05 * i, [0.75 + 0.05 * i, 0.85 + 0.05 * i]),
                 "psnr": _stat(20.0 + i, [19.0 + i, 21.0 + i]),
                 "delta_hue": _stat(None if i == 1 else 3.0, None if i == 1 else [2.0, 4.0])}
        per_value[v] = {"n": 4, "refused": int(i == 2), "failure_rate": 0.25 if i == 0 else 0.0,
                        "failures": {"burnt": 1} if i == 0 else {}, "metrics": stats}
    summary = {
        "schema": "iga.eval-summary/1", "name": "tiny sweep", "created": "2024-01-01T00:00:00Z",
        "model": {"name": "tiny-ldm", "path": "/models/tiny.safetensors", "weights_sha256": "ab" * 32},
        "axis": axis, "values": values, "numeric_axis": numeric, "metrics": METRICS, "per_value": per_value,
        "variance": {"ssim": {"mean": 0.01, "ci": [0.005, 0.02], "n_groups": 4},
                     "psnr": {"mean": float("nan"), "ci": None, "n_groups": 0}},
        "repeatability": {"bit_identical_rate": 1.0, "n_repeats": 1,
                          "kendall_tau": {"ssim": {"mean": 0.9, "ci": [0.7, 1.0]}}},
        "reference": {"sampler": "euler", "schedule": "karras", "steps": 200},
        "notes": ["reference images use 200 steps"],
    }
    if headline:
        summary["headline"] = {"table": HEADLINE, "arms": {"iga": {"recipe": "native"}, "baseline": {"recipe": "a1111"}}}
    return summary


def make_sweep(tmp_path: Path, axis: str = "sampler", values: tuple[str, ...] = ("euler", "dpm++ 2m", "heun"),
               numeric: bool = False) -> tuple[Path, list[dict], dict]:
    """2 prompts x 2 seeds x 3 values, with a refused cell, a burnt image, a missing image file and a NaN metric."""
    run_dir = tmp_path / "run"
    rows, index = [], 0
    for prompt in ("a red cube", SCRIPT_PROMPT):
        for seed in (1, 2):
            index += 1
            ref = f"images/ref_{index}.png"
            _png(run_dir / ref, index)
            rows.append(_row(role="reference", prompt=prompt, seed=seed, image=ref, value="", value_order=-1))
            for order, value in enumerate(values):
                index += 1
                image = f"images/{index:03d}.png"
                _png(run_dir / image, index)
                rows.append(_row(axis=axis, value=value, value_order=order, prompt=prompt, seed=seed, image=image))
    rows[2].update(image="", refused=REFUSED_REASON)          # a red cube, seed 1, values[1]
    rows[5].update(failure="burnt")                            # a red cube, seed 2, values[0]
    rows[6]["image"] = "images/never_written.png"              # a red cube, seed 2, values[1]
    rows[9]["ssim"] = float("nan")
    rows.append(_row(role="repeat", axis=axis, value=values[0], image=rows[1]["image"]))
    return run_dir, rows, _summary(axis, list(values), numeric=numeric)


class Page(HTMLParser):
    """The parts of report.html the tests look at: every src/href/url reference, images and table cells."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.imgs: list[dict] = []
        self.tables: list[dict] = []
        self.h3: list[str] = []
        self._cell: dict | None = None
        self._in_h3 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href", "action", "srcset", "poster") and v]
        if tag == "table":
            self.tables.append({"class": a.get("class", ""), "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = {"class": a.get("class") or "", "text": "", "imgs": []}
        elif tag == "img":
            self.imgs.append(a)
            if self._cell is not None:
                self._cell["imgs"].append(a)
        self._in_h3 = tag == "h3"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append(self._cell)
            self._cell = None
        if tag == "h3":
            self._in_h3 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_h3:
            self.h3.append(data)

    def grids(self) -> list[list[list[dict]]]:
        return [t["rows"] for t in self.tables if t["class"] == "grid"]

    def table_with_header(self, first: str) -> list[list[str]]:
        for t in self.tables:
            if t["rows"] and t["rows"][0] and t["rows"][0][0]["text"] == first:
                return [[c["text"] for c in row] for row in t["rows"]]
        raise AssertionError(f"no table whose header starts with {first!r}")


def _cells(page: Page) -> list[dict]:
    return [c for grid in page.grids() for row in grid[1:] for c in row[1:]]


def _b64(uri: str) -> bytes:
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    return base64.b64decode(uri.split(",", 1)[1], validate=True)


def _write(tmp_path: Path, **kw) -> tuple[Path, list[dict], dict, str, str]:
    run_dir, rows, summary = make_sweep(tmp_path, **kw)
    html_path, md_path = write_report(run_dir, rows, summary)
    return run_dir, rows, summary, html_path.read_text("utf-8"), md_path.read_text("utf-8")


# -------------------------------------------------------------------------------------------------------------- tests


def test_write_report_returns_html_and_markdown_paths_in_the_run_dir(tmp_path):
    run_dir, rows, summary = make_sweep(tmp_path)
    html_path, md_path = write_report(run_dir, rows, summary)
    assert (html_path, md_path) == (run_dir / "report.html", run_dir / "report.md")
    assert html_path.stat().st_size > 0 and md_path.stat().st_size > 0


def test_html_references_nothing_but_data_uris(tmp_path):
    _, _, _, text, _ = _write(tmp_path)
    page = Page(text)
    assert "http://" not in text and "https://" not in text
    assert page.refs and all(r.startswith("data:") for r in page.refs)
    assert not re.search(r"""src\s*=\s*(?!["']?data:)""", text)
    assert "<link" not in text.lower() and "<script" not in text.lower() and "@import" not in text
    assert "default-src 'none'" in text  # even an escaping slip cannot fetch or run anything


def test_html_has_one_embedded_img_per_existing_image_cell_with_the_files_bytes(tmp_path):
    run_dir, rows, _, text, _ = _write(tmp_path)
    shown = [r for r in rows if r["role"] in ("point", "reference") and r["image"] and not r["refused"]]
    existing = {(run_dir / r["image"]).read_bytes() for r in shown if (run_dir / r["image"]).is_file()}
    cell_imgs = [img for c in _cells(Page(text)) for img in c["imgs"]]
    assert len(cell_imgs) == len(existing) == 14  # 12 points + 4 references - 1 refused - 1 missing file
    assert {_b64(img["src"]) for img in cell_imgs} == existing
    assert text.count('<img class="cell"') == len(existing)
    assert re.search(r"img\.cell\s*\{[^}]*image-rendering:\s*pixelated", text)


def test_grid_columns_are_reference_then_values_and_rows_are_sorted_prompt_seed_pairs(tmp_path):
    _, _, _, text, _ = _write(tmp_path)
    (grid,) = Page(text).grids()
    assert [c["text"] for c in grid[0]] == ["", "reference", "euler", "dpm++ 2m", "heun"]
    labels = [row[0]["text"] for row in grid[1:]]
    assert labels == sorted(labels) and len(labels) == 4
    assert labels[0].startswith(SCRIPT_PROMPT)  # '<' sorts before 'a'


def test_grid_columns_follow_value_order_not_alphabet(tmp_path):
    run_dir, rows, summary = make_sweep(tmp_path, values=("zeta", "alpha", "mu"))
    page = Page(write_report(run_dir, rows, summary)[0].read_text("utf-8"))
    assert [c["text"] for c in page.grids()[0][0]][2:] == ["zeta", "alpha", "mu"]


def test_untrusted_prompt_and_reason_are_escaped_in_html_and_markdown(tmp_path):
    _, _, _, text, md = _write(tmp_path)
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; cat" in text
    assert "<b>30</b>" not in text and "&lt;b&gt;30&lt;/b&gt;" in text
    assert "<script>" not in md and "<b>" not in md
    assert r"\<script\>alert(1)\</script\> cat" in md


def test_refused_cell_shows_the_guard_reason_and_no_image(tmp_path):
    _, _, _, text, md = _write(tmp_path)
    refused = [c for c in _cells(Page(text)) if "refused" in c["class"]]
    assert len(refused) == 1 and not refused[0]["imgs"]
    assert REFUSED_REASON in refused[0]["text"]
    assert r"refused: cfg 31 above the guard's limit \<b\>30\</b\>" in md


def test_failed_cell_has_a_red_border_and_the_failure_name(tmp_path):
    _, _, _, text, md = _write(tmp_path)
    failed = [c for c in _cells(Page(text)) if c["class"] == "fail"]
    assert len(failed) == 1 and failed[0]["text"] == "burnt" and len(failed[0]["imgs"]) == 1
    assert re.search(r"td\.fail\s*\{[^}]*border:[^;}]*#d00", text)
    assert re.search(r"!\[\]\(images/\d+\.png\) \*\*burnt\*\*", md)


def test_missing_image_file_is_shown_as_missing_instead_of_crashing(tmp_path):
    _, _, _, text, md = _write(tmp_path)
    missing = [c for c in _cells(Page(text)) if c["text"] == "missing"]
    assert len(missing) == 1 and not missing[0]["imgs"]
    assert "never_written" not in md and "| missing |" in md


def test_all_image_files_gone_still_writes_both_reports(tmp_path):
    run_dir, rows, summary = make_sweep(tmp_path)
    for png in (run_dir / "images").iterdir():
        png.unlink()
    html_path, md_path = write_report(run_dir, rows, summary)
    page = Page(html_path.read_text("utf-8"))
    assert not [c for c in _cells(page) if c["imgs"]]
    assert sum(c["text"].startswith("missing") for c in _cells(page)) == 15  # 11 point images + 4 references
    assert "images/" not in md_path.read_text("utf-8")


def test_image_path_escaping_the_run_dir_is_not_embedded(tmp_path):
    run_dir, rows, summary = make_sweep(tmp_path)
    _png(tmp_path / "secret.png", 200)
    rows[1]["image"] = "../secret.png"
    text = write_report(run_dir, rows, summary)[0].read_text("utf-8")
    secret = base64.b64encode((tmp_path / "secret.png").read_bytes()).decode()
    assert secret not in text and sum(c["text"] == "missing" for c in _cells(Page(text))) == 2


def test_headline_table_comes_first_and_shows_every_figure(tmp_path):
    _, _, _, text, md = _write(tmp_path)
    table = Page(text).table_with_header("Figure")
    assert table[1:] == [[r["figure"], r["iga"], r["baseline"], r["ratio_or_difference"], r["ci95"], r["note"]]
                         for r in HEADLINE]
    assert r"| failure rate | 2.0 % | 9.5 % | 0.21 | \[0.11, 0.38\] | lower is better |" in md
    for doc in (text, md):
        assert doc.index("Headline") < doc.index("Per value") < doc.index("Image grids")


def test_per_value_table_shows_counts_failures_and_mean_ci_with_na_for_missing(tmp_path):
    _, _, _, text, md = _write(tmp_path)
    table = Page(text).table_with_header("value")
    assert table[0][:5] == ["value", "n", "refused", "failure rate", "failures"]
    assert table[1][:6] == ["euler", "4", "0", "25.0 %", "burnt 1", "0.8 [0.75, 0.85]"]
    assert table[2][-1] == "n/a"  # delta_hue mean is None for the second value
    assert table[3][2] == "1"
    assert "| dpm++ 2m | 4 | 0 | 0.0 % | none |" in md


def test_variance_and_repeatability_show_nan_as_na(tmp_path):
    _, _, _, text, md = _write(tmp_path)
    page = Page(text)
    variance = page.table_with_header("metric")
    assert variance[1] == ["ssim", "0.01", "[0.005, 0.02]", "4"]
    assert variance[2] == ["psnr", "n/a", "n/a", "0"]
    assert "Bit-identical repeats: 100.0 %" in text and "Bit-identical repeats: 100.0 %" in md
    assert ">nan<" not in text.lower() and "| nan" not in md.lower()


def test_overview_counts_images_refusals_and_failures(tmp_path):
    _, _, _, text, md = _write(tmp_path)
    line = "Counts: 12 points, 11 images, 1 refused, 1 failures (burnt 1); 4 reference images, 1 repeats"
    assert line in text and line in md
    assert "tiny-ldm" in text and "ab" * 32 in text
    assert "Reference: sampler euler, schedule karras, steps 200" in md
    assert "reference images use 200 steps" in md


def test_plots_are_one_valid_png_per_metric_plus_the_failure_chart_and_are_embedded(tmp_path):
    run_dir, _, _, text, md = _write(tmp_path)
    files = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert files == sorted([f"metric_{m}.png" for m in METRICS] + ["failure_rate.png"])
    embedded = {_b64(img["src"]) for img in Page(text).imgs if img.get("class") != "cell"}
    for name in files:
        data = (run_dir / "plots" / name).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            assert im.format == "PNG"
        assert data in embedded
        assert f"](plots/{name})" in md


def test_numeric_axis_writes_the_same_sections_and_plots(tmp_path):
    run_dir, _, _, text, md = _write(tmp_path, axis="steps", values=("1", "10", "1000"), numeric=True)
    assert len(list((run_dir / "plots").glob("*.png"))) == len(METRICS) + 1
    (grid,) = Page(text).grids()
    assert [c["text"] for c in grid[0]][2:] == ["1", "10", "1000"]
    assert "Varied: steps (numeric)" in md


def test_markdown_links_resolve_to_existing_files(tmp_path):
    run_dir, rows, _, _, md = _write(tmp_path)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 14 + len(METRICS) + 1
    for link in links:
        assert not link.startswith(("/", "http")) and (run_dir / unquote(link)).is_file(), link


def test_markdown_link_with_spaces_is_url_encoded_and_resolves(tmp_path):
    run_dir, rows, summary = make_sweep(tmp_path)
    _png(run_dir / "images" / "a b (1).png", 201)
    rows[1]["image"] = "images/a b (1).png"
    md = write_report(run_dir, rows, summary)[1].read_text("utf-8")
    assert "](images/a%20b%20%281%29.png)" in md


def test_grid_is_capped_at_forty_rows_with_a_note(tmp_path):
    run_dir = tmp_path / "run"
    rows = [_row(prompt=f"prompt {i:02d}", seed=i) for i in range(MAX_GRID_ROWS + 5)]
    summary = {"schema": "iga.eval-summary/1", "name": "big", "axis": "sampler", "values": ["euler"],
               "per_value": {"euler": {"n": 45}}}
    html_path, md_path = write_report(run_dir, rows, summary)
    (grid,) = Page(html_path.read_text("utf-8")).grids()
    assert len(grid) == 1 + MAX_GRID_ROWS
    assert grid[-1][0]["text"] == f"prompt {MAX_GRID_ROWS - 1:02d} · seed {MAX_GRID_ROWS - 1}"
    for text in (html_path.read_text("utf-8"), md_path.read_text("utf-8")):
        assert "5 more (prompt, seed) rows not shown" in text
    assert len(re.findall(r"^\| prompt \d", md_path.read_text("utf-8"), re.M)) == MAX_GRID_ROWS


def test_one_grid_per_arm_when_arms_are_set(tmp_path):
    run_dir, rows, summary = make_sweep(tmp_path)
    arm_rows = [dict(r, arm=arm) for arm in ("iga", "baseline") for r in rows if r["role"] == "point"]
    refs = [r for r in rows if r["role"] == "reference"]
    page = Page(write_report(run_dir, arm_rows + refs, summary)[0].read_text("utf-8"))
    assert page.h3 == ["Arm: baseline", "Arm: iga"]
    assert [sum(len(c["imgs"]) for row in g[1:] for c in row[1:]) for g in page.grids()] == [14, 14]


def test_minimal_summary_with_only_required_keys_renders(tmp_path):
    run_dir = tmp_path / "run"
    _png(run_dir / "images" / "x.png", 1)
    rows = [_row(image="images/x.png", ssim=float("nan"))]
    summary = {"schema": "iga.eval-summary/1", "name": "min", "axis": "sampler", "values": ["euler"],
               "per_value": {"euler": {"n": 1, "failure_rate": None}}}
    html_path, md_path = write_report(run_dir, rows, summary)
    text = html_path.read_text("utf-8")
    assert "Headline" not in text and "Variance" not in text and "Repeatability" not in text
    assert Page(text).table_with_header("value")[1] == ["euler", "1", "n/a", "n/a", "none"]
    assert [p.name for p in (run_dir / "plots").iterdir()] == ["failure_rate.png"]


def test_writing_twice_replaces_the_files_and_leaves_no_temp_files(tmp_path):
    run_dir, rows, summary = make_sweep(tmp_path)
    write_report(run_dir, rows, summary)
    summary["name"] = "second run"
    html_path, md_path = write_report(run_dir, rows, summary)
    assert "second run" in html_path.read_text("utf-8") and "second run" in md_path.read_text("utf-8")
    leftovers = [p for p in run_dir.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_a_failed_write_keeps_the_previous_report_and_removes_its_temp_file(tmp_path, monkeypatch):
    run_dir, rows, summary = make_sweep(tmp_path)
    html_path, _ = write_report(run_dir, rows, summary)
    before = html_path.read_bytes()
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "report.html":
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    summary["name"] = "second run"
    with pytest.raises(OSError, match="disk full"):
        write_report(run_dir, rows, summary)
    assert html_path.read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_failure_bar_parts_add_up_to_the_reported_rate():
    summary = {"values": ["a", "b", "c"], "per_value": {
        "a": {"failure_rate": 0.5, "failures": {"black": 1, "burnt": 3}},
        "b": {"failure_rate": 0.2, "failures": {}},
        "c": {"failure_rate": float("nan")}}}
    stacks = report._failure_stacks(summary)
    assert set(stacks) == {"black", "burnt", "unspecified"}
    totals = [sum(s[i] for s in stacks.values()) for i in range(3)]
    assert [round(t, 9) for t in totals] == [50.0, 20.0, 0.0]
    assert math.isclose(stacks["burnt"][0], 37.5)


def test_every_written_file_is_fsynced_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    run_dir, rows, summary = make_sweep(tmp_path)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_report(run_dir, rows, summary)
    replaced = [src for kind, src in events if kind == "replace"]
    assert len(replaced) == len(METRICS) + 1 + 2  # plots, report.md, report.html
    for src in replaced:
        assert Path(src).parent.name in ("run", "plots")  # the temp file sits next to its target
        synced = [i for i, e in enumerate(events) if e[0] == "fsync" and (not e[1] or e[1] == src)]
        assert synced and synced[0] < events.index(("replace", src))
