"""Untrusted text (model output, questions, notes, file names) made safe for Streamlit and Plotly.

Rule of the app: untrusted text is shown with `st.text`/`st.code`/`st.dataframe` (never interpreted), or,
where a widget only takes Markdown (labels, pills, captions), passed through :func:`md_escape` first, which
backslash-escapes every ASCII punctuation character so no link, image, emphasis, directive (`:red[..]`),
LaTeX (`$..$`) or emoji short code can come out of it. `unsafe_allow_html` is never used with such text.
Plotly renders a small HTML subset inside hover labels and annotations, so text going there goes through
:func:`plotly_escape`.

Pure functions, no Streamlit import.
"""

from __future__ import annotations

import html
import re
import string

__all__ = ["md_code", "md_escape", "plotly_escape", "token_display", "token_markdown", "shorten"]

_MD_SPECIAL = frozenset(string.punctuation)
_TRANS = {ord(c): "\\" + c for c in _MD_SPECIAL}


_ZWSP = "\u200b"
# GFM turns bare URLs and e-mail addresses into links even when their punctuation is escaped;
# a zero-width space after the scheme / "www" / "@" stops that and is invisible.
_AUTOLINK_RE = re.compile(r"(?i)(://|\bwww(?=\.)|@)")


def md_escape(text: str | None) -> str:
    """Markdown-inert version of `text`: each ASCII punctuation char is backslash-escaped (CommonMark
    treats every escaped punctuation char as a literal), bare URLs / e-mail addresses are kept from
    becoming links, newlines become hard line breaks."""
    if not text:
        return ""
    out = _AUTOLINK_RE.sub(lambda m: ":" + _ZWSP + "//" if m.group(0) == "://" else m.group(0) + _ZWSP, str(text))
    out = out.translate(_TRANS)
    # HTML entities would still be decoded ("&amp;" -> "&"); the escaped "\&" keeps them literal.
    return out.replace("\r\n", "\n").replace("\n", "  \n")


def md_code(text: str | None) -> str:
    """`text` as an inline code span (shown verbatim). Backticks, which could end the span, are replaced by
    a look-alike and newlines by spaces; nothing else is interpreted inside a code span."""
    body = str(text or "").replace("`", "ˋ").replace("\r", " ").replace("\n", " ")
    return f"`{body}`" if body.strip() else "` `"


def plotly_escape(text: str | None) -> str:
    """Text for Plotly hover labels / annotations (Plotly parses <b>, <a href>, <br> … in them)."""
    if not text:
        return ""
    return html.escape(str(text), quote=True).replace("\n", "↵")


def token_display(text: str | None) -> str:
    """A token's text made visible on its own: newlines as ↵, tabs as →, empty/blank as ␣."""
    if text is None or text == "":
        return "∅"
    shown = text.replace("\r\n", "↵").replace("\n", "↵").replace("\t", "→")
    if not shown.strip():
        return "␣" * min(len(shown), 3)
    return shown


def token_markdown(text: str | None, *, is_copy: bool = False, patch: int | None = None) -> str:
    """A token as a Markdown label (pills, chips): copy tokens as a blue chip with a target icon and the
    patch id, others escaped."""
    if is_copy:
        # a no-break space keeps the icon and the number together when the text wraps
        return f":blue-background[:blue[:material/my_location:\u00a0**{int(patch) if patch is not None else '?'}**]]"
    return md_escape(token_display(text))


def shorten(text: str | None, limit: int = 80) -> str:
    """One-line preview of possibly long text (still untrusted: escape it for the place it goes)."""
    if not text:
        return ""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
