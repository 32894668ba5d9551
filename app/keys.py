"""Keyboard shortcuts for the Annotate page: a tiny Custom Components v2 component (no package, no request to
any host) that listens for keys on the page and reports each as a trigger value.

`KEYMAP` is the one list of bindings: the component's JavaScript is generated from it and the page's legend
(`legend_rows`) shows it. Keys typed into a text field (note, tags, query) are left to the field, except
Ctrl+Enter (⌘+Enter), which saves from anywhere. Each press is sent as `{"action": …, "n": counter}` so that
pressing the same key twice gives two events. What an action does is up to the page (`app.annotate_ui`).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class Binding:
    key: str  # KeyboardEvent.key (lower-cased for letters)
    action: str
    label: str  # what the legend shows
    ctrl: bool = False


KEYMAP: tuple[Binding, ...] = (
    Binding("1", "verdict:correct", "verdict correct"),
    Binding("2", "verdict:incorrect", "verdict incorrect"),
    Binding("3", "verdict:unsure", "verdict unsure"),
    Binding("y", "answer:yes", "answer correct: yes"),
    Binding("n", "answer:no", "answer correct: no"),
    Binding("j", "trace:next", "next trace"),
    Binding("k", "trace:prev", "previous trace"),
    Binding("]", "revisit:next", "next revisit"),
    Binding("[", "revisit:prev", "previous revisit"),
    Binding("c", "label:correct", "selected revisit: correct"),
    Binding("w", "label:wrong_region", "selected revisit: wrong region"),
    Binding("u", "label:unnecessary", "selected revisit: unnecessary"),
    Binding("Enter", "save", "save", ctrl=True),
)


def key_text(b: Binding) -> str:
    return ("Ctrl+" if b.ctrl else "") + b.key


def legend_rows() -> list[dict[str, str]]:
    return [{"key": key_text(b), "does": b.label} for b in KEYMAP]


_JS = """
export default function(component) {
  const { setTriggerValue, data } = component;
  const plain = new Map(Object.entries(data.plain));
  const ctrl = new Map(Object.entries(data.ctrl));
  let n = 0;
  const typing = (el) => {
    if (!el) return false;
    const tag = (el.tagName || "").toLowerCase();
    if (tag === "textarea" || el.isContentEditable) return true;
    if (tag !== "input") return false;
    const type = (el.getAttribute("type") || "text").toLowerCase();
    return !["radio", "checkbox", "button", "range", "submit"].includes(type);
  };
  const onKey = (e) => {
    if (e.isComposing || e.repeat) return;
    const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    let action;
    if (e.ctrlKey || e.metaKey) {
      action = ctrl.get(k);
    } else if (!e.altKey && !typing(e.target)) {
      action = plain.get(k);
    }
    if (!action) return;
    e.preventDefault();
    e.stopPropagation();
    if (action === "save" && document.activeElement && typing(document.activeElement)) {
      document.activeElement.blur();  // commit the text field first, then save
      setTimeout(() => setTriggerValue("action", {action, n: ++n}), 150);
      return;
    }
    setTriggerValue("action", {action, n: ++n});
  };
  // one listener per page, whatever the number of mounts and reruns
  if (window.__v1studioKeys) document.removeEventListener("keydown", window.__v1studioKeys, true);
  window.__v1studioKeys = onKey;
  document.addEventListener("keydown", onKey, true);
  return () => {
    document.removeEventListener("keydown", onKey, true);
    if (window.__v1studioKeys === onKey) window.__v1studioKeys = null;
  };
}
"""

_component = st.components.v2.component("v1studio_annotate_keys", js=_JS)


def keyboard(key: str, on_action) -> None:
    """Mount the listener (once per page run); `on_action(action)` runs, as a widget callback, for each key
    press (`action` as in `KEYMAP`)."""
    plain = {b.key: b.action for b in KEYMAP if not b.ctrl}
    ctrl = {b.key: b.action for b in KEYMAP if b.ctrl}

    def _changed() -> None:
        ev = event_of(st.session_state.get(key))
        if ev is not None:
            on_action(ev)

    _component(key=key, data={"plain": plain, "ctrl": ctrl}, on_action_change=_changed)


def event_of(value: object) -> str | None:
    """The action of the component's trigger value (a mapping or attribute `action` holding
    `{"action": str, "n": int}`), or None."""
    ev = None
    if isinstance(value, dict):
        ev = value.get("action")
    elif value is not None:
        ev = getattr(value, "action", None)
    if isinstance(ev, str):
        ev = {"action": ev}
    if isinstance(ev, dict) and isinstance(ev.get("action"), str):
        action = ev["action"]
        return action if any(b.action == action for b in KEYMAP) else None
    return None


__all__ = ["Binding", "KEYMAP", "event_of", "key_text", "keyboard", "legend_rows"]
