// A small live chart: submits and completions per second over the last minute, on a canvas.

const SECONDS = 60;

/** Counts events per second (by the time each event happened) and draws them. */
export class RateChart {
  constructor() {
    this.series = { submits: new Map(), completions: new Map() };
    this.keys = new Map(); // what was counted (key -> second), so that no event counts twice
    this.canvas = null;
    this.legend = null;
    this.timer = null;
    this.queued = false;
  }

  /**
   * Count one event of `kind` ("submits" or "completions") that happened at `ms`, once per
   * `key` (the same change may be seen in a list and on a websocket).
   */
  add(kind, ms, key) {
    if (typeof ms !== "number") return;
    const second = Math.floor(ms / 1000);
    const now = Math.floor(Date.now() / 1000);
    if (second <= now - SECONDS || second > now + 5) return; // older history: not a rate
    if (key !== undefined) {
      if (this.keys.has(key)) return;
      this.keys.set(key, second);
    }
    const map = this.series[kind];
    map.set(second, (map.get(second) || 0) + 1);
    if (this.canvas && !this.queued) {
      this.queued = true;
      requestAnimationFrame(() => {
        this.queued = false;
        this.draw();
      });
    }
  }

  /** Attach to a canvas and a legend element and redraw every second until detached. */
  attach(canvas, legend) {
    this.detach();
    this.canvas = canvas;
    this.legend = legend;
    this.draw();
    this.timer = setInterval(() => this.draw(), 1000);
  }

  detach() {
    clearInterval(this.timer);
    this.canvas = null;
    this.legend = null;
  }

  values(kind, now) {
    const map = this.series[kind];
    for (const second of map.keys()) if (second <= now - SECONDS) map.delete(second);
    for (const [key, second] of this.keys) if (second <= now - SECONDS - 5) this.keys.delete(key);
    const out = [];
    for (let s = now - SECONDS + 1; s <= now; s++) out.push(map.get(s) || 0);
    return out;
  }

  draw() {
    const canvas = this.canvas;
    if (!canvas || !canvas.isConnected) return this.detach();
    const now = Math.floor(Date.now() / 1000); // the current second counts as it fills
    const submits = this.values("submits", now);
    const completions = this.values("completions", now);
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 320;
    const height = canvas.clientHeight || 72;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const top = Math.max(1, ...submits, ...completions);
    const pad = 4;
    ctx.strokeStyle = "#e3e7ee";
    ctx.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(pad + (height - 2 * pad) * f) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, y);
      ctx.lineTo(width, y);
      ctx.stroke();
    }
    const line = (values, color) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      values.forEach((v, i) => {
        const x = (i / (SECONDS - 1)) * width;
        const y = height - pad - (v / top) * (height - 2 * pad);
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.stroke();
    };
    line(submits, "#2f6fb0");
    line(completions, "#2a9d6f");
    if (this.legend) {
      const last = (values) => values[values.length - 1];
      this.legend.textContent =
        `submits ${last(submits)}/s · completions ${last(completions)}/s · peak ${top}/s (last minute)`;
    }
  }
}
