"""The v1g data format: the one home for reading, expanding, re-keying and writing the rows v1 is trained on.

A **published row** (``kjunh/v1g``, "formatted like LLaVA-NeXT-Data"; what ``export hf`` writes)::

    id             "6205"                       numeric string (the older prepare_data.py calls int() on it)
    image          {"bytes": b"...", "path": None}   HF Image struct, embedded JPEG/PNG
    conversations  [{"from": "human", "value": "<image>\\n" + user text},
                    {"from": "gpt",   "value": 'reasoning … detect(query="red block", objects=["<obj1>"]) … <obj1> …'}]
    regions        '{"<obj1>": [198, 412, 405, 456], ...}'   JSON *string*, original-image pixels, ints or floats
    image_size     [640, 480]                   every size computation of the training code uses this column
    num_tokens     503                          copied along by prepare_data.py, read by no loader

How the official training code (``jun297/v1`` ``dataset.py`` + ``v1/processor.py``) makes training text of it,
each step a function here:

1. :func:`parse_row`: exactly a human turn starting with ``"<image>\\n"`` and a gpt turn; the user text is the rest
   of the human value; ``regions`` keeps its key order and its numbers as written (int or float).
2. :class:`~v1core.geometry.TrainingGeometry`: the 672-px rescale, the processor's grid, box text and copy ids.
3. :func:`expand_keys`: for each regions key in order, the key must occur in the chat text (else
   :class:`RegionKeyError`, the reference's AssertionError), and **every** occurrence, in the human turn and
   outside ``detect(...)`` too, becomes ``<region>[box text]<|copy_i|>…</region>``. Keys include their ``>`` so
   ``<obj1>`` never touches ``<obj10>``; an ``<objN>`` that regions lack stays literal text.

And back, for exports: :func:`rekey` turns a trace's output text, where each region is hard-coded markup
(``<obj1><region>[…]<|copy_k|>…</region>`` as imported, or a live model's bare ``<region>…</region>``), into
``<objN>`` keys plus a regions dict. Every occurrence of a region is re-keyed, so an imported published row
re-exports with its id, regions (numbers and their int/float types) and text unchanged (:func:`trace_from_row`
-> :func:`row_from_trace`), and a corrected region changes every occurrence of its key.

The question. At inference v1 Studio appends :data:`PAPER_PROMPT_SUFFIX` to the question (the reasoning
instruction of the paper's demo); :func:`user_text` is the one place that builds the user turn from a question,
for the processor and for exports alike, and :func:`split_user_text` takes a user turn apart again. Imported
rows keep their user text exactly (published rows carry no suffix); live traces export the prompt they were
decoded with.

No Streamlit, no SQL; only the standard library, numpy (via geometry) and, for :func:`arrow_schema`, pyarrow.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .geometry import Number, PatchGrid, TrainingGeometry
from .copy_tokens import COPY_RE, COPY_TOKEN_START, copy_token
from .trace import DETECT_RE, REGION_RE, Step, Trace, find_revisits

__all__ = [
    "IMAGE_PLACEHOLDER",
    "PAPER_PROMPT_SUFFIX",
    "V1G_COPY_TOKEN_START",
    "V1G_MODEL_ID",
    "AddedRegion",
    "RegionEdit",
    "RegionKeyError",
    "RegionSpan",
    "Rekeyed",
    "V1GFormatError",
    "V1GRow",
    "arrow_schema",
    "dumps_regions",
    "expand_keys",
    "find_regions",
    "numeric_id",
    "parse_regions",
    "parse_row",
    "question_of",
    "region_markup",
    "rekey",
    "row_from_trace",
    "split_user_text",
    "steps_from_text",
    "trace_from_row",
    "trace_id_for",
    "training_geometry_of",
    "user_text",
    "user_text_of",
]

IMAGE_PLACEHOLDER = "<image>\n"
PAPER_PROMPT_SUFFIX = "\nPlease answer the question using a long-chain reasoning style and think step by step."
V1G_COPY_TOKEN_START = COPY_TOKEN_START  # copy_token_start of the published checkpoint (kjunh/v1-7B)
V1G_MODEL_ID = "v1g-data"  # model_id of traces imported from v1g rows
KEY_RE = re.compile(r"<obj(\d+)>")
_KEY_FULL_RE = re.compile(r"<obj\d+>")
_HUMAN_ROLES = ("human", "user")
_GPT_ROLES = ("gpt", "assistant")

Box = Sequence[Number]


class V1GFormatError(ValueError):
    """A row is not a v1g row the official training code reads; the message names the field and the fix."""


class RegionKeyError(V1GFormatError):
    """A regions key does not occur in the text (the official code fails on such a row with an AssertionError)."""


# ============================================================================= the question
def user_text(question: str, prompt_suffix: str = PAPER_PROMPT_SUFFIX) -> str:
    """The user turn the model sees for ``question``: the question, then the prompt suffix (by default the
    paper's reasoning instruction). The processor builds its prompt with this, exports their human turns."""
    return question + prompt_suffix


def split_user_text(text: str, prompt_suffix: str = PAPER_PROMPT_SUFFIX) -> tuple[str, str]:
    """(question, suffix) of a user turn: ``suffix`` is ``prompt_suffix`` when the text ends with it, else ""
    (published rows). ``user_text(*split_user_text(t)) == t`` for every ``t``."""
    if prompt_suffix and text.endswith(prompt_suffix) and len(text) > len(prompt_suffix):
        return text[: -len(prompt_suffix)], prompt_suffix
    return text, ""


def user_text_of(trace: Trace) -> str:
    """The user turn a trace's model saw: an imported row's user text exactly, a live trace's question with the
    prompt suffix it was decoded with (``meta["prompt_suffix"]``, recorded by the processor; the paper's by
    default)."""
    default = "" if trace.source == "imported" else PAPER_PROMPT_SUFFIX
    suffix = trace.meta.get("prompt_suffix", default)
    return user_text(trace.question, suffix if isinstance(suffix, str) else default)


# ============================================================================= reading rows
def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise V1GFormatError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from None


def parse_regions(value: Any) -> dict[str, list[Number]]:
    """``regions`` (a JSON string as published, bytes, or a mapping) -> {key: [x1, y1, x2, y2]} in original
    pixels, key order and int/float types kept. Keys must be object keys like ``<obj1>``."""
    if value is None or value == "" or value == b"":
        return {}
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        value = _loads(value, "regions")
    if not isinstance(value, Mapping):
        raise V1GFormatError(
            f'regions must be a JSON object like {{"<obj1>": [x1, y1, x2, y2]}}, got {type(value).__name__}')
    out: dict[str, list[Number]] = {}
    for key, box in value.items():
        if not isinstance(key, str) or not _KEY_FULL_RE.fullmatch(key):
            raise V1GFormatError(f"region key {key!r} is not an object key like '<obj1>' (angle brackets included)")
        vals = list(box) if isinstance(box, (list, tuple)) else None
        if vals is None or len(vals) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise V1GFormatError(f"region {key} must be [x1, y1, x2, y2] numbers in image pixels, got {box!r}")
        out[key] = vals
    return out


def dumps_regions(regions: Mapping[str, Box], original: str | None = None) -> str:
    """The ``regions`` column: ``json.dumps`` of the dict, or ``original`` (the source string) when it holds
    exactly these regions (same keys, order, numbers and types), so an unchanged row is written back byte for
    byte."""
    text = json.dumps({k: list(v) for k, v in regions.items()})
    if original is not None:
        try:
            if json.dumps(json.loads(original)) == text:
                return original
        except (ValueError, TypeError):
            pass
    return text


def _content_text(content: Any, where: str) -> str:
    """A turn's text: a string, or multimodal parts (an image part becomes ``"<image>\\n"``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for c in content:
            if not isinstance(c, Mapping):
                raise V1GFormatError(f"{where}: content parts must be objects, got {type(c).__name__}")
            parts.append(str(c.get("text", "")) if c.get("type") == "text" else IMAGE_PLACEHOLDER)
        return "".join(parts)
    raise V1GFormatError(f"{where} has no text (got {type(content).__name__})")


def _turns(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of ShareGPT ``conversations`` (published) or ``conversation`` messages (v1 Studio's older
    JSONL export), roles as written."""
    if "conversations" in row:
        src = row["conversations"]
        if isinstance(src, str):
            src = _loads(src, "conversations")
        if not isinstance(src, list):
            raise V1GFormatError("conversations must be a list of {from, value} turns")
        out = []
        for i, t in enumerate(src):
            if not isinstance(t, Mapping):
                raise V1GFormatError("conversations must be a list of {from, value} turns")
            out.append((str(t.get("from", "")), _content_text(t.get("value"), f"turn {i + 1}")))
        return out
    if "conversation" in row:
        src = row["conversation"]
        if not isinstance(src, list):
            raise V1GFormatError("conversation must be a list of {role, content} messages")
        out = []
        for i, m in enumerate(src):
            if not isinstance(m, Mapping):
                raise V1GFormatError("conversation must be a list of {role, content} messages")
            content = m.get("content") if "content" in m else m.get("value")
            out.append((str(m.get("role") or m.get("from") or ""), _content_text(content, f"message {i + 1}")))
        return out
    raise V1GFormatError("a v1g row needs `conversations` (a human and a gpt turn)")


def _image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise V1GFormatError(f"image_size must be [width, height], got {value!r}") from None
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise V1GFormatError(f"image_size must be [width, height], got {value!r}") from None
    if w <= 0 or h <= 0:
        raise V1GFormatError(f"image_size must be positive, got {[w, h]}")
    return w, h


@dataclass(frozen=True)
class V1GRow:
    """One v1g row, read (:func:`parse_row`) or to be written (:meth:`to_dict`).

    ``user_text`` is the human value without ``"<image>\\n"``, ``gpt_text`` the gpt value with its ``<objN>`` keys,
    ``regions`` {key: [x1, y1, x2, y2]} in original pixels (numbers as written), ``image_size`` (w, h) or None
    when the row lacks the column (then the decoded image's size must be used), ``image`` the image cell as read
    (untouched), ``regions_json`` the source string (written back when the regions are unchanged).
    """

    user_text: str
    gpt_text: str
    regions: dict[str, list[Number]] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None
    id: str | None = None
    image: Any = None
    num_tokens: int | None = None
    system_prompt: str = ""  # only v1 Studio's older JSONL export had a system turn; published rows have none
    regions_json: str | None = None

    @property
    def human_value(self) -> str:
        return IMAGE_PLACEHOLDER + self.user_text

    @property
    def question(self) -> str:
        """The user text without the paper's prompt suffix (what to ask a model again)."""
        return split_user_text(self.user_text)[0]

    def conversations(self) -> list[dict[str, str]]:
        return [{"from": "human", "value": self.human_value}, {"from": "gpt", "value": self.gpt_text}]

    def regions_string(self) -> str:
        return dumps_regions(self.regions, self.regions_json)

    def to_dict(self, image: Any = ..., num_tokens: int | None = None) -> dict[str, Any]:
        """The published layout (``id``, ``image``, ``conversations``, ``regions``, ``image_size``,
        ``num_tokens``); ``image`` defaults to the row's own image cell."""
        if self.image_size is None:
            raise V1GFormatError("the row has no image_size; set it from the image before writing the row")
        return {
            "id": self.id,
            "image": self.image if image is ... else image,
            "conversations": self.conversations(),
            "regions": self.regions_string(),
            "image_size": list(self.image_size),
            "num_tokens": self.num_tokens if num_tokens is None else num_tokens,
        }

    def training_geometry(self, **limits: Any) -> TrainingGeometry:
        """The official training geometry of the row's image (``limits``: ``TrainingGeometry.for_image``'s)."""
        if self.image_size is None:
            raise V1GFormatError("the row has no image_size; the training geometry needs the original size")
        return TrainingGeometry.for_image(*self.image_size, **limits)

    def expanded(self, geometry: TrainingGeometry | None = None, *, keep_key: bool = False) -> tuple[str, str]:
        """(user text, gpt text) with every key expanded as the official training code does
        (:func:`expand_keys`); ``keep_key`` keeps ``<objN>`` before each ``<region>``."""
        geometry = geometry or self.training_geometry()
        texts = [self.user_text, self.gpt_text]
        if self.system_prompt:
            texts.insert(0, self.system_prompt)
        out = expand_keys(texts, self.regions, geometry, keep_key=keep_key)
        return out[-2], out[-1]

    def messages(self, geometry: TrainingGeometry | None = None, *, expand: bool = True) -> list[dict[str, Any]]:
        """The chat messages the official dataset builds (user: an image part, then the user text; assistant:
        the gpt text), keys expanded unless ``expand=False``, ready for a chat template."""
        user, gpt = self.expanded(geometry) if expand else (self.user_text, self.gpt_text)
        msgs: list[dict[str, Any]] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        msgs.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]})
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": gpt}]})
        return msgs


def _human_gpt(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """(system prompt, user text, gpt text) of a row, with the official dataset's structure checks."""
    if not isinstance(row, Mapping):
        raise V1GFormatError(f"a v1g row must be an object, got {type(row).__name__}")
    turns = _turns(row)
    system = ""
    if turns and turns[0][0] == "system":
        system = turns[0][1]
        turns = turns[1:]
    roles = [r for r, _ in turns]
    if len(turns) != 2 or roles[0] not in _HUMAN_ROLES or roles[1] not in _GPT_ROLES:
        raise V1GFormatError(f"a v1g row needs exactly a human turn then a gpt turn, got roles {roles}")
    human, gpt = turns[0][1], turns[1][1]
    if not human.startswith(IMAGE_PLACEHOLDER):
        raise V1GFormatError(f"the human turn must start with {IMAGE_PLACEHOLDER!r}, got {human[:40]!r}")
    return system, human[len(IMAGE_PLACEHOLDER):], gpt


def question_of(row: Mapping[str, Any]) -> str:
    """The question of a v1g row (its user text without the paper's suffix), reading only its turns: what to
    ask a model again. Raises :class:`V1GFormatError` like :func:`parse_row` for malformed turns."""
    return split_user_text(_human_gpt(row)[1])[0]


def parse_row(row: Mapping[str, Any]) -> V1GRow:
    """Read a v1g row: the published layout, or v1 Studio's older JSONL export (``conversation`` messages with
    roles user/assistant and an optional leading system turn, ``region`` for ``regions``).

    As the official dataset requires: exactly one human turn then one gpt turn, the human value starting with
    ``"<image>\\n"``. ``regions`` is parsed with :func:`parse_regions`. Raises :class:`V1GFormatError` with the
    reason; keys are checked against the text by :func:`expand_keys` (which needs the geometry)."""
    system, user, gpt = _human_gpt(row)
    raw_regions = row["regions"] if "regions" in row else row.get("region")
    regions = parse_regions(raw_regions)
    rid = row.get("id")
    num_tokens = row.get("num_tokens")
    try:
        num_tokens = None if num_tokens is None or isinstance(num_tokens, bool) else int(num_tokens)
    except (TypeError, ValueError):
        raise V1GFormatError(f"num_tokens must be an integer, got {num_tokens!r}") from None
    return V1GRow(
        user_text=user, gpt_text=gpt, regions=regions,
        image_size=_image_size(row.get("image_size")), id=None if rid is None else str(rid), image=row.get("image"),
        num_tokens=num_tokens, system_prompt=system,
        regions_json=raw_regions if isinstance(raw_regions, str) else None,
    )


# ============================================================================= key expansion
def region_markup(box: Box, geometry: TrainingGeometry, key: str | None = None) -> str:
    """``<region>[box text]<|copy_i|>…</region>`` for a box in original pixels, as the official collate writes
    it (``key`` in front when given: the form the reference demo's parser and imported traces use)."""
    copies = "".join(copy_token(k) for k in geometry.copy_ids(box))
    return f"{key or ''}<region>{geometry.box_text(box)}{copies}</region>"


def expand_keys(texts: Sequence[str], regions: Mapping[str, Box], geometry: TrainingGeometry, *,
                keep_key: bool = False) -> list[str]:
    """Replace every occurrence of each regions key in ``texts`` (the turns of one sample) by its region markup.

    The official rules: keys in ``regions`` order; each must occur somewhere in the texts (else
    :class:`RegionKeyError`); every occurrence is replaced (``str.replace``), in every turn; afterwards no key
    may remain. ``keep_key`` writes ``<objN><region>…`` (imported traces keep their keys so they re-key
    exactly); the training text is ``keep_key=False``."""
    out = list(texts)
    for key, box in regions.items():
        if not any(key in t for t in out):
            raise RegionKeyError(f"region {key} is not used in the text; the official training code fails on this "
                                 "row (AssertionError). Remove it from regions or mention it in the text.")
        markup = region_markup(box, geometry, key if keep_key else None)
        out = [t.replace(key, markup) for t in out]
    if not keep_key:
        for key in regions:
            if any(key in t for t in out):  # never expected for <objN> keys: markup holds no key
                raise RegionKeyError(f"region {key} is still in the text after expansion")
    return out


# ============================================================================= re-keying
@dataclass(frozen=True)
class RegionSpan:
    """One region markup in a text (``<objN>?<region>[…]<|copy_k|>…</region>``), anywhere in it."""

    index: int  # occurrence number in the text, from 0
    start: int  # character span of the markup, the key prefix included
    end: int
    key: str | None  # the ``<objN>`` written before ``<region>``, if any
    box_text: str  # what is inside ``[…]``, as written
    normalized_box: tuple[float, float, float, float] | None  # parsed box text (None when not four numbers)
    copies: tuple[int, ...]
    in_detect: bool  # inside a ``detect(query=…, objects=[…])`` call
    query: str | None  # that call's query


def find_regions(text: str) -> list[RegionSpan]:
    """Every region markup in ``text``, in order (inside ``detect(...)`` and wherever it recurs)."""
    calls = [(m.start(), m.end(), m.group("query").replace('\\"', '"')) for m in DETECT_RE.finditer(text)]
    out = []
    for m in REGION_RE.finditer(text):
        try:
            vals = tuple(float(v) for v in m.group("box").split(","))
            nbox = vals if len(vals) == 4 else None
        except ValueError:
            nbox = None
        call = next((c for c in calls if c[0] <= m.start() < c[1]), None)
        out.append(RegionSpan(
            index=len(out), start=m.start(), end=m.end(), key=f"<{m.group('obj')}>" if m.group("obj") else None,
            box_text=m.group("box"), normalized_box=nbox,  # type: ignore[arg-type]
            copies=tuple(int(c) for c in COPY_RE.findall(m.group("copies"))),
            in_detect=call is not None, query=None if call is None else call[2],
        ))
    return out


@dataclass(frozen=True)
class Rekeyed:
    """Result of :func:`rekey`: the text with ``<objN>`` keys, its regions, and which key each region got."""

    text: str
    regions: dict[str, list[Number]]
    keys: tuple[str | None, ...]  # per RegionSpan index; None: left as written (no box for it)
    added_keys: tuple[str, ...]  # the key of each added region, in the order given

    @property
    def unplaced(self) -> list[int]:
        """Indices of the regions left as hard-coded markup (no box was known for them)."""
        return [i for i, k in enumerate(self.keys) if k is None]


@dataclass
class _Group:
    name: str | None
    body: tuple[str, tuple[int, ...]]
    members: list[int] = field(default_factory=list)
    box: list[Number] | None = None
    key: str | None = None


def _box_list(box: Box) -> list[Number]:
    vals = list(box)
    if len(vals) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        raise V1GFormatError(f"a region box must be [x1, y1, x2, y2] numbers, got {box!r}")
    return vals


def _insert_point(text: str, pos: int, spans: Sequence[RegionSpan]) -> int:
    """``pos`` moved past any detect(...) call or region markup it falls inside."""
    moved = True
    while moved:
        moved = False
        for a, b in [(m.start(), m.end()) for m in DETECT_RE.finditer(text)] + [(s.start, s.end) for s in spans]:
            if a < pos < b:
                pos, moved = b, True
    return pos


def rekey(
    text: str,
    *,
    known: Mapping[str, Box] | None = None,
    corrections: Mapping[int, Box] | None = None,
    fallback: Callable[[RegionSpan], Box | None] | None = None,
    added: Sequence[tuple[int, str, Box]] = (),
    also_in: Iterable[str] = (),
) -> Rekeyed:
    """Turn the hard-coded regions of ``text`` into ``<objN>`` keys and a regions dict (original pixels).

    - Occurrences are grouped into objects: the same written key with the same markup is one object (an imported
      key that recurs); markup without a key groups with identical markup. A key reused for different markup
      gets a fresh key for the later object.
    - Each object's box: a ``corrections`` box given for any of its occurrences (by :class:`RegionSpan` index;
      different boxes for one object raise :class:`V1GFormatError`), else ``known[key]`` (an imported row's
      regions, numbers and types unchanged), else ``fallback(first occurrence)``. Without a box the occurrences
      stay as written (``Rekeyed.unplaced``).
    - Keys: a written key is kept; others get fresh keys, numbered after every ``<objN>`` in the text, in
      ``known`` and in ``also_in`` (the human turn). **Every** occurrence of an object is replaced by its key.
    - ``added``: (character position, query, box) regions to insert as ``detect(query="…", objects=["<objN>"])``,
      moved past any call or markup the position falls inside, with a space on each side where needed.
    - Regions order: ``known`` keys still used (in the text or in ``also_in``) in their order, then new keys in
      order of first occurrence, then added ones.
    """
    known = dict(known or {})
    corrections = dict(corrections or {})
    also_in = list(also_in)
    spans = find_regions(text)
    bad = [i for i in corrections if not 0 <= i < len(spans)]
    if bad:
        raise V1GFormatError(f"correction for region {bad[0]}, but the text has {len(spans)} region(s)")

    groups: list[_Group] = []
    by_name: dict[str, _Group] = {}
    by_body: dict[tuple[Any, ...], _Group] = {}
    group_of: list[_Group] = []
    for sp in spans:
        body = (sp.box_text.strip(), sp.copies)
        g = None
        if sp.key is not None:
            g = by_name.get(sp.key)
            if g is not None and g.body != body:
                g = by_body.get((sp.key, body))
                if g is None:
                    g = _Group(None, body)
                    groups.append(g)
                    by_body[(sp.key, body)] = g
            elif g is None:
                g = _Group(sp.key, body)
                groups.append(g)
                by_name[sp.key] = g
        else:
            g = by_body.get((None, body))
            if g is None:
                g = _Group(None, body)
                groups.append(g)
                by_body[(None, body)] = g
        g.members.append(sp.index)
        group_of.append(g)

    for g in groups:
        given = [_box_list(corrections[i]) for i in g.members if corrections.get(i) is not None]
        distinct = {json.dumps(b) for b in given}
        if len(distinct) > 1:
            what = g.name or f"the region at character {spans[g.members[0]].start}"
            raise V1GFormatError(f"{what} occurs {len(g.members)} times and its occurrences were corrected to "
                                 f"different boxes ({', '.join(sorted(distinct))}); one object has one box")
        if given:
            g.box = given[0]
        elif g.name is not None and g.name in known:
            g.box = _box_list(known[g.name])
        elif fallback is not None:
            box = fallback(spans[g.members[0]])
            g.box = None if box is None else _box_list(box)

    used = {int(n) for t in [text, *also_in] for n in KEY_RE.findall(t)}
    used |= {int(n) for k in known for n in KEY_RE.findall(k)}
    next_num = max(used) + 1 if used else 1
    taken: set[str] = set()

    def fresh() -> str:
        nonlocal next_num
        while f"<obj{next_num}>" in taken:
            next_num += 1
        key = f"<obj{next_num}>"
        next_num += 1
        taken.add(key)
        return key

    for g in groups:  # written keys first, so a fresh key never takes one a later object writes
        if g.box is not None and g.name is not None:
            g.key = g.name
            taken.add(g.name)
    for g in groups:
        if g.box is not None and g.key is None:
            g.key = fresh()

    edits: list[tuple[int, int, str]] = []
    for sp, g in zip(spans, group_of, strict=True):
        if g.key is not None:
            edits.append((sp.start, sp.end, g.key))
    added_keys = []
    added_regions: dict[str, list[Number]] = {}
    for pos, query, box in added:
        key = fresh()
        added_keys.append(key)
        added_regions[key] = _box_list(box)
        at = _insert_point(text, max(0, min(int(pos), len(text))), spans)
        q = str(query).replace("\\", "\\\\").replace('"', '\\"')
        call = f'detect(query="{q}", objects=["{key}"])'
        before = " " if at > 0 and not text[at - 1].isspace() else ""
        after = " " if at < len(text) and not text[at].isspace() else ""
        edits.append((at, at, before + call + after))
    out = text
    for a, b, rep in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        out = out[:a] + rep + out[b:]

    regions: dict[str, list[Number]] = {}
    boxes = {g.key: g.box for g in groups if g.key is not None}
    for key, box in known.items():
        if key in boxes:
            regions[key] = boxes[key]  # type: ignore[assignment]
        elif any(key in t for t in [out, *also_in]):
            regions[key] = _box_list(box)
    for g in groups:
        if g.key is not None and g.key not in regions:
            regions[g.key] = g.box  # type: ignore[assignment]
    regions.update(added_regions)
    return Rekeyed(out, regions, tuple(g.key for g in group_of), tuple(added_keys))


# ============================================================================= rows <-> traces
def steps_from_text(text: str, copy_token_start: int = V1G_COPY_TOKEN_START) -> list[Step]:
    """Steps for a text-only trace: one per ``<|copy_k|>`` token and one per text chunk between them (no
    distributions: p_copy / entropy NaN, token id -1 for text chunks). The steps' texts concatenate to ``text``."""
    steps: list[Step] = []
    pos = 0

    def add(txt: str, patch: int | None) -> None:
        steps.append(Step(index=len(steps), token_id=(copy_token_start + patch) if patch is not None else -1,
                          text=txt, is_copy=patch is not None, patch=patch, p_copy=float("nan"),
                          entropy=float("nan")))

    for m in COPY_RE.finditer(text):
        if m.start() > pos:
            add(text[pos:m.start()], None)
        add(m.group(0), int(m.group(1)))
        pos = m.end()
    if pos < len(text):
        add(text[pos:], None)
    return steps


def trace_id_for(row: V1GRow) -> str:
    """Stable trace id of an imported row: from its ``id``, else from its content (re-imports are skipped)."""
    if row.id:
        return hashlib.sha256(f"v1g:{row.id}".encode()).hexdigest()[:32]
    blob = json.dumps([row.question, row.gpt_text, row.regions, list(row.image_size or ())], sort_keys=True)
    return hashlib.sha256(f"v1g-content:{blob}".encode()).hexdigest()[:32]


def numeric_id(trace_id: str) -> str:
    """A row id that ``int()`` accepts (the older prepare_data.py needs one) for a trace without a v1g id:
    15 hex digits of the trace id's sha256 as a decimal string (fits int64, stable)."""
    return str(int(hashlib.sha256(trace_id.encode()).hexdigest()[:15], 16))


def trace_from_row(row: V1GRow, *, image_sha256: str = "", geometry: TrainingGeometry | None = None,
                   model_id: str = V1G_MODEL_ID, copy_token_start: int = V1G_COPY_TOKEN_START) -> Trace:
    """A text-only Trace (source ``imported``) of a v1g row, on the **training** geometry.

    The trace's grid is the official training grid (``geometry``, default ``row.training_geometry()``), recorded
    in ``meta["training_geometry"]``; its output text is the gpt turn with each key expanded in place
    (``<obj1><region>[…]<|copy_k|>…</region>``, keys kept so that :func:`row_from_trace` re-keys it exactly).
    The question is the user text without the paper's suffix (kept in ``meta["prompt_suffix"]``); ``meta`` also
    keeps the row's id, regions, their source string and num_tokens. Raises :class:`RegionKeyError` for the
    rows the official code rejects (a regions key not in the text)."""
    geometry = geometry or row.training_geometry()
    if row.image_size is not None and tuple(row.image_size) != geometry.image_size:
        raise V1GFormatError(f"geometry is for a {geometry.image_size} image, the row's image_size is "
                             f"{list(row.image_size)}")
    _, text = row.expanded(geometry, keep_key=True)
    question, suffix = split_user_text(row.user_text)
    meta: dict[str, Any] = {"v1g_id": row.id, "v1g_regions": {k: list(v) for k, v in row.regions.items()},
                            "prompt_suffix": suffix, "training_geometry": geometry.to_dict()}
    if row.regions_json is not None:
        meta["v1g_regions_json"] = row.regions_json
    if row.num_tokens is not None:
        meta["num_tokens"] = row.num_tokens
    return Trace(
        model_id=model_id, image_sha256=image_sha256, image_size=geometry.image_size,
        resized_size=geometry.processor_size, grid=geometry.shape, question=question,
        system_prompt=row.system_prompt, steps=steps_from_text(text, copy_token_start), output_text=text,
        status="complete", source="imported", trace_id=trace_id_for(row), meta=meta,
    )


def training_geometry_of(trace: Trace, **limits: Any) -> TrainingGeometry:
    """The training geometry of a trace: the one recorded at import (``meta["training_geometry"]``), else the
    official one for its image size (``limits``: ``TrainingGeometry.for_image``'s)."""
    recorded = trace.meta.get("training_geometry")
    if isinstance(recorded, Mapping):
        return TrainingGeometry.from_dict(dict(recorded))
    return TrainingGeometry.for_image(*trace.image_size, **limits)


@dataclass(frozen=True)
class RegionEdit:
    """An annotator's region: a box in original pixels, or cells of the trace's own grid."""

    box: Box | None = None
    patches: Sequence[int] = ()


@dataclass(frozen=True)
class AddedRegion(RegionEdit):
    """A revisit the model should have made: inserted before ``step`` as ``detect(query=…, objects=[key])``."""

    step: int = 0
    query: str = ""


def _edit_box(edit: RegionEdit | Box, grid: PatchGrid, geometry: TrainingGeometry) -> list[Number]:
    if not isinstance(edit, RegionEdit):
        edit = RegionEdit(box=edit)
    if edit.box is not None:
        return [round(float(v), 2) if isinstance(v, float) else v for v in _box_list(edit.box)]
    if edit.patches:
        return list(geometry.region_for_cells(edit.patches, grid=grid).box)
    raise V1GFormatError("a corrected region needs a box or cells")


def row_from_trace(
    trace: Trace,
    *,
    corrections: Mapping[int, RegionEdit | Box] | None = None,
    added: Sequence[AddedRegion] = (),
    geometry: TrainingGeometry | None = None,
    row_id: str | None = None,
    image: Any = None,
) -> V1GRow:
    """The v1g row of a trace, ready for :meth:`V1GRow.to_dict`: :func:`rekey` on its output text.

    ``corrections`` maps a **revisit index** (``trace.revisits``, what annotations refer to) to the region the
    annotator gave it (a box in original pixels, or cells of ``trace.patch_grid()``); the revisit must lie in a
    region markup, and the correction changes every occurrence of that region's key. ``added`` revisits are
    inserted before their step. Boxes of uncorrected regions: an imported row's own ``regions`` (unchanged), else
    the copied cells mapped onto the training grid (:meth:`TrainingGeometry.region_for_cells`), else the written
    box text times the image size. Cells given on the trace's grid go through the same mapping; on an imported
    trace that grid *is* the training grid, so they map back exactly.

    Id: ``row_id``, else the imported row's id, else :func:`numeric_id`. ``num_tokens``: the imported row's when
    nothing changed, else prompt + generated tokens. The human turn is :func:`user_text_of`."""
    geometry = geometry or training_geometry_of(trace)
    grid = trace.patch_grid()
    imported = trace.source == "imported"
    raw = trace.meta.get("v1g_regions_json") if imported else None
    raw = raw if isinstance(raw, str) else None
    # the source string first: it keeps the key order and number types whatever store the meta went through
    known = parse_regions(raw if raw is not None else trace.meta.get("v1g_regions")) if imported else {}
    text = trace.output_text
    spans = find_regions(text)

    offsets = [0]
    for s in trace.steps:
        offsets.append(offsets[-1] + len(s.text))
    corr: dict[int, list[Number]] = {}
    if corrections:
        revisits = find_revisits(trace)
        for ri, edit in corrections.items():
            if not 0 <= ri < len(revisits):
                raise V1GFormatError(f"revisit {ri} does not exist (the trace has {len(revisits)})")
            at = offsets[revisits[ri].start_step]
            sp = next((s for s in spans if s.start <= at < s.end), None)
            if sp is None:
                raise V1GFormatError(f"revisit {ri} is not inside a <region>…</region>; its correction cannot be "
                                     "written as a region")
            corr[sp.index] = _edit_box(edit, grid, geometry)

    def fallback(sp: RegionSpan) -> Box | None:
        if sp.copies:
            try:
                return geometry.region_for_cells(sp.copies, grid=grid).box
            except ValueError:
                pass  # copies outside the trace's grid: use the written box
        if sp.normalized_box is not None:
            w, h = trace.image_size
            nb = sp.normalized_box
            return [round(nb[0] * w, 2), round(nb[1] * h, 2), round(nb[2] * w, 2), round(nb[3] * h, 2)]
        return None

    n_steps = len(trace.steps)
    inserts = [(offsets[min(max(int(a.step), 0), n_steps)], a.query, _edit_box(a, grid, geometry)) for a in added]
    human = user_text_of(trace)
    rk = rekey(text, known=known, corrections=corr, fallback=fallback, added=inserts, also_in=[human])
    changed = bool(corr or inserts)
    num_tokens = trace.meta.get("num_tokens") if imported else None
    if changed or not isinstance(num_tokens, int):
        num_tokens = int(trace.prompt_tokens or 0) + n_steps
    rid = row_id or (trace.meta.get("v1g_id") if imported else None) or numeric_id(trace.trace_id)
    return V1GRow(user_text=human, gpt_text=rk.text, regions=rk.regions, image_size=tuple(trace.image_size),
                  id=str(rid), image=image, num_tokens=num_tokens, regions_json=raw)


# ============================================================================= the parquet layout
# The `huggingface` schema metadata in the pre-4.0 spelling (`Sequence`, `[{...}]`): datasets 3.x (the official
# training environment) and datasets >= 4 both load it; the `List` spelling of datasets >= 4 fails on 3.x.
HF_FEATURES_METADATA = json.dumps({"info": {"features": {
    "id": {"dtype": "string", "_type": "Value"},
    "image": {"_type": "Image"},
    "conversations": [{"from": {"dtype": "string", "_type": "Value"}, "value": {"dtype": "string", "_type": "Value"}}],
    "regions": {"dtype": "string", "_type": "Value"},
    "image_size": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "Sequence"},
    "num_tokens": {"dtype": "int64", "_type": "Value"},
}}})


def arrow_schema() -> Any:
    """The published parquet schema (column order, types and ``huggingface`` metadata) as a pyarrow schema."""
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("conversations", pa.list_(pa.field("element", pa.struct([("from", pa.string()), ("value", pa.string())])))),
        ("regions", pa.string()),
        ("image_size", pa.list_(pa.field("element", pa.int64()))),
        ("num_tokens", pa.int64()),
    ], metadata={"huggingface": HF_FEATURES_METADATA})
