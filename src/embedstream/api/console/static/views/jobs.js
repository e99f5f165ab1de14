// A job by id: its state and, per document, each stage's state and the failure if any.
import { get } from "../api.js";
import { append, banner, clear, h, pill, when } from "../dom.js";
import { lookupForm } from "./lookup.js";

const STAGES = ["embed", "index", "persist"];

export function mountJobs(container, { arg, me, go }) {
  const result = h("div", { id: "job-result" });
  container.append(
    h("h1", {}, "Jobs"),
    lookupForm({ id: "job-id", label: "job id (the job_id of a 202)", value: arg, placeholder: "0b9f6e0e-…",
      onLookup: (id) => go("jobs", id) }),
    result,
  );
  let stopped = false;
  let timer = null;
  async function show(id) {
    let job;
    try {
      job = await get(`v1/admin/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      append(clear(result), banner("error", error.message));
      return;
    }
    if (stopped) return;
    const failedLink = job.failed
      ? h("a", { href: `#/dead-letters?job_id=${encodeURIComponent(job.job_id)}` }, "its dead letters")
      : null;
    append(clear(result), h("div", { class: "panel" },
      h("dl", { class: "grid2", id: "job-fields" },
        h("dt", {}, "job"), h("dd", { class: "mono" }, job.job_id),
        h("dt", {}, "state"), h("dd", { id: "job-state" }, pill(job.state)),
        me.operator ? [h("dt", {}, "tenant"), h("dd", {}, job.tenant)] : null,
        h("dt", {}, "documents"), h("dd", {}, `${job.total} (${job.done} done, ${job.failed} failed) `, failedLink),
        h("dt", {}, "created"), h("dd", {}, when(job.created_at)),
        h("dt", {}, "finished"), h("dd", {}, job.finished_at ? when(job.finished_at) : "-")),
      h("h2", {}, "Documents"),
      h("table", { id: "job-documents" },
        h("thead", {}, h("tr", {}, ["document", "kind", "version", "state", ...STAGES, "error"].map((t) => h("th", {}, t)))),
        h("tbody", {}, job.documents.map((d) => h("tr", { dataset: { document: d.id } },
          h("td", { class: "mono" }, h("a", { href: `#/documents/${encodeURIComponent(d.id)}` }, d.id)),
          h("td", {}, d.kind),
          h("td", { class: "mono" }, d.version),
          h("td", {}, pill(d.state)),
          STAGES.map((s) => h("td", { dataset: { stage: s } }, pill(d.stages[s]))),
          h("td", { class: "error-text" }, d.error ? `${d.error.stage}: ${d.error.error}` : "")))))));
    if (job.state === "queued" && !stopped) timer = setTimeout(() => show(id), 2000);
  }
  if (arg) show(arg);
  return () => { stopped = true; clearTimeout(timer); };
}
