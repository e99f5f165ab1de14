// Streams and consumer groups, refreshed live, with a lag and read-rate chart per group.
import { get } from "../api.js";
import { groupChart } from "../chart.js";
import { age, append, banner, clear, h } from "../dom.js";

const MAX_SAMPLES = 90;
// history survives switching views (not reloads): group key -> samples
const history = new Map();

function record(report) {
  for (const stream of report.streams) {
    for (const group of stream.groups) {
      const key = `${stream.stream}|${group.name}`;
      const samples = history.get(key) || [];
      const processed = group.entries_read === null ? null : group.entries_read - group.pending;
      const previous = samples[samples.length - 1];
      let rate = null;
      if (previous && processed !== null && previous.processed !== null && report.time_ms > previous.t) {
        rate = Math.max(0, (processed - previous.processed) / ((report.time_ms - previous.t) / 1000));
      }
      samples.push({ t: report.time_ms, lag: group.lag, processed, rate });
      if (samples.length > MAX_SAMPLES) samples.shift();
      history.set(key, samples);
    }
  }
}

function groupRow(stream, group) {
  const key = `${stream.stream}|${group.name}`;
  const samples = history.get(key) || [];
  const last = samples[samples.length - 1];
  const consumers = group.consumers.length
    ? group.consumers.map((c) => `${c.name} (${age(c.idle_ms)}${c.pending ? `, ${c.pending} pending` : ""})`).join(", ")
    : "none";
  return h(
    "tr",
    { dataset: { group: key } },
    h("td", { class: "mono" }, stream.stream),
    h("td", { class: "num", dataset: { field: "length" } }, stream.length),
    h("td", { class: "mono" }, group.name),
    h("td", { class: "num", dataset: { field: "lag" } }, group.lag === null ? "?" : group.lag),
    h("td", { class: "num", dataset: { field: "pending" } }, group.pending),
    h("td", { class: "num", dataset: { field: "oldest" } }, age(group.oldest_pending_age_ms)),
    h("td", { class: "num", dataset: { field: "rate" } }, last && last.rate !== null ? `${last.rate.toFixed(1)}/s` : "-"),
    h("td", { class: "num", dataset: { field: "dead-letters" } }, group.dead_letters),
    h("td", { class: "consumers", dataset: { field: "consumers", live: group.live_consumers } },
      `${group.live_consumers} live: `, h("span", { class: "muted" }, consumers)),
    h("td", {}, groupChart(samples, { label: `${key}: lag and read rate` })),
  );
}

function table(report) {
  const rows = [];
  for (const stream of report.streams) {
    if (!stream.groups.length) {
      rows.push(h("tr", { dataset: { stream: stream.stream } },
        h("td", { class: "mono" }, stream.stream),
        h("td", { class: "num" }, stream.exists ? stream.length : "(none)"),
        h("td", { class: "muted", colspan: 8 }, "no consumer group")));
    }
    for (const group of stream.groups) rows.push(groupRow(stream, group));
  }
  return h(
    "table",
    { id: "streams-table" },
    h("thead", {}, h("tr", {},
      ["stream", "length", "group", "lag", "pending", "oldest pending", "finished/s", "dead-lettered", "consumers (idle)", ""]
        .map((title, i) => h("th", { class: [1, 3, 4, 5, 6, 7].includes(i) ? "num" : "" }, title)))),
    h("tbody", {}, rows),
  );
}

export function mountStreams(container, { params, go }) {
  const every = Math.max(0.5, Number(params.get("every")) || 2);
  const status = h("div", { id: "streams-status" });
  const body = h("div", { class: "panel" }, h("p", { class: "muted" }, "Loading…"));
  container.append(
    h("h1", {}, "Streams and groups"),
    h("p", { class: "muted" },
      `Refreshed every ${every}s. `,
      h("span", { class: "legend-lag" }, "— lag"), " · ",
      h("span", { class: "legend-rate" }, "— entries finished per second"),
      " (read minus pending)."),
    status,
    body,
  );
  let stopped = false;
  let timer = null;
  async function refresh() {
    try {
      const report = await get("v1/admin/status");
      if (stopped) return;
      record(report);
      clear(status);
      if (report.problems.length) {
        status.append(banner("warn", h("strong", {}, "Attention: "),
          h("ul", {}, report.problems.map((p) => h("li", {}, `${p.stream} / ${p.group}: ${p.message}`)))));
      }
      const dead = h("a", { href: "#/dead-letters", onclick: (e) => { e.preventDefault(); go("dead-letters"); } },
        `${report.dead_letters_total} dead letter${report.dead_letters_total === 1 ? "" : "s"}`);
      append(clear(body), 
        h("div", { class: "toolbar" },
          h("span", { class: "muted" }, `prefix ${report.prefix} · read at ${new Date(report.time_ms).toISOString()} · `),
          dead, h("span", { class: "muted" }, ` in ${report.dead_letter_stream}`)),
        table(report),
      );
    } catch (error) {
      if (stopped) return;
      append(clear(status), banner("error", `Could not read the status: ${error.message}`));
    }
    if (!stopped) timer = setTimeout(refresh, every * 1000);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
