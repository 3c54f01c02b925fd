// Calls to the store's HTTP API and its websockets, with the tab's token.

import { getToken } from "./token.js";

/** A reply that was not 2xx: `status`, and the store's `code` and `error` sentence. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `The store answered ${status}.`);
    this.status = status;
    this.code = (body && body.code) || (status === 0 ? "network" : "unknown");
  }
}

/** `path` encoded segment by segment: `seg("ds1", "job", id)` -> "/ds1/job/<id>/". */
export function seg(...parts) {
  return "/" + parts.map((p) => encodeURIComponent(p)).join("/") + "/";
}

/**
 * Call the API: resolves to {body, headers}; rejects with ApiError (status 0: no answer).
 * Every call sends the token in the Authorization header.
 */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${getToken() || ""}` };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { error: "The store did not answer.", code: "network" });
  }
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return { body: data, headers: response.headers };
}

/** The URL of a websocket on this store: the token goes in `?token=`, the one way a browser can. */
export function wsUrl(path, params) {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  url.search = "";
  for (const [k, v] of Object.entries(params || {})) url.searchParams.set(k, String(v));
  url.searchParams.set("token", getToken() || "");
  return url.toString();
}

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;

/**
 * A websocket that reconnects by itself with exponential backoff and jitter, resuming with
 * `?after=<last seq>` so that nothing is lost; frames with a seq already seen are dropped.
 *
 * options: after (seq to replay from, or null for live only), onFrame(frame), onState(state,
 * detail) with state "connecting" | "live" | "reconnecting" | "closed" | "expired",
 * onOpen(resumed) after each (re)connection.
 */
export class LiveSocket {
  constructor(path, options) {
    this.path = path;
    this.options = options;
    this.lastSeq = options.after ?? null;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
    this.state = "connecting";
    this.connect();
  }

  setState(state, detail) {
    this.state = state;
    if (this.options.onState) this.options.onState(state, detail);
  }

  connect() {
    if (this.stopped) return;
    const resumed = this.lastSeq !== null;
    const params = resumed ? { after: this.lastSeq } : {};
    const ws = new WebSocket(wsUrl(this.path, params));
    this.ws = ws;
    this.setState(this.attempt ? "reconnecting" : "connecting");
    ws.onopen = () => {
      this.attempt = 0;
      this.setState("live");
      if (this.options.onOpen) this.options.onOpen(resumed);
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof frame.seq !== "number") return;
      if (this.lastSeq !== null && frame.seq <= this.lastSeq) return;
      this.lastSeq = frame.seq;
      this.options.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws || this.stopped) return;
      if (event.code === 4001) {
        this.setState("expired");
        return;
      }
      const m = /after=(\d+)/.exec(event.reason || "");
      if (m && this.lastSeq === null) this.lastSeq = Number(m[1]);
      this.attempt += 1;
      const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (this.attempt - 1));
      const wait = Math.round(delay * (0.5 + Math.random() / 2));
      this.setState("reconnecting", wait);
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  /** Close for good. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
    }
    this.setState("closed");
  }
}
