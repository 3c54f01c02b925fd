// The signed-in token: kept in this tab's session storage only, never in a URL.
// The page reads the token's caveats to pick its views (role, client, datasources); the store
// verifies the token on every call, so nothing here grants anything.

const KEY = "jobqueue-store.token";

/** The token of this tab, or null. */
export function getToken() {
  return sessionStorage.getItem(KEY);
}

/** Keep `token` for this tab. */
export function setToken(token) {
  sessionStorage.setItem(KEY, token);
}

/** Forget the token. */
export function clearToken() {
  sessionStorage.removeItem(KEY);
}

function base64UrlBytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  const raw = atob(padded);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/**
 * The first-party caveats of a macaroon (pymacaroons' binary serialization: packets of a
 * 4-hex-digit length then "key value\n"). Returns {role, client, dsids, expires} or null.
 */
export function describeToken(token) {
  let bytes;
  try {
    bytes = base64UrlBytes(token.trim());
  } catch {
    return null;
  }
  const decoder = new TextDecoder();
  const out = { role: null, client: null, dsids: null, expires: null };
  let i = 0;
  while (i + 4 <= bytes.length) {
    const size = parseInt(decoder.decode(bytes.slice(i, i + 4)), 16);
    if (!Number.isFinite(size) || size < 5 || i + size > bytes.length) return null;
    const packet = bytes.slice(i + 4, i + size);
    i += size;
    const space = packet.indexOf(0x20);
    if (space < 0) continue;
    const key = decoder.decode(packet.slice(0, space));
    if (key !== "cid") continue;
    const caveat = decoder.decode(packet.slice(space + 1)).replace(/\n$/, "");
    const m = /^(\w+) (=|<) (.*)$/.exec(caveat);
    if (!m) continue;
    const [, name, , value] = m;
    if (name === "role") out.role = value;
    else if (name === "client") out.client = value;
    else if (name === "dsid") out.dsids = value.split(",");
    else if (name === "time") out.expires = Date.parse(value);
  }
  return out.role ? out : null;
}
