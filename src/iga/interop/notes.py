"""Read the free-text "recommended settings" that model publishers write on model pages.

Civitai descriptions, Hugging Face model cards and Tensor.art pages say things like
``Sampler: DPM++ 2M Karras, Steps: 25-30, CFG: 5-7, Clip skip 2`` or ``CFG 1.5-2 / 6-8 steps / DPM++ SDE Karras``.
:func:`parse_recommended_settings` turns such text into fields a recipe can use, each with the exact phrase it came
from and a confidence (0.9 for ``Key: value``, lower for loose mentions), plus conflicts and warnings.

Sampler and schedule names go through the name table (:mod:`iga.recipe.names`), so every spelling it knows works.

Design notes:

* The text is never rewritten in a way that moves characters: a same-length working copy (lower case, full-width
  punctuation folded, markup blanked) is scanned, so every match maps straight back to the original phrase.
* Every pattern is linear (bounded repeats, no nested quantifiers) and every search window is bounded, so a 64 KB
  hostile input parses in milliseconds. Input beyond 64 KB is ignored with a warning.
* Ranges give ``{"min", "max", "default"}``; the default is the midpoint rounded half up (``25-30`` -> 28,
  ``3-6`` -> 5) unless the text states one. ``N+`` gives ``{"default": N, "min": N}``.
* Hires values are plain numbers when one value is given and the same range dict when a range is given.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from iga.recipe import names

MAX_INPUT = 64 * 1024
MAX_MESSAGES = 50
MAX_KEYS_PER_FIELD = 64
MAX_NAME_TRIES = 2000  # sampler-name look-ups per text: far above any real page, a bound for hostile ones

KEYED = 0.9  # "Key: value"
NEAR = 0.7  # a key word followed (or preceded) by its value without a colon
LOOSE = 0.6  # a bare mention in prose or a list


@dataclass(frozen=True)
class NoteField:
    field: str
    value: Any
    phrase: str
    confidence: float


@dataclass
class NotesResult:
    fields: dict[str, NoteField] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# -- the working copy ---------------------------------------------------------------------------------------------

# one character in, one character out: positions in the working copy are positions in the text
_FOLD = str.maketrans({
    "\uff1a": ":", "\uff1d": "=", "\u00d7": "x", "\u2715": "x", "\u2716": "x", "\uff5e": "~", "\u301c": "~",
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\uff0d": "-", "\u3001": ",", "\uff0c": ",", "\u3002": ".",
    "\uff08": "(", "\uff09": ")", "\uff0b": "+", "\u2265": ">", "\u00a0": " ", "\u3000": " ", "\t": " ",
    "\r": " ", "*": " ", "`": " ", "\u2022": " ", "\u00b7": " ", "\u2192": " ", "\uff5c": "|",
    **{chr(0xFF10 + i): str(i) for i in range(10)},
})

_TAG = re.compile(r"<[^<>\n]{0,200}>")  # HTML tags that model cards keep (<b>, <br>)


def _working_copy(text: str) -> str:
    w = text.translate(_FOLD)
    low = w.lower()
    if len(low) != len(w):  # a few characters lower-case to two; keep those as they are
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in w)
    return _TAG.sub(lambda m: " " * len(m.group()), low)


# -- numbers ------------------------------------------------------------------------------------------------------

_NUM = r"\d{1,4}(?:[.,]\d{1,3})?"
_RANGE = re.compile(
    rf"(?<![\w.])(?P<a>{_NUM})(?:\s{{0,3}}(?P<sep>-|~|to|up to|and|through)\s{{0,3}}(?P<b>{_NUM})(?!\d))?"
    r"(?P<open>\+|-(?![\s\d]{0,3}\d))?")
_FLOOR = re.compile(r"(?:minimum|at least|min\.?|more than|above|over|>=?|from)\s{0,3}(?:of\s{0,3})?$")
_CEIL = re.compile(r"(?:up to|at most|max(?:imum)?|below|under|less than|<=?)\s{0,3}(?:of\s{0,3})?$")
_PAREN = re.compile(r"\([^()\d\n]{0,60}\)")  # a digit-free aside between a key and its value


def _to_float(s: str, decimal_comma: bool) -> float | None:
    if "," in s:
        if not decimal_comma:
            s = s.split(",")[0]
        else:
            s = s.replace(",", ".")
    try:
        return float(s)
    except ValueError:
        return None


@dataclass
class _Num:
    lo: float
    hi: float | None  # None: a single value
    open_up: bool  # "25+"
    start: int
    end: int


def _first_number(w: str, start: int, end: int, *, decimal_comma: bool) -> _Num | None:
    """The first number or range in w[start:end], skipping digit-free asides; None if a floor or ceiling word
    ("at least 4", "up to 30") introduces it, since those bound a value rather than recommend one."""
    seg = _PAREN.sub(lambda m: " " * len(m.group()), w[start:end])
    m = _RANGE.search(seg)
    if not m:
        return None
    before = seg[:m.start()].rstrip()
    if _FLOOR.search(before[-20:]) or _CEIL.search(before[-20:]):
        return None
    return _num_from_match(m, seg, start, decimal_comma)


def _num_from_match(m: re.Match[str], seg: str, offset: int, decimal_comma: bool) -> _Num | None:
    a = _to_float(m.group("a"), decimal_comma)
    if a is None:
        return None
    b = _to_float(m.group("b"), decimal_comma) if m.group("b") else None
    if b is not None and m.group("sep") == "and" and "between" not in seg[max(0, m.start() - 30):m.start()]:
        b = None  # "2 and 4-8 steps": "and" joins a range only after "between"
    end = m.end("b") if b is not None else m.end("a")
    if m.group("open") and b is None:
        end = m.end("open")
    if b is not None:
        lo, hi = min(a, b), max(a, b)
        return _Num(lo, hi if hi != lo else None, bool(m.group("open")), offset + m.start(), offset + end)
    return _Num(a, None, bool(m.group("open")), offset + m.start(), offset + end)


_MARK = r"(?:default|best|ideal(?:ly)?|recommended|sweet spot|optimal|preferred|usually)"
_STATED = re.compile(rf"[\s,;(]{{0,4}}(?:{_MARK}\s{{0,3}}(?:is\s{{1,3}}|at\s{{1,3}})?[:=]?\s{{0,3}}(?P<a>{_NUM})"
                     rf"|(?P<b>{_NUM})\s{{0,3}}(?:is\s{{1,3}})?(?:steps?\s{{1,3}})?{_MARK})")


def _stated_default(w: str, num: _Num) -> tuple[float, int] | None:
    """A default stated right after a range: "25-30 (28 recommended)", "CFG 5-7, best 6"."""
    if num.hi is None:
        return None
    m = _STATED.match(w, num.end, min(len(w), num.end + 40))
    if not m:
        return None
    v = _to_float(m.group("a") or m.group("b"), True)
    if v is None or not (num.lo <= v <= num.hi):
        return None
    return v, m.end()


def _half_up(x: float) -> int:
    return int(x + 0.5)


def _range_value(n: _Num, *, integer: bool) -> dict[str, Any]:
    conv = (lambda v: _half_up(v)) if integer else (lambda v: round(float(v), 3))
    if n.hi is None:
        out: dict[str, Any] = {"default": conv(n.lo)}
        if n.open_up:
            out["min"] = conv(n.lo)
        return out
    mid = _half_up((n.lo + n.hi) / 2) if integer else round((n.lo + n.hi) / 2, 3)
    return {"default": mid, "min": conv(n.lo), "max": conv(n.hi)}


def _plain_or_range(n: _Num, *, integer: bool) -> Any:
    if n.hi is None:
        return _half_up(n.lo) if integer else round(float(n.lo), 3)
    return _range_value(n, integer=integer)


def _span(v: Any) -> tuple[float, float]:
    if isinstance(v, dict):
        return float(v.get("min", v["default"])), float(v.get("max", v["default"]))
    return float(v), float(v)


def _compatible(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float, dict)) and isinstance(b, (int, float, dict)) and not isinstance(a, bool):
        (a0, a1), (b0, b1) = _span(a), _span(b)
        return a0 <= b1 and b0 <= a1
    return a == b


# -- keys ---------------------------------------------------------------------------------------------------------

# order matters where two keys start at the same place: the longer, more specific one first
_KEY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("hires_steps", r"(?:hires|highres|hi-res|high-res)[\s.]{0,2}(?:fix\s{0,2})?(?:sampling\s)?steps?"
                    r"|高分迭代步数"),
    ("hires_sampler", r"hires\s{0,2}sampl(?:er|ing method)"),
    ("ignore_cfg", r"hires\s{0,2}(?:distilled\s)?cfg(?:\sscale)?|distilled\s(?:cfg|guidance)(?:\sscale)?"
                   r"|cfg\smimic|dynamic\scfg|flux\sguidance"),
    ("hires_upscaler", r"(?:hires\s{0,2})?upscaler|放大算法"),
    ("hires_scale", r"(?:hires\s{0,2})?upscale(?:\s{0,2}by)?|放大倍数"),
    ("hires_fix", r"(?:hires|highres|hi-res|high-res)[\s.]{0,2}fix|hiresfix|高分辨率修复"),
    ("denoise", r"denois(?:ing|e)(?:\s{0,2}strength)?|重绘幅度"),
    ("steps", r"(?:sampling\s|sample\s|inference\s)?steps?(?![a-z])|ステップ数?|迭代步数|步数"),
    ("sampler", r"sampling methods?(?:\sand\sschedule\stype)?|samplers?|sampling method|sample method"
                r"|サンプラー|采样方法"),
    ("schedule", r"schedul(?:er|e\stype|e)|noise schedule|调度类型|スケジューラ"),
    ("cfg", r"cfg(?!\+)(?:\s{0,2}scal(?:e|ing))?|guidance(?:\sscale)?|classifier[- ]free guidance"),
    ("clip_skip", r"clip[\s_-]?skip|clip\slast\slayers?|clip\sstop\sat\slast\slayers?"),
    ("resolution", r"resolutions?|resoution|image\ssize|size|dimensions|画像サイズ|建议分辨率|分辨率"),
    ("vae", r"vae(?![\w\-.])"),
    ("negative_prompt", r"(?:recommended\s)?(?:negative\sprompts?|negataive\sprompts?|negatives?|neg\sprompt)"
                        r"(?=\s{0,3}:)"),
    ("eta", r"eta(?=\s{0,3}[:=])"),
    ("other", r"ensd|seed|model hash|batch"),
)
# the look-ahead lets the engine skip, in one step, the many positions where no key can start
_KEY_RE = re.compile("(?=[a-z\u3040-\u30ff\u4e00-\u9fff])(?:"
                     + "|".join(f"(?P<{name}_{i}>{pat})" for i, (name, pat) in enumerate(_KEY_PATTERNS)) + ")")
_KEY_START = re.compile(r"(?<![\w\-./])")


@dataclass
class _Key:
    field: str
    start: int
    end: int
    line: int
    sep_end: int  # where the value starts (after ':' / '=' when there is one)
    keyed: bool  # a ':' or '=' follows
    index: int = 0


_SEP = re.compile(r"\s{0,3}(?:\([^()\n]{0,40}\)\s{0,3})?[:=]\s{0,3}")


def _find_keys(w: str, line_of: Any) -> list[_Key]:
    keys: list[_Key] = []
    seen: dict[str, int] = {}
    for m in _KEY_RE.finditer(w):
        s = m.start()
        if s > 0 and (w[s - 1].isalnum() or w[s - 1] in "_-./"):
            continue
        name = m.lastgroup.rsplit("_", 1)[0] if m.lastgroup else "other"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > MAX_KEYS_PER_FIELD:  # a page repeats a key a few times, never hundreds
            continue
        sep = _SEP.match(w, m.end())
        keys.append(_Key(name, s, m.end(), line_of(s), sep.end() if sep else m.end(), bool(sep)))
    return keys


# -- sampler names ------------------------------------------------------------------------------------------------

_START_PREFIXES = ("dpm", "euler", "k_", "heun", "uni", "ddim", "ddpm", "lms", "lcm", "ipndm", "deis", "res",
                   "restart", "er-sde", "er_sde", "seeds", "sa-solver", "sa_solver", "gradient", "kdpm")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9_+\-]{0,39}")
# words that may follow a sampler name without making it a longer, unknown name
_FOLLOWERS = frozenset("or and steps step sampling sampler samplers with in at for is are works work on to "
                       "recommended scheduler schedule type the a an only but also as".split())
_STOP_LABELS = frozenset("another other others any etc whatever your you the it something".split())


def _normalise_label(label: str) -> str:
    s = label.strip().lower()
    s = re.sub(r"\bancestral\b", "a", s) if "ancestral" in s and "_" not in s else s
    s = re.sub(r"^dpm\s{0,2}(\w{1,8})\s{0,2}\+\+", r"dpm++ \1", s)  # "DPM SDE++ Karras" -> "DPM++ SDE Karras"
    return s


@lru_cache(maxsize=4096)
def _resolve(label: str) -> tuple[str, str | None] | None:
    """(sampler, schedule) for a label the name table knows, else None; never pays for suggestions."""
    for cand in dict.fromkeys((label, _normalise_label(label))):
        if cand.strip():
            found = names.find_combined(cand)
            if found is not None:
                return found
    return None


@lru_cache(maxsize=1024)
def _schedule(label: str) -> str | None:
    return names.find_schedule(label)


@dataclass
class _Sampler:
    sampler: str
    schedule: str | None
    start: int
    end: int
    line: int
    key: _Key | None = None
    negated: bool = False


_CANDIDATE = re.compile(r"(?<![a-z0-9_+\-])(?:" + "|".join(re.escape(p) for p in _START_PREFIXES) + ")")
_GAP = re.compile(r"[ ()]{1,3}")
_SPACE_GAP = re.compile(r" {1,2}")
_PAREN_ALT = re.compile(r"dpm\+\+\s{0,2}\(([a-z0-9 ]{1,8}(?:/[a-z0-9 ]{1,8}){1,4})\)\s{0,2}([a-z]{0,12})")


def _scan_samplers(w: str, line_of: Any) -> tuple[list[_Sampler], list[tuple[int, int, str]]]:
    """Every sampler name in the text (longest spelling wins), and names that look like a sampler label but are
    unknown (start, end, label) - the caller decides which of those were offered *as* a sampler."""
    found: list[_Sampler] = []
    unknown: list[tuple[int, int, str]] = []
    resume = 0
    tries = 0
    for c in _CANDIDATE.finditer(w):
        start = c.start()
        if start < resume:  # inside the name just read
            continue
        if tries >= MAX_NAME_TRIES or len(found) >= MAX_KEYS_PER_FIELD * 4:
            break
        tries += 1
        after = _sampler_at(w, start, line_of, found, unknown)
        if after is not None:
            resume = after
    return found, unknown


def _sampler_at(w: str, start: int, line_of: Any, found: list[_Sampler],
                unknown: list[tuple[int, int, str]]) -> int | None:
    """Read the name starting at start into found (or unknown); where the scan resumes, or None if no name starts
    there."""
    first = _TOKEN.match(w, start)
    if first is None:
        return None
    if first.group() == "dpm++":
        alt = _PAREN_ALT.match(w, start)
        if alt:  # "Dpm++ (2M/SDE) Karras": one name per option
            found.extend(_paren_options(alt, start, line_of))
            return alt.end()
    toks = _token_run(w, first)
    hit = _longest_known(toks)
    if hit is None:
        return None
    k, (smp, sch) = hit
    if _unknown_follower(w, toks, k):
        # "Euler SMEA Dy" is not Euler: a longer name the table does not know
        end = toks[min(len(toks), 6) - 1].end()
        unknown.append((start, end, w[start:end]))
        return end
    found.append(_Sampler(smp, sch, start, toks[k - 1].end(), line_of(start)))
    return toks[k - 1].end()


def _paren_options(alt: re.Match[str], start: int, line_of: Any) -> list[_Sampler]:
    out = []
    for opt in alt.group(1).split("/"):
        r = _resolve(f"dpm++ {opt.strip()} {alt.group(2)}".strip())
        if r:
            out.append(_Sampler(r[0], r[1], start, alt.end(), line_of(start)))
    return out


def _token_run(w: str, first: re.Match[str]) -> list[re.Match[str]]:
    """The run of tokens joined only by spaces or brackets: "DPM++ 2M SDE Karras", "Euler (normal)"."""
    toks = [first]
    while len(toks) < 7:
        gap = _GAP.match(w, toks[-1].end())
        nxt = _TOKEN.match(w, gap.end()) if gap else None
        if nxt is None:
            break
        toks.append(nxt)
    return toks


def _longest_known(toks: list[re.Match[str]]) -> tuple[int, tuple[str, str | None]] | None:
    """(token count, (sampler, schedule)) for the longest leading part of the run the name table knows."""
    for k in range(min(len(toks), 6), 0, -1):
        r = _resolve(" ".join(x.group() for x in toks[:k]))
        if r:
            return k, r
    return None


def _unknown_follower(w: str, toks: list[re.Match[str]], k: int) -> bool:
    """Whether the word right after the known name makes it part of a longer name the table does not know."""
    follower = None
    if k < len(toks) and _SPACE_GAP.fullmatch(w, toks[k - 1].end(), toks[k].start()):
        follower = toks[k].group()
    return bool(follower and follower.isalpha() and follower.isascii() and follower not in _FOLLOWERS)


# -- negation -----------------------------------------------------------------------------------------------------

_CLAUSE_END = re.compile(r"[.;!?\n,。]|\)\s")
_WINDOW_END = re.compile(r"[;!?\n。]|[.,](?!\d)")
_NEG_BEFORE = re.compile(r"(?<![a-z])(?:not|no|without|avoid|never|instead of|isn't|aren't|don't|doesn't|"
                         r"do not|does not|rather than)(?![a-z])|n't(?![a-z])")
_NEG_AFTER = re.compile(r"不安定|非推奨|unstable|not recommended|doesn't work|does not work|don't work|is bad|"
                        r"breaks|won't work")


def _negated(w: str, start: int, end: int) -> bool:
    lo = max(0, start - 60)
    before = w[lo:start]
    cut = max((m.end() for m in _CLAUSE_END.finditer(before)), default=0)
    if _NEG_BEFORE.search(before[cut:]):
        return True
    after = w[end:end + 40]
    m = _CLAUSE_END.search(after)
    return bool(_NEG_AFTER.search(after[:m.start()] if m else after))


# -- the parser ---------------------------------------------------------------------------------------------------

@dataclass
class _Mention:
    field: str
    value: Any
    start: int
    end: int
    confidence: float


_RES = re.compile(r"(?<![\w.])(\d{3,4})\s{0,2}[x*]\s{0,2}(\d{3,4})(?!\d)")
_HIRES_WORD = re.compile(r"hires|highres|hi-res|high-res|upscal|高分|放大")
_PRED_V = re.compile(r"(?<![a-z])(?:v[-_ ]?pred(?:iction)?|v[-_ ]param(?:eteri[sz]ation)?|vprediction)")
_PRED_EPS = re.compile(r"(?<![a-z])(?:eps(?:ilon)?(?:[-_ ]?pred(?:iction)?)?)(?![a-z])")
_ZTSNR = re.compile(r"(?<![a-z])(?:ztsnr|zsnr|zero[-_ ]?terminal[-_ ]?snr)")
_BAKED = re.compile(
    r"baked[-_ ]?(?:in\s)?\s{0,2}vae|vae\s{1,3}(?:is\s{1,3})?(?:already\s{1,3})?(?:baked|included|built[- ]in|"
    r"integrated|embedded|not needed|not required)|no need (?:for|to use) (?:an? )?(?:external |separate )?vae|"
    r"vae (?:and [a-z0-9]{1,10} )?(?:are |is )?included|includes? (?:the |a )?vae|vae:\s{0,2}(?:baked|included|"
    r"built[- ]in|embedded)")
_UPSCALER_TOKEN = re.compile(r"(?<![\w-])(?:\d{1,2}x[-_][a-z0-9][\w.+\-]{1,40}|r-?esrgan[\w.+\- ]{0,20}|"
                             r"swin[il]r_4x|esrgan_4x|ldsr|lanczos|latent(?: \([a-z ]{1,30}\))?)")
_VAE_VALUE = re.compile(r"[\"']([^\"'\n]{2,80})[\"']|(https?://[^\s)\]>\"']{4,200})|([\w][\w.\-/]{2,120})")
_VAE_FILLER = frozenset("is the a an use using with recommended to file model and or any not needed from for of "
                        "vae it this that i mostly suitable are works work should".split())


def parse_recommended_settings(text: str) -> NotesResult:
    """Fields, conflicts and warnings from free "recommended settings" text. Never raises."""
    try:
        return _parse(text if isinstance(text, str) else str(text))
    except Exception as exc:  # noqa: BLE001 - a model page must never break a draft; say what happened instead
        return NotesResult(warnings=[f"notes could not be parsed ({type(exc).__name__}: {exc})"])


def _parse(text: str) -> NotesResult:
    result = NotesResult()
    if len(text) > MAX_INPUT:
        result.warnings.append(f"notes are {len(text)} characters long; only the first {MAX_INPUT} were read")
        text = text[:MAX_INPUT]
    if not text.strip():
        return result
    st = _State.read(text, result)
    # negative prompts first: their text must not be read as settings
    _find_negative_prompts(st)
    st.index_keys()
    st.samplers, st.unknown = _scan_samplers(st.w, st.line_of)
    for s in st.samplers:
        s.key = st.owning_key(s.start)
        s.negated = _negated(st.w, s.start, s.end)
    _find_numbers(st)
    _find_hires_text(st)
    _find_samplers(st)
    _drop_numbers_of_alternatives(st)
    _find_unknown_samplers(st)
    _find_unknown_sampler_values(st)
    _find_schedules(st)
    _find_list_item_schedule(st)
    _find_resolution(st)
    _find_vae(st)
    _find_prediction(st)
    _find_zero_terminal_snr(st)
    _find_hires(st)
    _settle(text, st.mentions, result)
    _cap_messages(result)
    return result


@dataclass
class _State:
    """What the finders share: the text, its working copy, the keys and sampler names found in it, and the
    mentions gathered so far. The finders run in a fixed order; later ones read what earlier ones left here."""

    text: str
    w: str  # the working copy; negative prompts are blanked out of it once read
    line_starts: list[int]
    keys: list[_Key]
    result: NotesResult
    hires_seen: bool  # any hires word anywhere: a bare "denoise" then belongs to hires fix
    mentions: list[_Mention] = field(default_factory=list)
    hires: dict[str, _Mention] = field(default_factory=dict)
    key_starts: list[int] = field(default_factory=list)
    first_hires: list[int] = field(default_factory=list)  # per line: where its first hires word starts
    samplers: list[_Sampler] = field(default_factory=list)
    unknown: list[tuple[int, int, str]] = field(default_factory=list)
    primary: _Sampler | None = None
    alt_lines: dict[int, int] = field(default_factory=dict)  # line -> position of its first alternative sampler
    primary_lines: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, text: str, result: NotesResult) -> _State:
        w = _working_copy(text)
        st = cls(text, w, [0] + [m.end() for m in re.finditer("\n", w)], [], result, bool(_HIRES_WORD.search(w)))
        st.keys = _find_keys(w, st.line_of)
        return st

    def index_keys(self) -> None:
        """Number the keys left after blanking and note each line's first hires word (on the blanked copy)."""
        for i, k in enumerate(self.keys):
            k.index = i
        self.key_starts = [k.start for k in self.keys]
        self.first_hires = [len(self.w) + 1] * len(self.line_starts)
        for hm in _HIRES_WORD.finditer(self.w):
            ln = self.line_of(hm.start())
            if self.first_hires[ln] > hm.start():
                self.first_hires[ln] = hm.start()

    def line_of(self, pos: int) -> int:
        return bisect_right(self.line_starts, pos) - 1

    def line_end(self, pos: int, cap: int = 4096) -> int:
        # bounded, so a 64 KB single line costs no more than a short one
        e = self.w.find("\n", pos, pos + cap)
        return min(len(self.w), pos + cap) if e < 0 else e

    def value_window(self, k: _Key, limit: int = 120) -> tuple[int, int]:
        # a key alone on its line ("## Recommended VAE", "Recommended Negative Prompt:") takes the next line as value
        w = self.w
        le = self.line_end(k.sep_end)
        rest = w[k.sep_end:le]
        if not rest.strip(" :-#") and le < len(w):
            nxt = le + 1
            while nxt < len(w) and w[nxt] == "\n":
                nxt += 1
            return nxt, min(self.line_end(nxt), nxt + limit)
        return k.sep_end, min(le, k.sep_end + limit)

    def near_window(self, k: _Key, limit: int) -> tuple[int, int]:
        """The rest of the key's line, at most limit characters: where a value without a colon is looked for."""
        return k.end, min(self.line_end(k.end), k.end + limit)

    def next_key_start(self, k: _Key, stop: int) -> int:
        for other in self.keys[k.index + 1:k.index + 64]:
            if other.start >= stop:
                break
            if other.start >= k.end and other.field != k.field:
                if other.field == "hires_fix" and k.field.startswith("hires"):
                    continue
                return other.start
        return stop

    def after_hires_word(self, pos: int) -> bool:
        """Values after a hires word on their line belong to hires fix."""
        return self.first_hires[self.line_of(pos)] < pos

    def owning_key(self, pos: int) -> _Key | None:
        """The key that introduces a value at pos: the nearest key before it on its line, or a key alone on the
        line before."""
        i = bisect_left(self.key_starts, pos) - 1
        if i < 0:
            return None
        k = self.keys[i]
        ln = self.line_of(pos)
        if k.line == ln or (k.line == ln - 1 and not self.w[k.sep_end:self.line_end(k.sep_end)].strip(" :-#")):
            return k
        return None

    def belongs_to_alternative(self, pos: int) -> bool:
        """Whether a value at pos goes with an alternative sampler rather than the primary one."""
        ln = self.line_of(pos)
        if ln not in self.alt_lines:
            return False
        if ln not in self.primary_lines:
            return True
        ls = self.line_starts[ln]
        w = self.w
        seg_start = max(w.rfind(",", ls, pos), w.rfind(";", ls, pos), w.rfind("|", ls, pos))
        return self.alt_lines[ln] < pos and seg_start < self.alt_lines[ln]


def _cap_messages(result: NotesResult) -> None:
    for name in ("conflicts", "warnings"):
        items = getattr(result, name)
        if len(items) > MAX_MESSAGES:
            setattr(result, name, items[:MAX_MESSAGES] + [f"... and {len(items) - MAX_MESSAGES} more"])


# -- negative prompts ---------------------------------------------------------------------------------------------

def _find_negative_prompts(st: _State) -> None:
    """Take each keyed negative prompt verbatim, then blank it out of the working copy and drop the keys inside
    it, so words in the prompt ("bad hands, steps") are not read as settings."""
    blank: list[tuple[int, int]] = []
    for k in st.keys:
        if k.field != "negative_prompt" or not k.keyed:
            continue
        a, b = st.value_window(k, limit=4000)
        raw = st.text[a:b].strip().strip("'\"").strip()
        raw = raw.rstrip(" ,;").strip("'\"").strip().rstrip(" ,")
        if raw:
            st.mentions.append(_Mention("negative_prompt", raw, k.start, b, KEYED))
            blank.append((a, b))
    if blank:
        chars = list(st.w)
        for a, b in blank:
            chars[a:b] = " " * (b - a)  # same length, so positions still map to the text
        st.w = "".join(chars)
        st.keys = [k for k in st.keys if not _inside(k.start, blank)]


# -- numbers after (or before) a key ------------------------------------------------------------------------------

_NUMERIC_FIELDS = ("steps", "cfg", "clip_skip", "denoise", "eta", "hires_steps", "hires_scale")


def _find_numbers(st: _State) -> None:
    for k in st.keys:
        if k.field in _NUMERIC_FIELDS:
            found = _number_for_key(st, k)
            if found is not None:
                _record_number(st, k, found[0], found[1])


def _number_for_key(st: _State, k: _Key) -> tuple[_Num, int] | None:
    """The number a key gives and where its phrase starts, or None."""
    f = k.field
    a, b = st.value_window(k) if k.keyed else st.near_window(k, 45)
    b = st.next_key_start(k, b)
    if not k.keyed:  # a loose mention's value ends with its clause
        clause = _WINDOW_END.search(st.w, a, b) if b > a else None
        if clause:
            b = clause.start()
    if f in ("steps", "hires_steps", "denoise") and not k.keyed:
        num = _number_before(st.w, k)
        if num:
            return num, num.start
    if k.keyed and f == "hires_scale" and st.w[a:a + 1] == "x":
        a += 1  # "Upscale: x2"
    num = _first_number(st.w, a, b, decimal_comma=f in ("cfg", "denoise", "eta", "hires_scale"))
    return (num, k.start) if num is not None else None


def _number_before(w: str, k: _Key) -> _Num | None:
    """"20~30 steps", "4-8 sampling steps", "0.2 up to 0.4 denoising": the number comes right before the key."""
    lo = max(0, k.start - 30)
    back = w[lo:k.start]
    bm = None
    for bm in _RANGE.finditer(back):
        pass
    if bm and not back[bm.end():].strip() and not _FLOOR.search(back[:bm.start()].rstrip()[-20:]):
        return _num_from_match(bm, back, lo, k.field not in ("steps", "hires_steps"))
    return None


def _record_number(st: _State, k: _Key, num: _Num, start: int) -> None:
    """Check a key's number against what the field allows and add it as a mention (or a hires value)."""
    f = k.field
    on_hires_line = st.after_hires_word(k.start)
    if f == "steps" and on_hires_line:
        f = "hires_steps"
    if f == "cfg" and on_hires_line:
        return  # a hires cfg is not the main cfg
    if f in ("steps", "hires_steps"):
        if not (1 <= num.lo <= 1000) or (num.hi is not None and num.hi > 1000) or num.lo != int(num.lo):
            return
    conf = KEYED if k.keyed else NEAR
    end = max(num.end, k.end)
    if f in ("steps", "cfg"):
        stated = _stated_default(st.w, num)
        if stated is not None:
            end = max(end, stated[1])
        _record_steps_or_cfg(st, f, num, stated, start, end, conf)
    else:
        _record_other_number(st, f, k, num, start, end, conf)


def _record_steps_or_cfg(st: _State, f: str, num: _Num, stated: tuple[float, int] | None,
                         start: int, end: int, conf: float) -> None:
    if f == "steps":
        v = _range_value(num, integer=True)
        if stated is not None:
            v["default"] = _half_up(stated[0])
        st.mentions.append(_Mention("steps", v, start, end, conf))
    elif 0 <= num.lo <= 100:
        v = _range_value(num, integer=False)
        if stated is not None:
            v["default"] = round(stated[0], 3)
        st.mentions.append(_Mention("cfg", v, start, end, conf))


def _record_other_number(st: _State, f: str, k: _Key, num: _Num, start: int, end: int, conf: float) -> None:
    if f == "hires_steps":
        _put(st.hires, "steps", _plain_or_range(num, integer=True), start, end, conf)
    elif f == "clip_skip":
        if 1 <= abs(num.lo) <= 12 and num.lo == int(num.lo):
            st.mentions.append(_Mention("clip_skip", int(abs(num.lo)), start, end, conf))
    elif f == "denoise":
        if 0 <= num.lo <= 1 and (num.hi is None or num.hi <= 1):
            v = _plain_or_range(num, integer=False)
            if st.hires_seen:
                _put(st.hires, "denoise", v, start, end, conf)
            else:
                st.mentions.append(_Mention("denoise", v, start, end, conf))
    elif f == "eta" and k.keyed:  # "eta" is a common word; only "eta: 0.5" counts
        st.mentions.append(_Mention("eta", round(num.lo, 3), start, end, conf))
    elif f == "hires_scale":
        if 1 <= num.lo <= 8 and (num.hi is None or num.hi <= 8):
            _put(st.hires, "scale", _plain_or_range(num, integer=False), start, end, conf)


# -- hires text values --------------------------------------------------------------------------------------------

def _find_hires_text(st: _State) -> None:
    for k in st.keys:
        if k.field in ("hires_upscaler", "hires_fix") and k.keyed:
            a, b = st.value_window(k)
            val = _cut_value(st.text, st.w, a, b)
            factor = re.fullmatch(r"x?\s{0,2}(\d{1,2}(?:\.\d{1,3})?)\s{0,2}x?", val.lower()) if val else None
            if factor:  # "Hires fix: 1.5x" names the scale, not an upscaler
                if 1 <= float(factor.group(1)) <= 8:
                    _put(st.hires, "scale", float(factor.group(1)), k.start, a + len(val), NEAR)
            elif val and not re.match(r"^[\d.\s]+$", val):
                _put(st.hires, "upscaler", val, k.start, a + len(val), KEYED)
    if "upscaler" not in st.hires:
        _find_loose_upscaler(st)


def _find_loose_upscaler(st: _State) -> None:
    """An upscaler named without a key ("hires fix with 4x-UltraSharp"): the first one after a hires word."""
    for m in _UPSCALER_TOKEN.finditer(st.w):
        if st.after_hires_word(m.start()):
            val = st.text[m.start():m.end()].strip(" ,.")
            _put(st.hires, "upscaler", val, m.start(), m.end(), LOOSE)
            break


# -- samplers: the primary, its alternatives, conflicts -----------------------------------------------------------

def _find_samplers(st: _State) -> None:
    live = [s for s in st.samplers if not s.negated]
    hires_samplers = [s for s in live if s.key is not None and s.key.field == "hires_sampler"]
    if hires_samplers:
        s = hires_samplers[0]
        _put(st.hires, "sampler", s.sampler, s.start, s.end, KEYED)
    main = [s for s in live if not (s.key is not None and s.key.field.startswith("hires"))]
    if main:
        primary = _primary_sampler(main)
        st.primary = primary
        alternatives, first_alt = _sort_alternatives(st, main, primary)
        _record_samplers(st, primary, alternatives, first_alt)
    st.primary_lines = {s.line for s in main if st.primary is not None and s.sampler == st.primary.sampler}


def _primary_sampler(main: list[_Sampler]) -> _Sampler:
    """The first sampler named, keyed or not."""
    keyed_main = [s for s in main if s.key is not None and s.key.field == "sampler"]
    return keyed_main[0] if keyed_main and keyed_main[0].start == main[0].start else main[0]


def _sort_alternatives(st: _State, main: list[_Sampler], primary: _Sampler) -> tuple[list[str], _Sampler | None]:
    """The other samplers: alternatives (noting their lines in st.alt_lines), or conflicts when a second "Sampler:"
    key outside the primary's list names a different one. Returns the alternatives and the first of them."""
    run = _sampler_run(main, st.w, st.line_starts, st.line_of, primary)
    alternatives: list[str] = []
    first_alt: _Sampler | None = None
    for s in main:
        if s is primary or s.sampler == primary.sampler:
            continue
        distinct_keys = (s.key is not None and primary.key is not None and s.key.field == "sampler"
                         and primary.key.field == "sampler" and s.key.start != primary.key.start)
        if distinct_keys and s.line not in run:
            st.result.conflicts.append(
                f"sampler: {st.text[primary.start:primary.end]!r} and {st.text[s.start:s.end]!r} are both given "
                f"as the sampler; using {primary.sampler!r}")
            continue
        if s.sampler not in alternatives:
            alternatives.append(s.sampler)
            first_alt = first_alt or s
        if s.line not in st.alt_lines:
            st.alt_lines[s.line] = s.start
    return alternatives, first_alt


def _record_samplers(st: _State, primary: _Sampler, alternatives: list[str], first_alt: _Sampler | None) -> None:
    conf = KEYED if primary.key is not None and primary.key.field == "sampler" else LOOSE
    p_phrase = (primary.key.start if conf == KEYED and primary.key is not None else primary.start)
    st.mentions.append(_Mention("sampler", primary.sampler, p_phrase, primary.end, conf))
    if primary.schedule:
        st.mentions.append(_Mention("schedule", primary.schedule, primary.start, primary.end, conf))
    if alternatives and first_alt is not None:
        st.mentions.append(_Mention("samplers_also", alternatives, first_alt.start, first_alt.end, conf))


def _drop_numbers_of_alternatives(st: _State) -> None:
    """"Euler a: 30 steps / DPM++ 2M: 20 steps": the steps and cfg given with an alternative are not the primary's."""
    st.mentions = [m for m in st.mentions
                   if m.field not in ("steps", "cfg") or not st.belongs_to_alternative(m.start)]


def _find_unknown_samplers(st: _State) -> None:
    """An unknown name offered as the sampler is kept as text, with a warning (and suggestions when there are)."""
    for a, b, _label in st.unknown:
        k = st.owning_key(a)
        if k is not None and k.field == "sampler" and not _negated(st.w, a, b):
            raw = st.text[a:b].strip()
            st.result.warnings.append(f"unknown sampler {raw!r} kept as text{_suggestions(raw)}")
            if st.primary is None:
                st.mentions.append(_Mention("sampler", raw, k.start, b, 0.5))
                st.primary = _Sampler(raw, None, a, b, st.line_of(a), k)
            break


def _suggestions(raw: str) -> str:
    try:
        names.split_combined(raw)
    except names.UnknownNameError as exc:
        return f" (close: {', '.join(exc.suggestions)})" if exc.suggestions else ""
    except ValueError:
        pass
    return ""


def _find_unknown_sampler_values(st: _State) -> None:
    """A "Sampler:" key whose value holds no name the scan saw: its first word-like item is kept as text."""
    owners_of_unknown = {id(st.owning_key(a)) for a, _, _ in st.unknown}
    owners_of_known = {id(s.key) for s in st.samplers}
    for k in st.keys:
        if k.field == "sampler" and k.keyed and id(k) not in owners_of_known and id(k) not in owners_of_unknown:
            a, b = st.value_window(k, 60)
            raw = _cut_value(st.text, st.w, a, st.next_key_start(k, b))
            first = re.split(r"\s(?:or|and)\s|/", raw)[0].strip(" .:") if raw else ""
            if first and first[0].isalpha() and first.lower() not in _STOP_LABELS and len(first.split()) <= 5:
                st.result.warnings.append(f"unknown sampler {first!r} kept as text")
                if st.primary is None:
                    st.mentions.append(_Mention("sampler", first, k.start, a + len(raw), 0.5))
                    st.primary = _Sampler(first, None, a, b, k.line, k)


# -- schedules given on their own ---------------------------------------------------------------------------------

def _find_schedules(st: _State) -> None:
    for k in st.keys:
        if k.field == "schedule":
            a, b = st.value_window(k, 40) if k.keyed else st.near_window(k, 40)
            raw = _cut_value(st.text, st.w, a, b)
            sch = _schedule(raw) if raw else None
            if sch is None and raw:  # "Karras (recommended)": the first few words
                sch = next((_schedule(" ".join(raw.split()[:n])) for n in (3, 2, 1)
                            if _schedule(" ".join(raw.split()[:n]))), None)
            if sch:
                st.mentions.append(_Mention("schedule", sch, k.start, a + len(raw), KEYED if k.keyed else NEAR))


def _find_list_item_schedule(st: _State) -> None:
    """"DPM++ 2M, SGM Uniform" / "Euler, Simple": a schedule as its own list item next to the sampler."""
    primary = st.primary
    if primary is None or any(m.field == "schedule" for m in st.mentions):
        return
    last = min(primary.line + 3, len(st.line_starts) - 1)
    stop = st.line_starts[last] if last > primary.line else len(st.w)
    for seg in _LIST_ITEM.finditer(st.w, st.line_starts[primary.line], max(stop, st.line_starts[primary.line])):
        if st.belongs_to_alternative(seg.start()):
            continue
        label = seg.group().strip(" -#>.:")
        if not label or _resolve(label):
            continue
        sch = _schedule(label)
        if sch and seg.start() > primary.start:
            st.mentions.append(_Mention("schedule", sch, seg.start(), seg.end(), LOOSE))
            break


# -- resolution, VAE, prediction type -----------------------------------------------------------------------------

def _find_resolution(st: _State) -> None:
    """Every plausible WxH in the text, in order; keyed when one sits on (or under) a resolution key's line."""
    res: list[str] = []
    res_key_lines = {k.line for k in st.keys if k.field == "resolution"}
    res_first: tuple[int, int] | None = None
    res_keyed = False
    for m in _RES.finditer(st.w):
        wd, ht = int(m.group(1)), int(m.group(2))
        if not (256 <= wd <= 8192 and 256 <= ht <= 8192 and wd % 8 == 0 and ht % 8 == 0):
            continue
        val = f"{wd}x{ht}"
        if val not in res:
            res.append(val)
        if res_first is None:
            res_first = (m.start(), m.end())
        ln = st.line_of(m.start())
        res_keyed = res_keyed or ln in res_key_lines or ln - 1 in res_key_lines
    if res and res_first:
        st.mentions.append(_Mention("resolution", res, res_first[0], res_first[1], KEYED if res_keyed else LOOSE))


def _find_vae(st: _State) -> None:
    """"VAE baked in" anywhere wins; otherwise the first file, repo or URL a (non-negated) VAE key names."""
    w = st.w
    bm = _BAKED.search(w)
    if bm:
        st.mentions.append(_Mention("vae", "baked", bm.start(), bm.end(), NEAR))
        return
    for k in st.keys:
        if k.field != "vae" or _negated(w, k.start, k.end):
            continue
        a, b = st.value_window(k, 220) if k.keyed or not w[k.end:st.line_end(k.end)].strip() else \
            st.near_window(k, 220)
        val = _vae_value(st.text, w, a, b)
        if val:
            st.mentions.append(_Mention("vae", val[0], k.start, val[1], KEYED if k.keyed else NEAR))
            break


def _find_prediction(st: _State) -> None:
    for pattern, value in ((_PRED_V, "v"), (_PRED_EPS, "eps")):
        for m in pattern.finditer(st.w):
            if not _negated(st.w, m.start(), m.end()):
                st.mentions.append(_Mention("prediction_type", value, m.start(), m.end(), NEAR))
                break


def _find_zero_terminal_snr(st: _State) -> None:
    w = st.w
    for m in _ZTSNR.finditer(w):
        if not _negated(w, m.start(), m.end()) and not re.match(r"\W{0,4}(?:false|off|no)\b", w[m.end():m.end() + 10]):
            st.mentions.append(_Mention("zero_terminal_snr", True, m.start(), m.end(), NEAR))
            break


# -- hires --------------------------------------------------------------------------------------------------------

_HIRES_FIX = re.compile(r"(?:hires|highres|hi-res|high-res)[\s.]{0,2}fix|hiresfix|高分辨率修复")


def _find_hires(st: _State) -> None:
    """One "hires" mention holding every hires value found; a bare "hires fix" gives an empty one."""
    hires = st.hires
    if hires:
        value = {k: m.value for k, m in hires.items()}
        first = min(hires.values(), key=lambda m: m.start)
        st.mentions.append(_Mention("hires", value, first.start, first.end, max(m.confidence for m in hires.values())))
        return
    hm = _HIRES_FIX.search(st.w)
    if hm is not None:
        st.mentions.append(_Mention("hires", {}, hm.start(), hm.end(), LOOSE))


# -- small helpers the finders share ------------------------------------------------------------------------------

def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    i = bisect_right(spans, (pos, len(spans) + 1 << 40)) - 1
    return i >= 0 and spans[i][0] <= pos < spans[i][1]


_LIST_ITEM = re.compile(r"[^,;|/+\n]{1,40}")


def _put(hires: dict[str, _Mention], key: str, value: Any, start: int, end: int, conf: float) -> None:
    old = hires.get(key)
    if old is None or conf > old.confidence:
        hires[key] = _Mention(key, value, start, end, conf)


def _cut_value(text: str, w: str, a: int, b: int) -> str:
    """A text value (an upscaler, a schedule) up to the next list separator, in the original spelling."""
    m = re.compile(r",|;|\||\s/\s|\s(?:with|at|or)\s|\n").search(w, a, b)
    end = m.start() if m else b
    val = text[a:end].strip()
    val = re.sub(r"\s{0,2}\([^()]{0,40}[^\x00-\x7f][^()]{0,40}\)$", "", val)  # a note in another language
    val = re.sub(r"(?i)\s+upscaler$", "", val).strip(" .'\"")
    if val.count("(") > val.count(")"):
        val = val[:val.rfind("(")].strip()
    return val


def _vae_value(text: str, w: str, a: int, b: int) -> tuple[str, int] | None:
    seg = _PAREN.sub(lambda m: " " * len(m.group()), w[a:b])
    for m in _VAE_VALUE.finditer(seg):
        if m.group(1):
            return text[a + m.start(1):a + m.end(1)].strip(), a + m.end()
        if m.group(2):
            url = text[a + m.start(2):a + m.end(2)].rstrip(".,")
            hf = re.match(r"https?://(?:www\.)?huggingface\.co/([\w.\-]+/[\w.\-]+)", url, re.I)
            return (hf.group(1) if hf else url), a + m.end()
        tok = m.group(3).strip(".-/")
        if tok in _VAE_FILLER:
            continue
        if re.search(r"[\d_\-.]", tok) and len(tok) >= 3:
            return text[a + m.start(3):a + m.start(3) + len(tok)], a + m.start(3) + len(tok)
        if len(seg[:m.start()].split()) > 6:
            break
    return None


def _sampler_run(main: list[_Sampler], w: str, line_starts: list[int], line_of: Any, primary: _Sampler) -> set[int]:
    """The lines of the list the primary sampler heads: consecutive lines (blank lines allowed) that each name a
    sampler. Samplers given on those lines are alternatives; a sampler keyed again elsewhere is a conflict."""
    with_sampler = {s.line for s in main}
    run = {primary.line}
    ln = primary.line + 1
    last = len(line_starts) - 1
    while ln <= last:
        start = line_starts[ln]
        end = line_starts[ln + 1] - 1 if ln < last else len(w)
        if ln in with_sampler:
            run.add(ln)
        elif w[start:end].strip():
            break
        ln += 1
    return run


def _settle(text: str, mentions: list[_Mention], result: NotesResult) -> None:
    """One value per field: the surest, then the earliest; sure disagreements are conflicts."""
    by_field: dict[str, list[_Mention]] = {}
    for m in mentions:
        by_field.setdefault(m.field, []).append(m)
    for fld, items in by_field.items():
        best = sorted(items, key=lambda m: (-m.confidence, m.start))[0]
        for other in items:
            if other is best or other.confidence < KEYED or best.confidence < KEYED:
                continue
            if fld in ("samplers_also", "resolution", "hires", "negative_prompt"):
                continue
            if not _compatible(best.value, other.value):
                result.conflicts.append(f"{fld}: {text[best.start:best.end].strip()!r} and "
                                        f"{text[other.start:other.end].strip()!r} disagree; using {best.value!r}")
        phrase = text[best.start:best.end].strip() or text[best.start:best.end]
        result.fields[fld] = NoteField(fld, best.value, phrase, best.confidence)
