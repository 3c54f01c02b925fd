// Renders the store's OpenAPI document (GET /openapi.json, read with the tab's token).

import { api, ApiError } from "./api.js";
import { getToken } from "./token.js";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const METHODS = ["get", "put", "post", "delete", "patch"];

function refName(ref) {
  return ref.replace("#/components/schemas/", "");
}

function schemaLink(schema) {
  if (!schema) return "";
  if (schema.$ref) return h("a", { href: `#schema-${refName(schema.$ref)}` }, refName(schema.$ref));
  if (schema.type === "array" && schema.items) return ["array of ", schemaLink(schema.items)];
  return h("code", {}, JSON.stringify(schema));
}

function bodyOf(content) {
  const json = content && content["application/json"];
  return json ? schemaLink(json.schema) : content ? Object.keys(content).join(", ") : "";
}

function operation(path, method, op, shared) {
  const params = [...(shared || []), ...(op.parameters || [])];
  const responses = Object.entries(op.responses || {});
  return h(
    "details",
    { class: "op", id: `op-${op.operationId || method + path}` },
    h("summary", {}, h("span", { class: `method m-${method}` }, method.toUpperCase()), h("span", { class: "path" }, path), h("span", { class: "muted" }, op.summary || "")),
    h(
      "div",
      {},
      op.description ? h("p", {}, op.description) : null,
      params.length
        ? [h("h3", {}, "Parameters"), h("table", { class: "grid" }, h("tbody", {}, params.map((p) => h("tr", {}, h("td", { class: "mono" }, p.name), h("td", {}, p.in, p.required ? " · required" : ""), h("td", {}, p.description || ""), h("td", { class: "mono" }, JSON.stringify(p.schema || {}))))))]
        : null,
      op.requestBody ? [h("h3", {}, "Request body"), h("p", {}, bodyOf(op.requestBody.content))] : null,
      h("h3", {}, "Responses"),
      h("table", { class: "grid" }, h("tbody", {}, responses.map(([code, r]) => h("tr", {}, h("td", {}, h("b", {}, code)), h("td", {}, r.description || ""), h("td", {}, bodyOf(r.content)))))),
    ),
  );
}

function render(doc) {
  const main = document.getElementById("main");
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) if (item[method]) ops.push(operation(path, method, item[method], item.parameters));
  }
  const schemas = Object.entries((doc.components && doc.components.schemas) || {});
  main.replaceChildren(
    h("section", { class: "card" }, h("h1", {}, `${doc.info.title} ${doc.info.version}`), h("p", {}, doc.info.description || ""), h("p", { class: "muted" }, `OpenAPI ${doc.openapi} · authentication: Authorization: Bearer <token> or X-Api-Key: <token>`)),
    h("section", { class: "card", id: "operations" }, h("h2", {}, "Endpoints"), ops),
    h("section", { class: "card", id: "schemas" }, h("h2", {}, "Records (JSON Schema)"), schemas.map(([name, schema]) => h("details", { class: "op", id: `schema-${name}` }, h("summary", {}, h("span", { class: "path" }, name), h("span", { class: "muted" }, schema.description || "")), h("div", {}, h("pre", {}, JSON.stringify(schema, null, 2)))))),
  );
  if (location.hash) document.getElementById(location.hash.slice(1))?.setAttribute("open", "");
}

async function main() {
  const box = document.getElementById("main");
  if (!getToken()) {
    box.replaceChildren(h("div", { class: "state forbidden" }, h("strong", {}, "Sign in first."), h("p", {}, "The API document is read with your token: ", h("a", { href: "./" }, "sign in on the dashboard"), ", then come back.")));
    return;
  }
  try {
    const { body } = await api("GET", "/openapi.json");
    render(body);
  } catch (e) {
    const text = e instanceof ApiError ? e.message : String(e);
    box.replaceChildren(h("div", { class: "state forbidden" }, h("strong", {}, "The API document could not be read."), h("p", {}, text)));
  }
}

main();
