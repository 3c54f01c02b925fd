// Shows a document of docs/ (served as text under /ui/docs/), rendered from its Markdown by a
// small renderer for the subset the documents use: headings, paragraphs, lists, tables, fenced
// code, images, links, `code`, **bold** and *emphasis*. Text is never parsed as HTML.

const DOCS = new Set(["protocol.md", "operations.md"]);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** The anchor GitHub gives a heading (so that links between the documents keep working). */
export function slug(text) {
  return text.trim().toLowerCase().replace(/[^\p{L}\p{N}_\- ]/gu, "").replace(/ /g, "-");
}

/** Where a link of a document goes when the document is shown here. */
function target(href) {
  const [path, anchor] = href.split("#");
  if (/^https?:/.test(href)) return { href, external: true };
  if (!path) return { href: `#${anchor}` };
  const name = path.split("/").pop();
  if (DOCS.has(name) && !path.startsWith("../")) return { href: `doc.html?doc=${name}${anchor ? "#" + anchor : ""}` };
  const schema = /(?:^|\/)schemas\/(\w+)\.json$/.exec(path);
  if (schema) return { href: `openapi.html#schema-${schema[1]}` };
  return { href: null }; // a file of the repository, not served by the store
}

/** Inline Markdown to nodes. */
function inline(text) {
  const out = [];
  const pattern = /(`[^`]+`)|!\[([^\]]*)\]\(([^)\s]+)\)|\[([^\]]+)\]\(([^)\s]+)\)|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*/g;
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1]) out.push(h("code", {}, m[1].slice(1, -1)));
    else if (m[3] !== undefined) {
      const t = target(m[3]);
      out.push(h("em", { class: "muted" }, `[${m[2]}: a screenshot in the repository's docs/]`));
    } else if (m[5] !== undefined) {
      const t = target(m[5]);
      const label = inline(m[4]);
      out.push(t.href ? h("a", t.external ? { href: t.href, rel: "noreferrer noopener" } : { href: t.href }, label) : h("span", { class: "repo-file", title: `${m[5]} (in the repository)` }, label));
    } else if (m[6]) out.push(h("strong", {}, inline(m[6])));
    else if (m[7]) out.push(h("em", {}, inline(m[7])));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function cells(line) {
  return line.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
}

/** Block Markdown to nodes. */
export function render(markdown) {
  const lines = markdown.replace(/\r\n/g, "\n").split("\n");
  const out = [];
  let i = 0;
  const para = [];
  const flush = () => {
    if (para.length) out.push(h("p", {}, inline(para.join(" "))));
    para.length = 0;
  };
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (/^```/.test(line)) {
      flush();
      const code = [];
      for (i++; i < lines.length && !/^```/.test(lines[i]); i++) code.push(lines[i]);
      out.push(h("pre", {}, code.join("\n")));
      i++;
    } else if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
      flush();
      out.push(h(`h${m[1].length}`, { id: slug(m[2].replace(/[`*]/g, "")) }, inline(m[2])));
      i++;
    } else if (/^\|/.test(line)) {
      flush();
      const head = cells(line);
      const rows = [];
      for (i += 2; i < lines.length && /^\|/.test(lines[i]); i++) rows.push(cells(lines[i]));
      out.push(h("table", { class: "grid" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, inline(c))))), h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, inline(c))))))));
    } else if ((m = /^(\s*)([-*]|\d+\.)\s+(.*)$/.exec(line))) {
      flush();
      const ordered = /\d/.test(m[2]);
      const items = [];
      while (i < lines.length && (m = /^(\s*)([-*]|\d+\.)\s+(.*)$/.exec(lines[i]))) {
        const text = [m[3]];
        for (i++; i < lines.length && /^\s{2,}\S/.test(lines[i]) && !/^\s*([-*]|\d+\.)\s/.test(lines[i]); i++) text.push(lines[i].trim());
        items.push(h("li", {}, inline(text.join(" "))));
      }
      out.push(h(ordered ? "ol" : "ul", {}, items));
    } else if (!line.trim()) {
      flush();
      i++;
    } else {
      para.push(line.trim());
      i++;
    }
  }
  flush();
  return out;
}

async function main() {
  const main = document.getElementById("main");
  const name = new URLSearchParams(location.search).get("doc") || "protocol.md";
  if (!DOCS.has(name)) {
    main.replaceChildren(h("div", { class: "state empty" }, h("strong", {}, `There is no document ${name}.`)));
    return;
  }
  let text;
  try {
    const response = await fetch(`docs/${name}`, { credentials: "omit", cache: "no-cache" });
    if (!response.ok) throw new Error(`The store answered ${response.status}.`);
    text = await response.text();
  } catch (e) {
    main.replaceChildren(h("div", { class: "state down" }, h("strong", {}, "The document could not be read."), h("p", {}, String(e.message || e))));
    return;
  }
  document.title = `jobqueue-store · ${name}`;
  main.replaceChildren(h("article", { class: "card prose" }, render(text), h("p", { class: "muted" }, "Plain text: ", h("a", { href: `docs/${name}` }, `docs/${name}`))));
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
}

main();
