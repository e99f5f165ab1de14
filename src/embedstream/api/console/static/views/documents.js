// A document by id: what PostgreSQL, the system of record, holds for it (GET /v1/documents/{id}).
import { ApiError, get } from "../api.js";
import { append, banner, clear, h, pill, when } from "../dom.js";
import { lookupForm } from "./lookup.js";

export function mountDocuments(container, { arg, me, go }) {
  const result = h("div", { id: "document-result" });
  container.append(
    h("h1", {}, "Documents"),
    h("p", { class: "muted" }, `Documents of tenant ${me.tenant} (the credential's tenant).`),
    lookupForm({ id: "document-id", label: "document id", value: arg, placeholder: "handbook/intro.md",
      onLookup: (id) => go("documents", id) }),
    result,
  );
  let stopped = false;
  async function show(id) {
    let doc;
    try {
      doc = await get(`v1/documents/${encodeURIComponent(id)}`, { include_text: "true" });
    } catch (error) {
      const hint = error instanceof ApiError && error.status === 405
        ? " (this API has no document reads: it predates GET /v1/documents/{id})" : "";
      append(clear(result), banner("error", `${error.message}${hint}`));
      return;
    }
    if (stopped) return;
    const rows = [
      ["id", doc.id], ["version", doc.version], ["updated", when(doc.updated_at)],
      ["chunks", doc.chunk_count], ["model", doc.model || "-"], ["content hash", doc.content_hash || "-"],
    ];
    append(clear(result), h("div", { class: "panel" },
      h("dl", { class: "grid2", id: "document-fields" },
        h("dt", {}, "state"), h("dd", { id: "document-state" }, pill(doc.state)),
        rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, v)])),
      h("h2", {}, "Metadata"),
      h("pre", {}, JSON.stringify(doc.metadata || {}, null, 2)),
      doc.text !== undefined && doc.text !== null ? [h("h2", {}, "Text"), h("pre", { id: "document-text" }, doc.text)] : null,
    ));
  }
  if (arg) show(arg);
  return () => { stopped = true; };
}
