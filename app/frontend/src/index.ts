// The trace canvas: a Streamlit Custom Components v2 renderer (no iframe) that steps, plays and scrubs a v1
// trace in the browser. Python (app/canvas.py, payloads from app/canvas_data.py) sends the static part of a
// trace once, the pointers in windows of steps on request, and a small view part on every run.
//
// Drawn: heatmap (one byte per patch through a colour LUT onto a grid-sized canvas, scaled without
// smoothing) over the photo, an overlay (most likely patch, copied patch, revisit boxes, edit selection),
// the step's details, a virtualised token strip (only rows in view are in the DOM) and the p_copy/entropy
// timeline. Keys on the focused canvas: ←/→ step, [ / ] revisit, space play. Untrusted text (tokens,
// queries) is only ever set with textContent.
//
// Back to Python: state `step` (debounced, not while playing), state `selection` (edit mode: ids and box
// text), trigger `need` ({trace_id, windows, base}) when windows or the static part are missing here.

import type { FrontendRenderer, FrontendRendererArgs } from "@streamlit/component-v2-lib"
import { b64bytes, cellOfPoint, cellsInRect, copyTokens, dequantise, type Geometry, playAdvance, regionText } from "./geometry"

export { cellBounds, copyTokens, dequantise, playAdvance, regionText, roundCents, cellOfPoint, cellsInRect } from "./geometry"

interface RevisitBox { box: [number, number, number, number]; label: string }
interface RevisitData { start: number; end: number; patches: number[]; boxes: RevisitBox[]; query: string | null }
interface StaticData {
  trace_id: string
  grid: [number, number]
  image_size: [number, number]
  image: string | null
  n_steps: number
  window: number
  has_pointers: boolean
  decades: number
  max_entropy: number
  tokens: string[]
  copy: number[]
  p_copy: (number | null)[]
  entropy: (number | null)[]
  gate: (number | null)[]
  topk: [string[], number[]][]
  revisits: RevisitData[]
}
interface WindowData { k: number; start: number; stop: number; q: string; pmax: number[] }
interface ViewData {
  lut: string
  opacity: number
  show_argmax: boolean
  regions: "current" | "all" | "none"
  edit: boolean
  selected: number[]
  goto: number | null
  nonce: number
  height: number
  sync_url: boolean
  boxes: RevisitBox[]
}
interface CanvasData { trace_id: string; static: StaticData | null; view: ViewData; windows: WindowData[] }
interface CanvasState {
  step: number
  selection: { ids: number[]; box: string }
  need: { trace_id: string; windows: number[]; base: boolean }
  [key: string]: unknown
}
type Args = FrontendRendererArgs<CanvasState, CanvasData>

interface LoadedWindow { start: number; stop: number; q: Uint8Array; pmax: Float32Array }
interface TraceCache { stat: StaticData; windows: Map<number, LoadedWindow> }

// Traces stay cached for the browser tab (Python sends the static part once per session).
const CACHE = new Map<string, TraceCache>()
const SPEEDS = [1, 2, 5, 10, 20, 30, 60]
const ROW_H = 24
const STRIP_ROWS = 6
const TIMELINE_H = 110
const REGION_COLOURS = ["#7CFC00", "#FFD700", "#FF69B4", "#00BFFF", "#FFA500", "#BA55D3"]
const COPY_COLOUR = "#00e5ff"
const STEP_REPORT_MS = 350
const REQUEST_RETRY_MS = 2500

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag)
  if (cls) e.className = cls
  if (text !== undefined) e.textContent = text
  return e
}

const CSS = `
.v1c-root{font-family:var(--st-font,sans-serif);color:var(--st-text-color,#262730);outline:none;user-select:none}
.v1c-root:focus-visible{box-shadow:0 0 0 2px var(--st-primary-color,#ff4b4b) inset;border-radius:6px}
.v1c-controls{display:flex;gap:6px;align-items:center;flex-wrap:wrap;margin-bottom:6px}
.v1c-controls button,.v1c-controls select{font:inherit;font-size:13px;padding:3px 9px;border-radius:6px;cursor:pointer;
 border:1px solid var(--st-border-color,#d6d6d9);background:var(--st-secondary-background-color,#f0f2f6);color:inherit}
.v1c-controls button:disabled{opacity:.45;cursor:default}
.v1c-controls input[type=range]{flex:1;min-width:140px}
.v1c-steplabel{font-size:13px;min-width:110px;font-variant-numeric:tabular-nums}
.v1c-main{display:flex;gap:12px;align-items:flex-start;flex-wrap:wrap}
.v1c-stage{position:relative;flex:0 0 auto;background:#111;border-radius:4px;overflow:hidden}
.v1c-stage img,.v1c-stage canvas{position:absolute;left:0;top:0}
.v1c-heat{image-rendering:pixelated}
.v1c-side{flex:1 1 220px;min-width:200px;font-size:13px}
.v1c-token{font-family:var(--st-code-font,monospace);background:var(--st-secondary-background-color,#f0f2f6);
 padding:4px 8px;border-radius:6px;margin:4px 0;white-space:pre-wrap;word-break:break-all}
.v1c-metrics{display:flex;gap:14px;margin:6px 0}.v1c-metrics b{display:block;font-size:16px}
.v1c-topk{border-collapse:collapse;font-size:12px;width:100%}.v1c-topk td{padding:1px 6px;border-bottom:1px solid var(--st-border-color,#e6e6e9)}
.v1c-topk td:first-child{font-family:var(--st-code-font,monospace)}
.v1c-hover,.v1c-rvcap{color:var(--st-secondary-text-color,#6b6f7b);font-size:12px;min-height:16px}
.v1c-edit{margin-top:8px;padding:6px;border:1px dashed #7CFC00;border-radius:6px}
.v1c-ids{font-family:var(--st-code-font,monospace);font-size:11px;max-height:64px;overflow:auto;word-break:break-all}
.v1c-strip{position:relative;overflow-y:auto;border:1px solid var(--st-border-color,#d6d6d9);border-radius:6px;margin-top:8px}
.v1c-chip{position:absolute;height:${ROW_H - 4}px;line-height:${ROW_H - 4}px;padding:0 5px;border-radius:5px;font-size:12px;
 font-family:var(--st-code-font,monospace);white-space:pre;overflow:hidden;text-overflow:ellipsis;cursor:pointer;box-sizing:border-box}
.v1c-chip:hover{background:rgba(128,128,128,.18)}
.v1c-chip.copy{background:rgba(0,150,200,.16);color:#0077aa;font-weight:600}
.v1c-chip.cur{outline:2px solid #d62728}
.v1c-chip.inrv{border-bottom:2px solid rgba(0,172,193,.6)}
.v1c-timeline{display:block;width:100%;margin-top:6px;cursor:pointer}
`

class TraceCanvas {
  args: Args
  root: HTMLDivElement
  // controls
  prevBtn: HTMLButtonElement; playBtn: HTMLButtonElement; nextBtn: HTMLButtonElement; speedSel: HTMLSelectElement
  slider: HTMLInputElement; stepLabel: HTMLSpanElement; prevRvBtn: HTMLButtonElement; nextRvBtn: HTMLButtonElement
  // stage
  stage: HTMLDivElement; img: HTMLImageElement; heat: HTMLCanvasElement; overlay: HTMLCanvasElement
  grid: HTMLCanvasElement; gridImg: ImageData | null = null
  // side
  side: HTMLDivElement; title: HTMLDivElement; token: HTMLDivElement; metrics: HTMLDivElement; topk: HTMLTableElement
  hover: HTMLDivElement; rvcap: HTMLDivElement; editBox: HTMLDivElement; editCount: HTMLDivElement
  editText: HTMLDivElement; editIds: HTMLDivElement
  // strip + timeline
  strip: HTMLDivElement; stripInner: HTMLDivElement; timeline: HTMLCanvasElement; timelineBase: HTMLCanvasElement | null = null
  chipX: Float32Array = new Float32Array(0); chipW: Float32Array = new Float32Array(0); chipRow: Int32Array = new Int32Array(0)
  rowStart: number[] = []; stripWidth = 0; stripDirty = true; renderedRows: [number, number] = [-1, -1]
  chips = new Map<number, HTMLDivElement>()

  traceId = ""
  cache: TraceCache | null = null
  view: ViewData | null = null
  lut: Uint8Array = new Uint8Array(1024)
  step = 0
  lastNonce: number | null = null
  lastSelected = ""
  selection = new Set<number>()
  playing = false
  speed = 10
  nextDue = 0
  raf = 0
  drawQueued = false
  pending = new Map<number, number>() // window -> time requested
  baseRequested = 0
  reportTimer = 0
  selTimer = 0
  scale = 1
  drag: { x0: number; y0: number; x1: number; y1: number; remove: boolean; moved: boolean } | null = null
  resizeObs: ResizeObserver
  poll: number

  constructor(args: Args) {
    this.args = args
    const root = el("div", "v1c-root")
    root.tabIndex = 0
    root.setAttribute("role", "application")
    root.setAttribute("aria-label", "trace canvas: ← → step, [ ] revisit, space play")
    const style = el("style")
    style.textContent = CSS
    root.appendChild(style)

    const controls = el("div", "v1c-controls")
    this.prevBtn = this.button(controls, "‹", "previous step (←)", "prev", () => this.go(this.step - 1))
    this.playBtn = this.button(controls, "▶ Play", "play / pause (space)", "play", () => this.togglePlay())
    this.speedSel = el("select")
    this.speedSel.title = "speed (steps/s)"
    this.speedSel.dataset.role = "speed"
    for (const s of SPEEDS) {
      const o = el("option", undefined, `${s} steps/s`)
      o.value = String(s)
      this.speedSel.appendChild(o)
    }
    this.speedSel.value = String(this.speed)
    this.speedSel.addEventListener("change", () => {
      this.speed = Number(this.speedSel.value) || 10
      this.nextDue = performance.now() + 1000 / this.speed
    })
    controls.appendChild(this.speedSel)
    this.nextBtn = this.button(controls, "›", "next step (→)", "next", () => this.go(this.step + 1))
    this.slider = el("input")
    this.slider.type = "range"
    this.slider.min = "0"
    this.slider.dataset.role = "slider"
    this.slider.setAttribute("aria-label", "step")
    this.slider.addEventListener("input", () => this.go(Number(this.slider.value)))
    controls.appendChild(this.slider)
    this.stepLabel = el("span", "v1c-steplabel")
    controls.appendChild(this.stepLabel)
    this.prevRvBtn = this.button(controls, "« Revisit", "previous revisit ([)", "prev_revisit", () => this.revisitJump(-1))
    this.nextRvBtn = this.button(controls, "Revisit »", "next revisit (])", "next_revisit", () => this.revisitJump(1))
    root.appendChild(controls)

    const main = el("div", "v1c-main")
    this.stage = el("div", "v1c-stage")
    this.img = el("img")
    this.img.alt = ""
    this.img.draggable = false
    this.heat = el("canvas", "v1c-heat")
    this.overlay = el("canvas", "v1c-overlay")
    this.stage.append(this.img, this.heat, this.overlay)
    this.grid = el("canvas")
    main.appendChild(this.stage)

    this.side = el("div", "v1c-side")
    this.title = el("div")
    this.token = el("div", "v1c-token")
    this.metrics = el("div", "v1c-metrics")
    this.topk = el("table", "v1c-topk")
    this.rvcap = el("div", "v1c-rvcap")
    this.hover = el("div", "v1c-hover")
    this.editBox = el("div", "v1c-edit")
    this.editCount = el("div")
    this.editText = el("div")
    this.editIds = el("div", "v1c-ids")
    const clear = el("button", undefined, "Clear selection")
    clear.addEventListener("click", () => this.setSelection(new Set()))
    this.editBox.append(this.editCount, this.editText, this.editIds, clear)
    this.side.append(this.title, this.token, this.metrics, this.topk, this.rvcap, this.hover, this.editBox)
    main.appendChild(this.side)
    root.appendChild(main)

    this.strip = el("div", "v1c-strip")
    this.strip.style.height = `${ROW_H * STRIP_ROWS + 4}px`
    this.stripInner = el("div")
    this.stripInner.style.position = "relative"
    this.strip.appendChild(this.stripInner)
    this.strip.addEventListener("scroll", () => this.renderStrip(false))
    this.strip.addEventListener("click", (e) => {
      const t = (e.target as HTMLElement).closest(".v1c-chip") as HTMLElement | null
      if (t && t.dataset.i) this.go(Number(t.dataset.i))
    })
    root.appendChild(this.strip)
    this.timeline = el("canvas", "v1c-timeline")
    this.timeline.style.height = `${TIMELINE_H}px`
    root.appendChild(this.timeline)
    this.root = root

    root.addEventListener("keydown", (e) => this.onKey(e))
    root.addEventListener("pointerdown", (e) => {
      if ((e.target as HTMLElement).tagName !== "SELECT") root.focus({ preventScroll: true })
    })
    this.overlay.addEventListener("pointerdown", (e) => this.onStageDown(e))
    this.overlay.addEventListener("pointermove", (e) => this.onStageMove(e))
    this.overlay.addEventListener("pointerup", (e) => this.onStageUp(e))
    this.overlay.addEventListener("pointerleave", () => { this.hover.textContent = "" })
    this.timeline.addEventListener("pointerdown", (e) => {
      this.timeline.setPointerCapture(e.pointerId)
      this.scrubTo(e)
    })
    this.timeline.addEventListener("pointermove", (e) => {
      if (this.timeline.hasPointerCapture(e.pointerId)) this.scrubTo(e)
    })
    this.resizeObs = new ResizeObserver(() => this.layout())
    this.resizeObs.observe(root)
    // a trigger set while Streamlit mounts can be lost: look again every second for windows still missing
    this.poll = window.setInterval(() => this.ensureWindows(), 1000)
    args.parentElement.appendChild(root)
  }

  button(parent: HTMLElement, text: string, title: string, role: string, fn: () => void): HTMLButtonElement {
    const b = el("button", undefined, text)
    b.title = title
    b.type = "button"
    b.dataset.role = role
    b.addEventListener("click", fn)
    parent.appendChild(b)
    return b
  }

  // ------------------------------------------------------------------ data from Python
  update(args: Args): void {
    this.args = args
    const data = args.data
    if (!data || !data.trace_id) return
    if (data.static) CACHE.set(data.trace_id, { stat: data.static, windows: CACHE.get(data.trace_id)?.windows ?? new Map() })
    const cache = CACHE.get(data.trace_id) ?? null
    for (const w of data.windows || []) {
      if (!cache) break
      cache.windows.set(w.k, { start: w.start, stop: w.stop, q: b64bytes(w.q), pmax: Float32Array.from(w.pmax) })
      this.pending.delete(w.k)
    }
    const newTrace = data.trace_id !== this.traceId || cache !== this.cache
    this.traceId = data.trace_id
    this.cache = cache
    this.root.dataset.trace = data.trace_id
    if (!cache) {
      this.root.dataset.ready = "0"
      if (performance.now() - this.baseRequested > REQUEST_RETRY_MS) {
        this.baseRequested = performance.now()
        this.args.setTriggerValue("need", { trace_id: data.trace_id, windows: [], base: true })
      }
      return
    }
    const view = data.view
    const lutChanged = !this.view || this.view.lut !== view.lut
    this.view = view
    if (lutChanged) this.lut = b64bytes(view.lut)
    this.heat.style.opacity = String(view.opacity)
    const st = cache.stat
    this.editBox.style.display = view.edit ? "" : "none"
    this.overlay.style.cursor = view.edit ? "crosshair" : "default"
    const selKey = JSON.stringify(view.selected)
    if (newTrace || selKey !== this.lastSelected) {
      this.lastSelected = selKey
      this.selection = new Set(view.selected)
      this.describeSelection()
    }
    if (newTrace) {
      this.stop(false)
      this.slider.max = String(Math.max(st.n_steps - 1, 0))
      this.img.src = st.image ?? ""
      this.img.style.display = st.image ? "" : "none"
      this.grid.width = st.grid[1]
      this.grid.height = st.grid[0]
      this.gridImg = new ImageData(st.grid[1], st.grid[0])
      this.stripDirty = true
      this.timelineBase = null
      this.step = Math.min(Math.max(view.goto ?? 0, 0), Math.max(st.n_steps - 1, 0))
      this.lastNonce = view.nonce
      this.layout()
    } else if (view.nonce !== this.lastNonce) {
      this.lastNonce = view.nonce
      // a server move: shown, then reported back so the server's idea of the step is the browser's
      if (view.goto !== null) this.go(view.goto, true)
    }
    this.root.dataset.ready = "1"
    this.ensureWindows()
    this.queueDraw()
  }

  geometry(): Geometry {
    const st = this.cache!.stat
    return { rows: st.grid[0], cols: st.grid[1], imageW: st.image_size[0], imageH: st.image_size[1] }
  }

  // ------------------------------------------------------------------ windows
  windowOf(step: number): number {
    return Math.floor(step / this.cache!.stat.window)
  }

  loaded(step: number): LoadedWindow | null {
    if (!this.cache) return null
    const w = this.cache.windows.get(this.windowOf(step))
    return w && step >= w.start && step < w.stop ? w : null
  }

  ensureWindows(): void {
    if (!this.cache || !this.cache.stat.has_pointers) return
    const st = this.cache.stat
    const nWin = Math.ceil(st.n_steps / st.window)
    const here = this.windowOf(this.step)
    const wanted = [here, here + 1]
    if (this.playing) wanted.push(here + 2)
    if (this.step % st.window < st.window / 4 && here > 0) wanted.push(here - 1)
    const now = performance.now()
    const ask = wanted.filter((k) => k >= 0 && k < nWin && !this.cache!.windows.has(k)
      && now - (this.pending.get(k) ?? -1e9) > REQUEST_RETRY_MS)
    if (!ask.length) return
    for (const k of ask) this.pending.set(k, now)
    this.args.setTriggerValue("need", { trace_id: this.traceId, windows: ask, base: false })
  }

  // ------------------------------------------------------------------ step
  go(step: number, report = true): void {
    if (!this.cache) return
    const last = this.cache.stat.n_steps - 1
    const s = Math.min(Math.max(Math.round(step), 0), Math.max(last, 0))
    if (s === this.step) return
    this.step = s
    this.ensureWindows()
    this.queueDraw()
    if (report) this.reportStep()
  }

  reportStep(): void {
    window.clearTimeout(this.reportTimer)
    if (this.playing) return
    this.reportTimer = window.setTimeout(() => {
      this.args.setStateValue("step", this.step)
      if (this.view?.sync_url) this.syncUrl()
    }, STEP_REPORT_MS)
  }

  // The server sets ?step= too, but the browser applies a fragment run's query parameters only with the next
  // message; writing it here keeps a copied address equal to what is on screen.
  syncUrl(): void {
    const u = new URL(window.location.href)
    if (u.searchParams.get("trace") !== this.traceId || u.searchParams.get("step") === String(this.step)) return
    u.searchParams.set("step", String(this.step))
    window.history.replaceState(window.history.state, "", u.toString())
  }

  revisitJump(dir: number): void {
    if (!this.cache) return
    const rvs = this.cache.stat.revisits
    if (dir > 0) {
      const nxt = rvs.find((r) => r.start > this.step)
      if (nxt) this.go(nxt.start)
    } else {
      const cur = this.currentRevisit()
      const prev = [...rvs].reverse().find((r, j) => r.start < this.step && rvs.length - 1 - j !== cur)
      if (prev) this.go(prev.start)
    }
  }

  currentRevisit(): number {
    if (!this.cache) return -1
    return this.cache.stat.revisits.findIndex((r) => r.start <= this.step && this.step < r.end)
  }

  togglePlay(): void {
    if (this.playing) this.stop(true)
    else this.play()
  }

  play(): void {
    if (!this.cache || this.playing) return
    if (this.step >= this.cache.stat.n_steps - 1) this.go(0, false)
    this.playing = true
    this.playBtn.textContent = "⏸ Pause"
    this.root.dataset.playing = "1"
    this.nextDue = performance.now() + 1000 / this.speed
    const tick = (t: number) => {
      if (!this.playing || !this.cache) return
      if (t >= this.nextDue) {
        const nxt = playAdvance(this.step, this.cache.stat.n_steps - 1, !this.cache.stat.has_pointers || !!this.loaded(this.step + 1))
        if (nxt === null) {
          this.stop(true)
          return
        }
        if (nxt !== this.step) {
          this.step = nxt
          this.draw()
          // keep the cadence; after a stall (window loading, slow frame) start again from now, never catch up
          this.nextDue = Math.max(this.nextDue + 1000 / this.speed, t + 0.5 * (1000 / this.speed))
        }
        this.ensureWindows()
      }
      this.raf = requestAnimationFrame(tick)
    }
    this.raf = requestAnimationFrame(tick)
  }

  stop(report: boolean): void {
    if (!this.playing) return
    this.playing = false
    cancelAnimationFrame(this.raf)
    this.playBtn.textContent = "▶ Play"
    this.root.dataset.playing = "0"
    if (report) this.reportStep()
  }

  onKey(e: KeyboardEvent): void {
    const t = e.target as HTMLElement
    if (t !== this.root && (t.tagName === "INPUT" || t.tagName === "SELECT") && e.key !== " ") {
      if (t !== this.slider) return
    }
    let handled = true
    if (e.key === "ArrowRight") { this.stop(false); this.go(this.step + 1) }
    else if (e.key === "ArrowLeft") { this.stop(false); this.go(this.step - 1) }
    else if (e.key === "]") this.revisitJump(1)
    else if (e.key === "[") this.revisitJump(-1)
    else if (e.key === " ") this.togglePlay()
    else if (e.key === "Home") this.go(0)
    else if (e.key === "End" && this.cache) this.go(this.cache.stat.n_steps - 1)
    else handled = false
    if (handled) {
      e.preventDefault()
      e.stopPropagation()
    }
  }

  scrubTo(e: PointerEvent): void {
    if (!this.cache) return
    const r = this.timeline.getBoundingClientRect()
    const n = this.cache.stat.n_steps
    const pad = 8
    const frac = (e.clientX - r.left - pad) / Math.max(r.width - 2 * pad, 1)
    this.go(frac * Math.max(n - 1, 0))
  }

  // ------------------------------------------------------------------ edit mode
  imagePoint(e: PointerEvent): [number, number] {
    const r = this.overlay.getBoundingClientRect()
    return [(e.clientX - r.left) / this.scale, (e.clientY - r.top) / this.scale]
  }

  onStageDown(e: PointerEvent): void {
    if (!this.cache || !this.view?.edit) return
    const [x, y] = this.imagePoint(e)
    this.overlay.setPointerCapture(e.pointerId)
    this.drag = { x0: x, y0: y, x1: x, y1: y, remove: e.shiftKey, moved: false }
    e.preventDefault()
  }

  onStageMove(e: PointerEvent): void {
    if (!this.cache) return
    const [x, y] = this.imagePoint(e)
    const g = this.geometry()
    const k = cellOfPoint(x, y, g)
    const w = this.loaded(this.step)
    let p = ""
    if (w) {
      const q = w.q[(this.step - w.start) * g.rows * g.cols + k]
      p = ` · p ≈ ${(w.pmax[this.step - w.start] * dequantise(q, this.cache.stat.decades)).toPrecision(3)}`
    }
    this.hover.textContent = `patch ${k} (row ${Math.floor(k / g.cols)}, col ${k % g.cols})${p}`
    if (this.drag) {
      this.drag.x1 = x
      this.drag.y1 = y
      if (Math.abs(x - this.drag.x0) * this.scale > 4 || Math.abs(y - this.drag.y0) * this.scale > 4) this.drag.moved = true
      this.queueDraw()
    }
  }

  onStageUp(e: PointerEvent): void {
    if (!this.drag || !this.cache) return
    const d = this.drag
    this.drag = null
    const g = this.geometry()
    const sel = new Set(this.selection)
    if (!d.moved) {
      const k = cellOfPoint(d.x0, d.y0, g)
      if (sel.has(k)) sel.delete(k)
      else sel.add(k)
    } else {
      for (const k of cellsInRect(d.x0, d.y0, d.x1, d.y1, g)) {
        if (d.remove || e.shiftKey) sel.delete(k)
        else sel.add(k)
      }
    }
    this.setSelection(sel)
  }

  setSelection(sel: Set<number>): void {
    this.selection = sel
    this.describeSelection()
    this.queueDraw()
    window.clearTimeout(this.selTimer)
    const ids = Array.from(sel).sort((a, b) => a - b)
    const box = this.cache ? regionText(ids, this.geometry()) : ""
    this.selTimer = window.setTimeout(() => this.args.setStateValue("selection", { ids, box }), 150)
  }

  describeSelection(): void {
    const ids = Array.from(this.selection).sort((a, b) => a - b)
    this.editCount.textContent = `Edit mode: click a patch to toggle it, drag to add a box, shift-drag to remove · ${ids.length} selected`
    this.editText.textContent = ids.length && this.cache ? `box ${regionText(ids, this.geometry())}` : "box –"
    this.editIds.textContent = copyTokens(ids)
    this.root.dataset.selected = String(ids.length)
  }

  // ------------------------------------------------------------------ layout and drawing
  layout(): void {
    if (!this.cache || !this.view) return
    const st = this.cache.stat
    const [w, h] = st.image_size
    const avail = Math.max(this.root.clientWidth, 320)
    const maxW = avail >= 760 ? avail - 260 : avail
    this.scale = Math.min(maxW / w, this.view.height / h)
    const cw = Math.max(1, Math.round(w * this.scale)), ch = Math.max(1, Math.round(h * this.scale))
    this.stage.style.width = `${cw}px`
    this.stage.style.height = `${ch}px`
    for (const c of [this.img, this.heat, this.overlay]) {
      c.style.width = `${cw}px`
      c.style.height = `${ch}px`
    }
    const dpr = window.devicePixelRatio || 1
    this.overlay.width = Math.round(cw * dpr)
    this.overlay.height = Math.round(ch * dpr)
    this.heat.width = st.grid[1]
    this.heat.height = st.grid[0]
    const tw = Math.max(this.root.clientWidth, 320)
    if (this.timeline.width !== Math.round(tw * dpr)) {
      this.timeline.width = Math.round(tw * dpr)
      this.timeline.height = Math.round(TIMELINE_H * dpr)
      this.timelineBase = null
    }
    if (this.strip.clientWidth !== this.stripWidth) this.stripDirty = true
    this.queueDraw()
  }

  queueDraw(): void {
    if (this.drawQueued) return
    this.drawQueued = true
    requestAnimationFrame(() => {
      this.drawQueued = false
      this.draw()
    })
  }

  draw(): void {
    if (!this.cache || !this.view) return
    const st = this.cache.stat
    const n = st.n_steps
    const i = this.step
    this.slider.value = String(i)
    this.stepLabel.textContent = `step ${i} / ${Math.max(n - 1, 0)}`
    this.prevBtn.disabled = i <= 0
    this.nextBtn.disabled = i >= n - 1
    const cur = this.currentRevisit()
    this.prevRvBtn.disabled = !st.revisits.some((r, j) => r.start < i && j !== cur)
    this.nextRvBtn.disabled = !st.revisits.some((r) => r.start > i)
    const drawn = this.drawHeat()
    this.drawOverlay(drawn)
    this.drawDetails(cur)
    this.renderStrip(true)
    this.drawTimeline()
    this.root.dataset.step = String(i)
    this.root.dataset.heat = drawn ? String(i) : "-1"
  }

  drawHeat(): boolean {
    const ctx = this.heat.getContext("2d")!
    const w = this.loaded(this.step)
    if (!w || !this.gridImg) {
      ctx.clearRect(0, 0, this.heat.width, this.heat.height)
      return false
    }
    const cells = this.gridImg.width * this.gridImg.height
    const q = w.q.subarray((this.step - w.start) * cells, (this.step - w.start + 1) * cells)
    const px = this.gridImg.data
    const lut = this.lut
    for (let k = 0, o = 0; k < cells; k++, o += 4) {
      const b = q[k] * 4
      px[o] = lut[b]
      px[o + 1] = lut[b + 1]
      px[o + 2] = lut[b + 2]
      px[o + 3] = lut[b + 3]
    }
    ctx.putImageData(this.gridImg, 0, 0)
    return true
  }

  argmax(): number {
    const w = this.loaded(this.step)
    if (!w || !this.gridImg) return -1
    const cells = this.gridImg.width * this.gridImg.height
    const off = (this.step - w.start) * cells
    let best = -1, bv = -1
    for (let k = 0; k < cells; k++) {
      const v = w.q[off + k]
      if (v > bv) { bv = v; best = k }
    }
    return bv > 0 ? best : -1
  }

  drawOverlay(heatDrawn: boolean): void {
    const st = this.cache!.stat
    const view = this.view!
    const ctx = this.overlay.getContext("2d")!
    const dpr = window.devicePixelRatio || 1
    const W = this.overlay.width, H = this.overlay.height
    ctx.setTransform(1, 0, 0, 1, 0, 0)
    ctx.clearRect(0, 0, W, H)
    const [rows, cols] = st.grid
    const cw = W / cols, ch = H / rows
    const cellRect = (k: number): [number, number, number, number] => [(k % cols) * cw, Math.floor(k / cols) * ch, cw, ch]
    if (!heatDrawn && st.has_pointers) {
      ctx.fillStyle = "rgba(0,0,0,.45)"
      ctx.fillRect(0, 0, W, 22 * dpr)
      ctx.fillStyle = "#fff"
      ctx.font = `${12 * dpr}px sans-serif`
      ctx.fillText("loading this step's pointer…", 6 * dpr, 15 * dpr)
    }
    if (view.show_argmax && heatDrawn) {
      const k = this.argmax()
      if (k >= 0) {
        ctx.setLineDash([3 * dpr, 3 * dpr])
        ctx.strokeStyle = "#ffffff"
        ctx.lineWidth = 1.5 * dpr
        ctx.strokeRect(...cellRect(k))
        ctx.setLineDash([])
      }
    }
    // revisit boxes: one per connected group, labelled R1·1, R1·2
    const cur = this.currentRevisit()
    const boxes: RevisitBox[] = []
    if (view.regions === "all") for (const r of st.revisits) boxes.push(...r.boxes)
    else if (view.regions === "current" && cur >= 0) boxes.push(...st.revisits[cur].boxes)
    boxes.push(...(view.boxes || []))
    ctx.font = `${12 * dpr}px sans-serif`
    boxes.forEach((b, j) => {
      const colour = REGION_COLOURS[j % REGION_COLOURS.length]
      ctx.strokeStyle = colour
      ctx.lineWidth = 2.5 * dpr
      ctx.setLineDash([6 * dpr, 4 * dpr])
      const x0 = b.box[0] * W, y0 = b.box[1] * H
      ctx.strokeRect(x0, y0, (b.box[2] - b.box[0]) * W, (b.box[3] - b.box[1]) * H)
      ctx.setLineDash([])
      ctx.fillStyle = "rgba(0,0,0,.55)"
      const tw = ctx.measureText(b.label).width + 6 * dpr
      const ly = Math.max(y0 - 15 * dpr, 0)
      ctx.fillRect(x0, ly, tw, 15 * dpr)
      ctx.fillStyle = colour
      ctx.fillText(b.label, x0 + 3 * dpr, ly + 12 * dpr)
    })
    const copied = st.copy[this.step]
    if (copied >= 0) {
      ctx.strokeStyle = COPY_COLOUR
      ctx.lineWidth = 3.5 * dpr
      ctx.strokeRect(...cellRect(copied))
    }
    if (view.edit) {
      ctx.fillStyle = "rgba(124,252,0,0.42)"
      for (const k of this.selection) ctx.fillRect(...cellRect(k))
      if (this.drag && this.drag.moved) {
        const s = this.scale * dpr
        ctx.strokeStyle = this.drag.remove ? "#ff5252" : "#7CFC00"
        ctx.lineWidth = 1.5 * dpr
        ctx.strokeRect(this.drag.x0 * s, this.drag.y0 * s, (this.drag.x1 - this.drag.x0) * s, (this.drag.y1 - this.drag.y0) * s)
      }
    }
  }

  drawDetails(cur: number): void {
    const st = this.cache!.stat
    const i = this.step
    const copied = st.copy[i]
    this.title.textContent = `Step ${i} · ${copied >= 0 ? `copy → patch ${copied}` : "text token"}`
    this.token.textContent = copied >= 0 ? `<|copy_${copied}|>` : st.tokens[i] ?? ""
    const fmt = (v: number | null | undefined, d: number) => (v === null || v === undefined ? "–" : v.toFixed(d))
    this.metrics.replaceChildren()
    for (const [name, v, d, tip] of [["p_copy", st.p_copy[i], 3, "probability mass on all copy (patch) tokens"],
      ["gate", st.gate[i], 3, "the copy gate"],
      ["entropy", st.entropy[i], 2, `pointer entropy in nats (uniform = ${st.max_entropy.toFixed(2)})`]] as const) {
      const m = el("div")
      m.title = tip
      m.append(el("span", undefined, name), el("b", undefined, fmt(v, d)))
      this.metrics.appendChild(m)
    }
    this.topk.replaceChildren()
    const [texts, probs] = st.topk[i] ?? [[], []]
    texts.forEach((t, j) => {
      const tr = el("tr")
      tr.append(el("td", undefined, t), el("td", undefined, probs[j] !== undefined ? probs[j].toFixed(3) : ""))
      this.topk.appendChild(tr)
    })
    if (cur >= 0) {
      const r = st.revisits[cur]
      const steps = r.end - r.start > 1 ? `steps ${r.start}–${r.end - 1}` : `step ${r.start}`
      this.rvcap.textContent = `Inside revisit R${cur + 1} (${steps})${r.query !== null ? ` · detect(query="${r.query}")` : ""}`
    } else this.rvcap.textContent = ""
  }

  // ------------------------------------------------------------------ token strip (virtualised)
  layoutStrip(): void {
    const st = this.cache!.stat
    const n = st.n_steps
    const width = Math.max(this.strip.clientWidth - 8, 100)
    this.stripWidth = this.strip.clientWidth
    const ctx = this.grid.getContext("2d")!
    ctx.font = "12px monospace"
    this.chipX = new Float32Array(n)
    this.chipW = new Float32Array(n)
    this.chipRow = new Int32Array(n)
    this.rowStart = [0]
    let x = 4, row = 0
    for (let i = 0; i < n; i++) {
      const text = st.copy[i] >= 0 ? `◎ ${st.copy[i]}` : st.tokens[i]
      const w = Math.min(ctx.measureText(text).width + 12, 180)
      if (x + w > width && x > 4) {
        row++
        x = 4
        this.rowStart.push(i)
      }
      this.chipX[i] = x
      this.chipW[i] = w
      this.chipRow[i] = row
      x += w + 3
    }
    this.stripInner.style.height = `${(row + 1) * ROW_H + 4}px`
    this.stripDirty = false
    this.renderedRows = [-1, -1]
    this.chips.clear()
    this.stripInner.replaceChildren()
  }

  renderStrip(follow: boolean): void {
    if (!this.cache) return
    if (this.stripDirty) this.layoutStrip()
    const st = this.cache.stat
    const n = st.n_steps
    if (!n) return
    if (follow) {
      const y = this.chipRow[this.step] * ROW_H
      const top = this.strip.scrollTop, hgt = this.strip.clientHeight
      if (y < top || y + ROW_H > top + hgt) this.strip.scrollTop = Math.max(0, y - ROW_H * 2)
    }
    const nRows = this.rowStart.length
    const first = Math.max(0, Math.floor(this.strip.scrollTop / ROW_H) - 2)
    const last = Math.min(nRows - 1, Math.ceil((this.strip.scrollTop + this.strip.clientHeight) / ROW_H) + 2)
    if (first !== this.renderedRows[0] || last !== this.renderedRows[1]) {
      const from = this.rowStart[first], to = last + 1 < nRows ? this.rowStart[last + 1] : n
      for (const [i, c] of this.chips) if (i < from || i >= to) { c.remove(); this.chips.delete(i) }
      const frag = document.createDocumentFragment()
      for (let i = from; i < to; i++) {
        if (this.chips.has(i)) continue
        const c = el("div", "v1c-chip", st.copy[i] >= 0 ? `◎ ${st.copy[i]}` : st.tokens[i])
        if (st.copy[i] >= 0) c.classList.add("copy")
        c.dataset.i = String(i)
        c.title = `step ${i}`
        c.style.left = `${this.chipX[i]}px`
        c.style.top = `${this.chipRow[i] * ROW_H + 2}px`
        c.style.width = `${this.chipW[i]}px`
        this.chips.set(i, c)
        frag.appendChild(c)
      }
      this.stripInner.appendChild(frag)
      this.renderedRows = [first, last]
    }
    const cur = this.currentRevisit()
    const rv = cur >= 0 ? st.revisits[cur] : null
    for (const [i, c] of this.chips) {
      c.classList.toggle("cur", i === this.step)
      c.classList.toggle("inrv", !!rv && i >= rv.start && i < rv.end)
    }
  }

  // ------------------------------------------------------------------ timeline
  drawTimeline(): void {
    const st = this.cache!.stat
    const W = this.timeline.width, H = this.timeline.height
    if (!W || !H) return
    const dpr = window.devicePixelRatio || 1
    const pad = 8 * dpr
    const n = st.n_steps
    const xOf = (i: number) => pad + (n > 1 ? (i / (n - 1)) * (W - 2 * pad) : (W - 2 * pad) / 2)
    if (!this.timelineBase) {
      const base = document.createElement("canvas")
      base.width = W
      base.height = H
      const c = base.getContext("2d")!
      const top = 14 * dpr, bottom = H - 14 * dpr
      const yOf = (v: number) => bottom - v * (bottom - top)
      c.fillStyle = "rgba(0,172,193,0.15)"
      c.font = `${10 * dpr}px sans-serif`
      st.revisits.forEach((r, j) => {
        const x0 = xOf(r.start - 0.5), x1 = xOf(r.end - 0.5)
        c.fillStyle = "rgba(0,172,193,0.15)"
        c.fillRect(x0, 0, Math.max(x1 - x0, 1), H)
        c.fillStyle = "#00838f"
        c.fillText(`R${j + 1}`, x0 + 1, 10 * dpr)
      })
      const series = (vals: (number | null)[], colour: string, norm: number) => {
        c.strokeStyle = colour
        c.lineWidth = 1.5 * dpr
        c.beginPath()
        let pen = false
        vals.forEach((v, i) => {
          if (v === null) { pen = false; return }
          const y = yOf(Math.min(Math.max(v / norm, 0), 1))
          if (pen) c.lineTo(xOf(i), y)
          else c.moveTo(xOf(i), y)
          pen = true
        })
        c.stroke()
      }
      series(st.entropy, "#ff7f0e", Math.max(st.max_entropy, 1e-3))
      series(st.p_copy, "#1f77b4", 1)
      c.fillStyle = "#00acc1"
      st.copy.forEach((k, i) => { if (k >= 0) c.fillRect(xOf(i) - dpr, bottom + 3 * dpr, 2 * dpr, 8 * dpr) })
      c.fillStyle = "#1f77b4"
      c.fillText("p_copy", W - 110 * dpr, H - 2 * dpr)
      c.fillStyle = "#ff7f0e"
      c.fillText("entropy / max", W - 70 * dpr, H - 2 * dpr)
      this.timelineBase = base
    }
    const ctx = this.timeline.getContext("2d")!
    ctx.clearRect(0, 0, W, H)
    ctx.drawImage(this.timelineBase, 0, 0)
    ctx.strokeStyle = "#d62728"
    ctx.lineWidth = 2 * dpr
    const x = xOf(this.step)
    ctx.beginPath()
    ctx.moveTo(x, 0)
    ctx.lineTo(x, H)
    ctx.stroke()
  }

  destroy(): void {
    this.stop(false)
    window.clearTimeout(this.reportTimer)
    window.clearTimeout(this.selTimer)
    window.clearInterval(this.poll)
    this.resizeObs.disconnect()
    this.root.remove()
  }
}

const INSTANCES = new WeakMap<object, TraceCanvas>()

const TraceCanvasRenderer: FrontendRenderer<CanvasState, CanvasData> = (args) => {
  let inst = INSTANCES.get(args.parentElement)
  if (!inst) {
    inst = new TraceCanvas(args)
    INSTANCES.set(args.parentElement, inst)
  }
  inst.update(args)
  return () => {
    const i = INSTANCES.get(args.parentElement)
    if (i) {
      i.destroy()
      INSTANCES.delete(args.parentElement)
    }
  }
}

export default TraceCanvasRenderer
