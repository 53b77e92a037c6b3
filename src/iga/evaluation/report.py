"""The report of an `iga eval` sweep: report.html (self-contained) and report.md, plus the plots they show.

Both files are rendered from one neutral description of the report (sections made of paragraphs, lists, tables,
plots and image grids), so the two formats carry the same content and cannot drift apart.

The HTML is meant to be mailed around and opened offline, and prompts and guard reasons in it are untrusted text: every
string is escaped, plots and images are embedded as data URIs, and a Content-Security-Policy forbids every fetch and
every script, so a slip in escaping still cannot run code or phone home.
"""

from __future__ import annotations

import base64
import html
import io
import math
import mimetypes
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union
from urllib.parse import quote

from .table import atomic_write

MAX_GRID_ROWS = 40
CELL_PX = 96
NA = "n/a"
REFERENCE_COLUMN = "reference"


# --------------------------------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Plot:
    title: str
    relpath: str  # posix path relative to run_dir
    png: bytes


@dataclass(frozen=True)
class Cell:
    kind: str  # "image" | "missing" | "refused" | "no_image" | "empty"
    image: str = ""  # posix path relative to run_dir
    failure: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Grid:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    omitted: int


Block = Union[Para, Bullets, Table, Plot, Grid]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------- entry point


def write_report(run_dir: Path, rows: list[dict], summary: dict) -> tuple[Path, Path]:
    """Write run_dir/report.html (self-contained, opens offline) and run_dir/report.md; return both paths.

    Plots are also written to run_dir/plots/ (report.md links them). Every file is replaced atomically; the plots go
    first so that neither report ever points at a plot that is not there yet.
    """
    run_dir = Path(run_dir)
    plots = _write_plots(run_dir, summary)
    title = f"iga eval: {summary.get('name') or run_dir.name}"
    sections = _build_sections(run_dir, rows, summary, plots)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    _write_atomic(md_path, _render_markdown(title, sections).encode("utf-8"))
    _write_atomic(html_path, _render_html(title, sections, run_dir).encode("utf-8"))
    return html_path, md_path


def _write_atomic(path: Path, data: bytes) -> None:
    """A reader sees the old file or the new one, never half of one (iga's one atomic writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


# ---------------------------------------------------------------------------------------------------------- formatting


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _num(x: Any) -> str:
    if isinstance(x, str):
        return x
    v = _float(x)
    return NA if math.isnan(v) else f"{v:.4g}"


def _pct(x: Any) -> str:
    v = _float(x)
    return NA if math.isnan(v) else f"{100.0 * v:.1f} %"


def _ci(ci: Any) -> str:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return NA
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


def _mean_ci(stat: Any) -> str:
    """'mean [lo, hi]', or 'n/a' when the mean is missing (a CI without its mean says nothing useful)."""
    if not isinstance(stat, dict) or math.isnan(_float(stat.get("mean"))):
        return NA
    ci = stat.get("ci")
    return _num(stat["mean"]) + (f" {_ci(ci)}" if ci is not None else "")


def _counts(counts: dict | None) -> str:
    items = [(str(k), int(v)) for k, v in (counts or {}).items() if _float(v) > 0]
    return ", ".join(f"{k} {v}" for k, v in sorted(items)) or "none"


def _per_value(summary: dict, value: Any) -> dict:
    per = summary.get("per_value") or {}
    return per.get(value) or per.get(str(value)) or {}


def _metric_names(summary: dict) -> list[str]:
    if summary.get("metrics"):
        return [str(m) for m in summary["metrics"]]
    names: dict[str, None] = {}
    for v in summary.get("values") or []:
        names.update(dict.fromkeys(_per_value(summary, v).get("metrics") or {}))
    return list(names)


# -------------------------------------------------------------------------------------------------------------- plots


def _series(summary: dict, metric: str) -> tuple[list[float], list[float], list[float]]:
    """Mean, CI low and CI high of a metric per axis value, NaN where missing (matplotlib leaves NaN as a gap)."""
    mean, lo, hi = [], [], []
    for v in summary.get("values") or []:
        stat = ((_per_value(summary, v).get("metrics") or {}).get(metric)) or {}
        ci = stat.get("ci") if isinstance(stat.get("ci"), (list, tuple)) and len(stat["ci"]) == 2 else (None, None)
        mean.append(_float(stat.get("mean")))
        lo.append(_float(ci[0]))
        hi.append(_float(ci[1]))
    return mean, lo, hi


def _numeric_x(summary: dict) -> list[float] | None:
    """x positions of a numeric axis (steps, cfg), or None when the axis is categorical or a value is not a number."""
    if not summary.get("numeric_axis"):
        return None
    xs = [_float(v) for v in summary.get("values") or []]
    return None if any(math.isnan(x) for x in xs) else xs


def _mpl_text(text: Any) -> str:
    # a '$' in a value label would switch matplotlib into mathtext and can raise on odd input
    return str(text).replace("$", r"\$")


def _new_axes(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    # Figure without pyplot: no global backend switch and no shared state with whoever else plots in this process
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 2.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(_mpl_text(title), fontsize=9)
    ax.set_xlabel(_mpl_text(xlabel), fontsize=8)
    ax.set_ylabel(_mpl_text(ylabel), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return fig, ax


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same data, same bytes
    return buf.getvalue()


def _set_categorical_ticks(ax: Any, labels: list[str]) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([_mpl_text(v) for v in labels], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(labels) - 0.5)


def _yerr(mean: list[float], lo: list[float], hi: list[float]) -> list[list[float]]:
    """Asymmetric error-bar lengths; 0 where the CI is missing (errorbar refuses NaN lengths on some versions)."""
    below = [m - a for m, a in zip(mean, lo)]
    above = [b - m for m, b in zip(mean, hi)]
    return [[e if e > 0 else 0.0 for e in side] for side in (below, above)]  # NaN > 0 is False


def _metric_plot(summary: dict, metric: str) -> bytes:
    """Mean of one metric against the axis value with its 95 % CI as a shaded band.

    Error bars repeat the CI so that a value with missing neighbours (a one-point band is invisible) still shows it.
    """
    values = [str(v) for v in summary.get("values") or []]
    mean, lo, hi = _series(summary, metric)
    fig, ax = _new_axes(metric, str(summary.get("axis", "")), f"{metric} (mean, 95 % CI)")
    xs = _numeric_x(summary)
    if xs is not None:
        order = sorted(range(len(xs)), key=xs.__getitem__)  # a band only reads right left-to-right
        x, mean, lo, hi = ([seq[i] for i in order] for seq in (xs, mean, lo, hi))
    else:
        x = list(range(len(values)))
    ax.fill_between(x, lo, hi, alpha=0.25, linewidth=0)
    ax.errorbar(x, mean, yerr=_yerr(mean, lo, hi), fmt="o-", markersize=3, capsize=2, elinewidth=0.8)
    if xs is None:
        _set_categorical_ticks(ax, values)
    else:
        if x and min(x) > 0 and max(x) / min(x) >= 20:  # e.g. steps 1..1000: linear spacing hides the low end
            ax.set_xscale("log")
        # ticks at the swept values also keep a value whose mean is NaN inside the view
        ax.set_xticks(x, labels=[_mpl_text(values[i]) for i in order], rotation=30, ha="right")
        ax.minorticks_off()
    if all(math.isnan(v) for v in mean):
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=9)
    return _png(fig)


def _failure_stacks(summary: dict) -> dict[str, list[float]]:
    """Failure rate per value split by failure type, in percent; the parts of a bar add up to the reported rate."""
    values = list(summary.get("values") or [])
    stacks: dict[str, list[float]] = {}
    for i, v in enumerate(values):
        pv = _per_value(summary, v)
        rate = _float(pv.get("failure_rate"))
        if math.isnan(rate) or rate <= 0:
            continue
        counts = {str(k): _float(c) for k, c in (pv.get("failures") or {}).items() if _float(c) > 0}
        total = sum(counts.values())
        parts = {k: rate * c / total for k, c in counts.items()} if total > 0 else {"unspecified": rate}
        for name, part in parts.items():
            stacks.setdefault(name, [0.0] * len(values))[i] = 100.0 * part
    return dict(sorted(stacks.items()))


def _failure_plot(summary: dict) -> bytes:
    values = [str(v) for v in summary.get("values") or []]
    fig, ax = _new_axes("failure rate", str(summary.get("axis", "")), "failed points (%)")
    bottom = [0.0] * len(values)
    stacks = _failure_stacks(summary)
    for name, heights in stacks.items():
        ax.bar(range(len(values)), heights, bottom=bottom, label=_mpl_text(name))
        bottom = [b + h for b, h in zip(bottom, heights)]
    _set_categorical_ticks(ax, values)
    ax.set_ylim(0, max(5.0, max(bottom, default=0.0) * 1.15))
    if stacks:
        ax.legend(fontsize=6, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no failures", transform=ax.transAxes, ha="center", va="center", fontsize=9)
    return _png(fig)


def _plot_filename(metric: str, taken: set[str]) -> str:
    stem = "metric_" + (re.sub(r"[^A-Za-z0-9_.-]", "_", metric) or "unnamed")
    name, n = f"{stem}.png", 1
    while name in taken:  # two metric names that sanitise alike must not overwrite each other's plot
        n += 1
        name = f"{stem}_{n}.png"
    taken.add(name)
    return name


def _write_plots(run_dir: Path, summary: dict) -> list[Plot]:
    plots: list[Plot] = []
    taken = {"failure_rate.png"}
    for metric in _metric_names(summary):
        plots.append(Plot(metric, "plots/" + _plot_filename(metric, taken), _metric_plot(summary, metric)))
    plots.append(Plot("failure rate", "plots/failure_rate.png", _failure_plot(summary)))
    for plot in plots:
        _write_atomic(run_dir / plot.relpath, plot.png)
    return plots


# -------------------------------------------------------------------------------------------------------------- grids


def _image_path(run_dir: Path, rel: str) -> Path | None:
    """The image file, or None if it is absent or lies outside run_dir (rows are data, not a licence to read files)."""
    root = run_dir.resolve()
    p = (root / rel).resolve()
    return p if p.is_relative_to(root) and p.is_file() else None


def _cell(run_dir: Path, row: dict | None) -> Cell:
    if row is None:
        return Cell("empty")
    failure = str(row.get("failure") or "")
    if row.get("refused"):
        return Cell("refused", failure=failure, reason=str(row["refused"]))
    rel = str(row.get("image") or "")
    if not rel:
        return Cell("no_image", failure=failure)
    kind = "image" if _image_path(run_dir, rel) is not None else "missing"
    return Cell(kind, image=Path(rel).as_posix(), failure=failure)


def _pair(row: dict) -> tuple[str, int]:
    seed = _float(row.get("seed"))
    return str(row.get("prompt", "")), 0 if math.isnan(seed) else int(seed)


def _columns(points: list[dict], summary: dict) -> list[str]:
    """Axis values in value_order (falling back to the summary's order for rows that lack it)."""
    listed = [str(v) for v in summary.get("values") or []]
    order: dict[str, float] = {}
    for r in points:
        v = str(r.get("value", ""))
        o = _float(r.get("value_order"))
        if math.isnan(o):
            o = float(listed.index(v)) if v in listed else math.inf
        order[v] = min(order.get(v, math.inf), o)
    return sorted(order, key=lambda v: (order[v], v))


def _grid(run_dir: Path, title: str, points: list[dict], refs: dict, summary: dict) -> Grid:
    columns = _columns(points, summary)
    by_cell: dict[tuple, dict] = {}
    for r in points:
        by_cell.setdefault((_pair(r), str(r.get("value", ""))), r)  # first attempt wins; repeats are not points
    pairs = sorted({_pair(r) for r in points})
    arm = str(points[0].get("arm") or "") if points else ""
    show_ref = bool(refs)
    grid_rows = []
    for pair in pairs[:MAX_GRID_ROWS]:
        cells = [_cell(run_dir, by_cell.get((pair, v))) for v in columns]
        if show_ref:
            cells.insert(0, _cell(run_dir, refs.get((arm, pair)) or refs.get((None, pair))))
        grid_rows.append((f"{pair[0]} · seed {pair[1]}", cells))
    header = ([REFERENCE_COLUMN] if show_ref else []) + columns
    return Grid(title, header, grid_rows, max(0, len(pairs) - MAX_GRID_ROWS))


def _reference_rows(rows: list[dict]) -> dict:
    refs: dict[tuple, dict] = {}
    for r in rows:
        if r.get("role") == "reference":
            refs.setdefault((str(r.get("arm") or ""), _pair(r)), r)
            refs.setdefault((None, _pair(r)), r)  # any arm's reference for this (prompt, seed) beats none
    return refs


def _grid_section(run_dir: Path, rows: list[dict], summary: dict) -> Section:
    points = [r for r in rows if r.get("role") == "point"]
    refs = _reference_rows(rows)
    arms = sorted({str(r.get("arm") or "") for r in points})
    section = Section("Image grids")
    if not points:
        section.blocks.append(Para("No measured points."))
    elif arms == [""]:
        section.blocks.append(_grid(run_dir, "Images", points, refs, summary))
    else:
        for arm in arms:
            arm_points = [r for r in points if str(r.get("arm") or "") == arm]
            section.blocks.append(_grid(run_dir, f"Arm: {arm or '(none)'}", arm_points, refs, summary))
    return section


# ----------------------------------------------------------------------------------------------------------- sections


def _model_line(model: Any) -> str | None:
    if not isinstance(model, dict):
        return None
    parts = [str(model.get("name") or NA)]
    if model.get("path"):
        parts.append(f"path {model['path']}")
    parts.append(f"weights sha256 {model.get('weights_sha256') or NA}")
    return "Model: " + ", ".join(parts)


def _count_line(rows: list[dict]) -> str:
    points = [r for r in rows if r.get("role") == "point"]
    images = sum(1 for r in points if r.get("image"))
    refused = sum(1 for r in points if r.get("refused"))
    failures = Counter(str(r["failure"]) for r in points if r.get("failure"))
    roles = Counter(str(r.get("role", "")) for r in rows)
    return (f"Counts: {len(points)} points, {images} images, {refused} refused, "
            f"{sum(failures.values())} failures ({_counts(failures)}); "
            f"{roles.get('reference', 0)} reference images, {roles.get('repeat', 0)} repeats")


def _reference_line(summary: dict) -> str | None:
    if "reference" not in summary:
        return None
    ref = summary["reference"]
    if not isinstance(ref, dict):
        return "Reference: none"
    return (f"Reference: sampler {ref.get('sampler', NA)}, schedule {ref.get('schedule', NA)}, "
            f"steps {_num(ref.get('steps'))}")


def _overview_section(rows: list[dict], summary: dict) -> Section:
    values = ", ".join(str(v) for v in summary.get("values") or []) or "none"
    kind = "numeric" if summary.get("numeric_axis") else "categorical"
    items = [
        _model_line(summary.get("model")),
        f"Varied: {summary.get('axis', NA)} ({kind})",
        f"Values: {values}",
        _count_line(rows),
        _reference_line(summary),
        f"Created: {summary['created']}" if summary.get("created") else None,
        f"Schema: {summary['schema']}" if summary.get("schema") else None,
    ]
    section = Section("Overview", [Bullets([i for i in items if i])])
    notes = [str(n) for n in summary.get("notes") or []]
    if notes:
        section.blocks += [Para("Notes:"), Bullets(notes)]
    return section


HEADLINE_COLUMNS = [("figure", "Figure"), ("iga", "iga"), ("baseline", "baseline"),
                    ("ratio_or_difference", "ratio / difference"), ("ci95", "95 % CI"), ("note", "note")]


def _headline_section(summary: dict) -> Section | None:
    headline = summary.get("headline")
    if not isinstance(headline, dict):
        return None
    section = Section("Headline: iga vs baseline")
    table = [r for r in headline.get("table") or [] if isinstance(r, dict)]
    if table:
        rows = [[_num(r.get(key)) for key, _ in HEADLINE_COLUMNS] for r in table]
        section.blocks.append(Table([label for _, label in HEADLINE_COLUMNS], rows))
    arms = headline.get("arms")
    if isinstance(arms, dict) and arms:
        section.blocks += [Para("Arms:"), Bullets([f"{k}: {_arm_text(v)}" for k, v in arms.items()])]
    return section if section.blocks else None


def _arm_text(arm: Any) -> str:
    if isinstance(arm, dict):
        return ", ".join(f"{k}={_num(v) if not isinstance(v, (dict, list)) else v}" for k, v in arm.items())
    return _num(arm) if not isinstance(arm, list) else ", ".join(map(str, arm))


def _per_value_section(summary: dict) -> Section:
    metrics = _metric_names(summary)
    header = ["value", "n", "refused", "failure rate", "failures"] + [f"{m} mean [95 % CI]" for m in metrics]
    rows = []
    for v in summary.get("values") or []:
        pv = _per_value(summary, v)
        stats = pv.get("metrics") or {}
        rows.append([str(v), _num(pv.get("n")), _num(pv.get("refused")), _pct(pv.get("failure_rate")),
                     _counts(pv.get("failures"))] + [_mean_ci(stats.get(m)) for m in metrics])
    return Section("Per value", [Table(header, rows)])


def _stat_table(stats: dict, extra: str | None = None) -> Table:
    header = ["metric", "mean", "95 % CI"] + ([extra] if extra else [])
    rows = []
    for metric, stat in stats.items():
        stat = stat if isinstance(stat, dict) else {}
        rows.append([str(metric), _num(stat.get("mean")), _ci(stat.get("ci"))]
                    + ([_num(stat.get(extra))] if extra else []))
    return Table(header, rows)


def _variance_section(summary: dict) -> Section | None:
    variance = summary.get("variance")
    if not isinstance(variance, dict) or not variance:
        return None
    text = "How much each metric varies across the axis values within a (prompt, seed) group, averaged over groups."
    return Section("Variance across the axis", [Para(text), _stat_table(variance, extra="n_groups")])


def _repeatability_section(summary: dict) -> Section | None:
    rep = summary.get("repeatability")
    if not isinstance(rep, dict):
        return None
    items = [f"Bit-identical repeats: {_pct(rep.get('bit_identical_rate'))}",
             f"Repeats: {_num(rep.get('n_repeats'))}"]
    section = Section("Repeatability", [Bullets(items)])
    tau = rep.get("kendall_tau")
    if isinstance(tau, dict) and tau:
        section.blocks += [Para("Kendall tau between the value rankings of the run and its repeat:"),
                           _stat_table(tau)]
    return section


def _build_sections(run_dir: Path, rows: list[dict], summary: dict, plots: list[Plot]) -> list[Section]:
    sections = [
        _overview_section(rows, summary),
        _headline_section(summary),
        _per_value_section(summary),
        _variance_section(summary),
        _repeatability_section(summary),
        Section("Plots", list(plots)),
        _grid_section(run_dir, rows, summary),
    ]
    return [s for s in sections if s is not None]


# -------------------------------------------------------------------------------------------------------------- HTML

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; font-size: 12px; }}
th {{ background: #f3f3f3; }}
.scroll {{ overflow-x: auto; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
figcaption {{ font-size: 12px; color: #555; }}
table.grid td {{ text-align: center; width: {CELL_PX + 8}px; border: 2px solid #ddd; }}
table.grid th.pair {{ max-width: 18em; overflow-wrap: anywhere; font-weight: normal; }}
img.cell {{ width: {CELL_PX}px; height: {CELL_PX}px; object-fit: contain; image-rendering: pixelated; display: block;
            margin: auto; }}
td.fail {{ border: 3px solid #d00; }}
.tag {{ color: #d00; font-size: 11px; font-weight: bold; }}
.small {{ font-size: 10px; color: #555; max-width: {CELL_PX}px; overflow-wrap: anywhere; }}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


class _DataUris:
    """Image files as data URIs, each file read once (a reference image appears in many rows)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.cache: dict[str, str | None] = {}

    def get(self, rel: str) -> str | None:
        if rel not in self.cache:
            self.cache[rel] = self._load(rel)
        return self.cache[rel]

    def _load(self, rel: str) -> str | None:
        path = _image_path(self.run_dir, rel)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>\n" for row in table.rows)
    return f'<div class="scroll"><table>\n<tr>{head}</tr>\n{body}</table></div>'


def _html_cell(cell: Cell, uris: _DataUris, column: str) -> str:
    tag = f'<div class="tag">{_e(cell.failure)}</div>' if cell.failure else ""
    cls = ' class="fail"' if cell.failure else ""
    if cell.kind == "refused":
        return f'<td class="refused"><div class="small">refused: {_e(cell.reason)}</div>{tag}</td>'
    if cell.kind == "empty":
        return "<td></td>"
    if cell.kind == "no_image":
        return f'<td{cls}><div class="small">no image</div>{tag}</td>'
    uri = uris.get(cell.image) if cell.kind == "image" else None
    if uri is None:
        return f'<td{cls}><div class="small">missing</div>{tag}</td>'
    return f'<td{cls}><img class="cell" src="{uri}" alt="{_e(column)}" title="{_e(cell.image)}">{tag}</td>'


def _html_grid(grid: Grid, uris: _DataUris) -> str:
    head = "<th></th>" + "".join(f"<th>{_e(c)}</th>" for c in grid.columns)
    lines = [f"<h3>{_e(grid.title)}</h3>", '<div class="scroll"><table class="grid">', f"<tr>{head}</tr>"]
    for label, cells in grid.rows:
        tds = "".join(_html_cell(c, uris, col) for c, col in zip(cells, grid.columns))
        lines.append(f'<tr><th class="pair">{_e(label)}</th>{tds}</tr>')
    lines.append("</table></div>")
    if grid.omitted:
        lines.append(f"<p>{_e(_omitted_note(grid))}</p>")
    return "\n".join(lines)


def _omitted_note(grid: Grid) -> str:
    return f"{grid.omitted} more (prompt, seed) rows not shown (grid limited to {MAX_GRID_ROWS} rows)."


def _html_block(block: Block, uris: _DataUris) -> str:
    if isinstance(block, Para):
        return f"<p>{_e(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "".join(f"<li>{_e(i)}</li>\n" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Plot):
        return (f'<figure><img src="{_png_uri(block.png)}" alt="{_e(block.title)}">'
                f"<figcaption>{_e(block.title)}</figcaption></figure>")
    if isinstance(block, Grid):
        return _html_grid(block, uris)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _render_html(title: str, sections: Iterable[Section], run_dir: Path) -> str:
    uris = _DataUris(run_dir)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
             f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head><body>", f"<h1>{_e(title)}</h1>"]
    for section in sections:
        parts.append(f"<section><h2>{_e(section.title)}</h2>")
        parts += [_html_block(b, uris) for b in section.blocks]
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------- Markdown

# Backslash-escape what could make untrusted text into markup: links/images, raw HTML, entities, table pipes, code.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&~])")


def _md(text: Any) -> str:
    one_line = " ".join(str(text).split())  # a newline would end a table row or a list item
    return _MD_SPECIAL.sub(r"\\\1", one_line)


def _md_link(rel: str) -> str:
    return quote(rel, safe="/")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    """Cells must already be Markdown-safe."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _md_cell(cell: Cell) -> str:
    tag = f" **{_md(cell.failure)}**" if cell.failure else ""
    if cell.kind == "refused":
        return f"refused: {_md(cell.reason)}{tag}"
    if cell.kind == "empty":
        return ""
    if cell.kind == "image":
        return f"![]({_md_link(cell.image)}){tag}"
    return ("no image" if cell.kind == "no_image" else "missing") + tag


def _md_grid(grid: Grid) -> str:
    header = ["prompt · seed"] + [_md(c) for c in grid.columns]
    rows = [[_md(label)] + [_md_cell(c) for c in cells] for label, cells in grid.rows]
    text = f"### {_md(grid.title)}\n\n{_md_table(header, rows)}"
    return text + (f"\n\n{_md(_omitted_note(grid))}" if grid.omitted else "")


def _md_block(block: Block) -> str:
    if isinstance(block, Para):
        return _md(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md(i)}" for i in block.items)
    if isinstance(block, Table):
        return _md_table([_md(h) for h in block.header], [[_md(c) for c in row] for row in block.rows])
    if isinstance(block, Plot):
        return f"![{_md(block.title)}]({_md_link(block.relpath)})"
    if isinstance(block, Grid):
        return _md_grid(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _render_markdown(title: str, sections: Iterable[Section]) -> str:
    parts = [f"# {_md(title)}"]
    for section in sections:
        parts.append(f"## {_md(section.title)}")
        parts += [_md_block(b) for b in section.blocks]
    return "\n\n".join(parts) + "\n"
