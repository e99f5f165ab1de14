// Search the credential's tenant's chunks (POST /v1/search).
import { ApiError, post } from "../api.js";
import { append, banner, clear, field, h } from "../dom.js";

export function mountSearch(container, { params, me, go }) {
  const query = h("input", { id: "search-query", class: "wide", value: params.get("q") || "", placeholder: "what to look for" });
  const mode = h("select", { id: "search-mode" },
    ["vector", "hybrid"].map((m) => h("option", { value: m, selected: params.get("mode") === m }, m)));
  const limit = h("input", { id: "search-limit", type: "number", min: 1, max: 100, value: params.get("limit") || "10" });
  const results = h("div", { id: "search-results" });
  const form = h("form", { class: "panel row", id: "search-form" },
    field("query", query), field("mode", mode), field("results", limit),
    h("button", { type: "submit", class: "primary" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!query.value.trim()) return;
    go("search", "", new URLSearchParams({ q: query.value.trim(), mode: mode.value, limit: limit.value }));
  });
  container.append(h("h1", {}, "Search"),
    h("p", { class: "muted" }, `Chunks of tenant ${me.tenant} (the credential's tenant).`), form, results);
  let stopped = false;
  async function run() {
    const q = params.get("q");
    if (!q) return;
    append(clear(results), h("p", { class: "muted" }, "Searching…"));
    let found;
    try {
      found = await post("v1/search", { query: q, mode: params.get("mode") || "vector", limit: Number(params.get("limit") || 10) });
    } catch (error) {
      const hint = error instanceof ApiError && (error.status === 404 || error.status === 405)
        ? " (this API has no search endpoint)" : "";
      append(clear(results), banner("error", `${error.message}${hint}`));
      return;
    }
    if (stopped) return;
    append(clear(results), h("div", { class: "panel" },
      found.results.length
        ? h("table", { id: "search-table" },
          h("thead", {}, h("tr", {}, ["document", "chunk", "score", "text"].map((t) => h("th", {}, t)))),
          h("tbody", {}, found.results.map((r) => h("tr", { dataset: { document: r.document_id } },
            h("td", { class: "mono" }, h("a", { href: `#/documents/${encodeURIComponent(r.document_id)}` }, r.document_id)),
            h("td", { class: "num" }, r.chunk_index),
            h("td", { class: "num" }, r.score.toFixed(4)),
            h("td", {}, r.text ?? "")))))
        : h("p", {}, "Nothing found.")));
  }
  run();
  return () => { stopped = true; };
}
