// Pure helpers shared by the canvas and its tests (no DOM here: tests import the bundle in Node).
//
// Coordinate spaces, as in v1core/geometry.py: patch ids k = row * cols + col (row-major); "image" boxes are
// original-image pixels (x right, y down, exclusive end); "fraction" boxes are image boxes divided by the
// image size.

export interface Geometry {
  rows: number
  cols: number
  imageW: number // original image width in px
  imageH: number
}

/** Python's round(x, 2) (correctly rounded, ties to even on the double's exact value), as cents. */
export function roundCents(x: number): number {
  const s = Math.abs(x).toFixed(100) // the exact decimal expansion of a double in [0, 1]
  const dot = s.indexOf(".")
  const whole = Number(s.slice(0, dot))
  const frac = s.slice(dot + 1)
  let cents = whole * 100 + Number(frac.slice(0, 2))
  const rest = frac.slice(2)
  const half = "5" + "0".repeat(rest.length - 1)
  if (rest > half || (rest === half && cents % 2 === 1)) cents += 1
  return x < 0 ? -cents : cents
}

function cents2(c: number): string {
  const sign = c < 0 ? "-" : ""
  const a = Math.abs(c)
  return `${sign}${Math.floor(a / 100)}.${String(a % 100).padStart(2, "0")}`
}

/** Bounding cells (r0, c0, r1, c1; exclusive end) of a set of patch ids, or null when empty. */
export function cellBounds(ids: Iterable<number>, cols: number): [number, number, number, number] | null {
  let r0 = Infinity, c0 = Infinity, r1 = -Infinity, c1 = -Infinity
  for (const k of ids) {
    const r = Math.floor(k / cols), c = k - r * cols
    if (r < r0) r0 = r
    if (c < c0) c0 = c
    if (r + 1 > r1) r1 = r + 1
    if (c + 1 > c1) c1 = c + 1
  }
  return r0 === Infinity ? null : [r0, c0, r1, c1]
}

/**
 * The union box of patches as v1 writes regions, "[x0, y0, x1, y1]" normalised to the image — the same
 * double arithmetic as PatchGrid.patches_to_box + region_text (28-px cells on the resized grid, scaled to
 * the original image, divided by its size, clamped, Python-rounded to 2 decimals). "" for no patch.
 */
export function regionText(ids: Iterable<number>, g: Geometry): string {
  const b = cellBounds(ids, g.cols)
  if (!b) return ""
  const cell = 28
  const rw = g.cols * cell, rh = g.rows * cell
  const sx = g.imageW / rw, sy = g.imageH / rh
  const px = [b[1] * cell * sx, b[0] * cell * sy, Math.min(b[3] * cell, rw) * sx, Math.min(b[2] * cell, rh) * sy]
  const sizes = [g.imageW, g.imageH, g.imageW, g.imageH]
  const vals = px.map((v, i) => cents2(roundCents(Math.min(Math.max(v / sizes[i], 0), 1))))
  return "[" + vals.join(", ") + "]"
}

/** Patch id under a point in image pixels (edges snap inside), as PatchGrid.cell_of_point. */
export function cellOfPoint(x: number, y: number, g: Geometry): number {
  const cell = 28
  const rw = g.cols * cell, rh = g.rows * cell
  let col = Math.floor((x * rw) / g.imageW / cell + 1e-9)
  let row = Math.floor((y * rh) / g.imageH / cell + 1e-9)
  col = Math.min(Math.max(col, 0), g.cols - 1)
  row = Math.min(Math.max(row, 0), g.rows - 1)
  return row * g.cols + col
}

/** Every patch a rectangle between two image points touches (cells partly inside count). */
export function cellsInRect(x0: number, y0: number, x1: number, y1: number, g: Geometry): number[] {
  const a = cellOfPoint(Math.min(x0, x1), Math.min(y0, y1), g)
  const b = cellOfPoint(Math.max(x0, x1), Math.max(y0, y1), g)
  const ra = Math.floor(a / g.cols), ca = a % g.cols, rb = Math.floor(b / g.cols), cb = b % g.cols
  const out: number[] = []
  for (let r = ra; r <= rb; r++) for (let c = ca; c <= cb; c++) out.push(r * g.cols + c)
  return out
}

/** `<|copy_k|>` tokens of the ids, ascending (v1core/copy_tokens.py spells them this way). */
export function copyTokens(ids: Iterable<number>): string {
  return Array.from(ids).sort((a, b) => a - b).map((k) => `<|copy_${k}|>`).join("")
}

/** Decode a base64 string to bytes (atob exists in browsers and in Node ≥ 16). */
export function b64bytes(s: string): Uint8Array {
  const bin = atob(s)
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

/** The value a display byte stands for, relative to the step's maximum (app/canvas_data.py). */
export function dequantise(q: number, decades: number): number {
  return q === 0 ? 0 : Math.pow(10, (-decades * (255 - q)) / 254)
}

/** Next step while playing: one step per due frame, never more, never back (null at the end). */
export function playAdvance(step: number, last: number, ready: boolean): number | null {
  if (step >= last) return null
  return ready ? step + 1 : step
}
