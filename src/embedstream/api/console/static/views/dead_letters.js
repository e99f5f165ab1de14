// Dead letters: filters, a page of entries, one entry's fields and error, replay and
// purge of one, of a selection or of every entry a filter matches (after a dry run and a
// confirmation), and the replayed entries followed until their groups are done.
import { get, post } from "../api.js";
import { append, banner, clear, confirmDialog, field, h, pill, when } from "../dom.js";

const FILTERS = ["stage", "type", "grep", "since", "job_id", "document_id", "tenant"];
const PAGE = 50;

function filterFrom(params) {
  const filter = {};
  for (const name of FILTERS) {
    const value = (params.get(name) || "").trim();
    if (value) filter[name] = value;
  }
  return filter;
}

function describeFilter(filter) {
  const parts = Object.entries(filter).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(", ") : "no filter: every dead letter you can see";
}

export function mountDeadLetters(container, { arg, params, me, go }) {
  const filter = filterFrom(params);
  const selected = new Set();
  let items = [];
  let stopped = false;
  const timers = new Set();

  // -- filters ---------------------------------------------------------------------------
  const inputs = {
    stage: h("input", { name: "stage", list: "stages", value: filter.stage || "", placeholder: "any" }),
    type: h("input", { name: "type", value: filter.type || "", placeholder: "document.upsert" }),
    grep: h("input", { name: "grep", value: filter.grep || "", placeholder: "text in the error" }),
    since: h("select", { name: "since" },
      [["", "any age"], ["15m", "last 15 minutes"], ["1h", "last hour"], ["24h", "last 24 hours"], ["7d", "last 7 days"]]
        .map(([value, label]) => h("option", { value, selected: (filter.since || "") === value }, label))),
    job_id: h("input", { name: "job_id", value: filter.job_id || "", placeholder: "job id" }),
    document_id: h("input", { name: "document_id", value: filter.document_id || "", placeholder: "document id" }),
    tenant: h("input", { name: "tenant", value: filter.tenant || "", placeholder: "any tenant" }),
  };
  if (filter.since && ![...inputs.since.options].some((o) => o.value === filter.since)) {
    inputs.since.append(h("option", { value: filter.since, selected: true }, `since ${filter.since}`));
  }
  const form = h("form", { class: "panel row", id: "dlq-filters" },
    field("stage", inputs.stage),
    h("datalist", { id: "stages" }, ["embed", "index", "persist"].map((s) => h("option", { value: s }))),
    field("type", inputs.type),
    field("error contains", inputs.grep),
    field("age", inputs.since),
    field("job", inputs.job_id),
    field("document", inputs.document_id),
    me.operator ? field("tenant", inputs.tenant) : null,
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("button", { type: "button", onclick: () => go("dead-letters") }, "Reset"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name, input] of Object.entries(inputs)) {
      if (input.value.trim()) next.set(name, input.value.trim());
    }
    go("dead-letters", "", next);
  });

  // -- layout ----------------------------------------------------------------------------
  const messages = h("div", { id: "dlq-messages" });
  const tracker = h("div", { id: "dlq-tracker" });
  const list = h("div", { class: "panel", id: "dlq-list" }, h("p", { class: "muted" }, "Loading…"));
  const detail = h("div", { class: "panel", id: "dlq-detail" },
    h("p", { class: "muted" }, "Select a dead letter to see its fields and error."));
  const count = h("span", { class: "muted", id: "dlq-selected" }, "0 selected");
  const replaySelected = h("button", { type: "button", id: "replay-selected", disabled: true }, "Replay selected");
  const purgeSelected = h("button", { type: "button", id: "purge-selected", disabled: true }, "Purge selected");
  const replayAll = h("button", { type: "button", id: "replay-matching" }, "Replay all matching…");
  const purgeAll = h("button", { type: "button", id: "purge-matching" }, "Purge all matching…");
  container.append(
    h("h1", {}, "Dead letters"),
    form,
    h("div", { class: "toolbar" }, count, replaySelected, purgeSelected,
      h("span", { class: "muted" }, " · "), replayAll, purgeAll),
    messages,
    tracker,
    h("div", { class: "split" }, list, detail),
  );

  function updateSelection() {
    count.textContent = `${selected.size} selected`;
    replaySelected.disabled = purgeSelected.disabled = selected.size === 0;
  }

  function say(kind, ...children) {
    append(clear(messages), banner(kind, ...children));
  }

  // -- list ------------------------------------------------------------------------------
  async function load(cursor) {
    let page;
    try {
      page = await get("v1/admin/dead-letters", { ...filter, cursor, limit: PAGE });
    } catch (error) {
      append(clear(list), banner("error", `Could not list dead letters: ${error.message}`));
      return;
    }
    if (stopped) return;
    items = page.items;
    selected.clear();
    updateSelection();
    const all = h("input", { type: "checkbox", "aria-label": "select all on this page" });
    all.addEventListener("change", () => {
      for (const box of list.querySelectorAll("input[data-id]")) {
        box.checked = all.checked;
        if (all.checked) selected.add(box.dataset.id); else selected.delete(box.dataset.id);
      }
      updateSelection();
    });
    const rows = items.map((item) => {
      const box = h("input", { type: "checkbox", dataset: { id: item.id }, "aria-label": `select ${item.id}` });
      box.addEventListener("click", (event) => event.stopPropagation());
      box.addEventListener("change", () => {
        if (box.checked) selected.add(item.id); else selected.delete(item.id);
        updateSelection();
      });
      return h("tr", {
        class: `clickable${item.id === arg ? " selected" : ""}`,
        dataset: { id: item.id },
        onclick: () => go("dead-letters", item.id, params),
      },
      h("td", {}, box),
      h("td", { class: "mono" }, when(item.dead_at)),
      h("td", {}, item.stage || "?"),
      h("td", { class: "mono" }, item.type || "(unreadable)"),
      me.operator ? h("td", {}, item.tenant || "?") : null,
      h("td", { class: "mono truncate" }, item.document_id || "-"),
      h("td", { class: "num" }, item.attempts ?? "?"),
      h("td", { class: "truncate error-text" }, item.error));
    });
    append(clear(list), 
      h("div", { class: "muted" },
        `${items.length} shown (${describeFilter(filter)}); ${page.total} in the dead-letter stream`),
      items.length
        ? h("table", { id: "dlq-table" },
          h("thead", {}, h("tr", {}, h("th", {}, all), h("th", {}, "dead-lettered"), h("th", {}, "stage"),
            h("th", {}, "type"), me.operator ? h("th", {}, "tenant") : null, h("th", {}, "document"),
            h("th", { class: "num" }, "attempts"), h("th", {}, "error"))),
          h("tbody", {}, rows))
        : h("p", {}, "No dead letters match."),
      page.next_cursor
        ? h("div", { class: "actions" }, h("button", { type: "button", onclick: () => load(page.next_cursor) }, "Older →"))
        : null,
    );
  }

  // -- one entry -------------------------------------------------------------------------
  async function show(id) {
    let letter;
    try {
      letter = await get(`v1/admin/dead-letters/${encodeURIComponent(id)}`);
    } catch (error) {
      append(clear(detail), banner("error", error.message));
      return;
    }
    if (stopped) return;
    const rows = [
      ["id", letter.id], ["dead-lettered", when(letter.dead_at)], ["from stream", letter.stream],
      ["original id", letter.original_id], ["group / stage", `${letter.group || "?"} / ${letter.stage || "?"}`],
      ["attempts", letter.attempts ?? "?"], ["type", letter.type || "(unreadable envelope)"],
      ["tenant", letter.tenant || "(unreadable)"], ["document", letter.document_id || "-"],
    ];
    const jobLink = letter.job_id
      ? h("a", { href: `#/jobs/${encodeURIComponent(letter.job_id)}` }, letter.job_id)
      : "-";
    append(clear(detail), 
      h("h2", {}, "Dead letter"),
      h("dl", { class: "grid2", id: "dlq-fields" },
        rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, v ?? "-")]),
        h("dt", {}, "job"), h("dd", { class: "mono" }, jobLink)),
      h("h2", {}, `Error${letter.error_type ? ` (${letter.error_type})` : ""}`),
      h("pre", { id: "dlq-error" }, letter.error),
      h("h2", {}, "Payload"),
      h("pre", { id: "dlq-payload" }, letter.data !== null
        ? JSON.stringify(letter.data, null, 2)
        : (letter.fields.data ?? "(none)")),
      h("h2", {}, "Envelope"),
      h("pre", {}, letter.attributes ? JSON.stringify(letter.attributes, null, 2) : (letter.fields.ce ?? "(none)")),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary", id: "replay-one", onclick: () => byIds("replay", [letter.id]) }, "Replay"),
        h("button", { type: "button", class: "danger", id: "purge-one", onclick: () => byIds("purge", [letter.id]) }, "Purge")),
    );
  }

  // -- actions ---------------------------------------------------------------------------
  async function byIds(action, ids) {
    const noun = ids.length === 1 ? "dead letter" : "dead letters";
    const text = action === "replay"
      ? `Replay ${ids.length} ${noun}? Each goes back to the stream it came from as a new entry.`
      : `Purge ${ids.length} ${noun}? They are deleted for good.`;
    if (!(await confirmDialog(text, action === "replay" ? "Replay" : "Purge"))) return;
    await run(action, { ids });
  }

  async function byFilter(action) {
    let dry;
    try {
      dry = await post(`v1/admin/dead-letters/${action}`, { filter, dry_run: true });
    } catch (error) {
      say("error", error.message);
      return;
    }
    if (dry.matched === 0) {
      say("warn", `No dead letters match (${describeFilter(filter)}).`);
      return;
    }
    const verb = action === "replay" ? "Replay" : "Purge";
    const text = `${verb} ${dry.matched}${dry.more ? "+" : ""} dead letter${dry.matched === 1 ? "" : "s"} matching ${describeFilter(filter)}?`
      + (dry.more ? " More match than one call handles: run it again afterwards." : "");
    if (!(await confirmDialog(text, verb))) return;
    await run(action, { filter, through_id: dry.through_id });
  }

  async function run(action, body) {
    let result;
    try {
      result = await post(`v1/admin/dead-letters/${action}`, body);
    } catch (error) {
      say("error", error.message);
      return;
    }
    const missing = result.results.filter((r) => r.outcome === "missing").length;
    say(result.done ? "ok" : "warn",
      `${action === "replay" ? "Replayed" : "Purged"} ${result.done} dead letter${result.done === 1 ? "" : "s"}`,
      missing ? ` (${missing} no longer there)` : "", ".");
    if (action === "replay") track(result.results.filter((r) => r.outcome === "replayed"));
    if (arg && result.results.some((r) => r.id === arg && r.outcome !== "missing")) {
      append(clear(detail), h("p", { class: "muted" }, `${arg} is no longer a dead letter.`));
    }
    await load();
  }

  // -- following replayed entries --------------------------------------------------------
  function track(replayed) {
    if (!replayed.length) return;
    const shown = replayed.slice(0, 20);
    const rows = new Map();
    const table = h("table", { id: "replayed" },
      h("thead", {}, h("tr", {}, ["dead letter", "replayed as", "groups", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, shown.map((r) => {
        const groups = h("td", {}, "…");
        const state = h("td", { dataset: { state: "waiting" } }, pill("waiting"));
        rows.set(r.new_id, { result: r, groups, state });
        return h("tr", { dataset: { replayed: r.new_id } },
          h("td", { class: "mono" }, r.id), h("td", { class: "mono" }, `${r.stream} ${r.new_id}`), groups, state);
      })));
    append(clear(tracker), h("div", { class: "panel" }, h("h2", {}, "Replayed entries"), table,
      replayed.length > shown.length ? h("p", { class: "muted" }, `and ${replayed.length - shown.length} more`) : null));
    const poll = async () => {
      let open = 0;
      for (const [newId, row] of rows) {
        if (row.state.dataset.state === "processed" || row.state.dataset.state === "dead-lettered") continue;
        try {
          const entry = await get(`v1/admin/streams/${encodeURIComponent(row.result.stream)}/entries/${encodeURIComponent(newId)}`);
          append(clear(row.groups), entry.groups.map((g) => h("span", {}, `${g.group}: `, pill(g.state), " ")));
          let state = "pending";
          if (entry.dead_letters.length) state = "dead-lettered";
          else if (entry.groups.length && entry.groups.every((g) => g.state === "done")) state = "processed";
          row.state.dataset.state = state;
          append(clear(row.state), pill(state, state === "processed" ? "done" : state === "dead-lettered" ? "failed" : "pending"));
          if (state === "pending") open += 1;
        } catch (error) {
          append(clear(row.groups), h("span", { class: "error-text" }, error.message));
          open += 1;
        }
      }
      if (open && !stopped) {
        const timer = setTimeout(() => { timers.delete(timer); poll(); }, 1000);
        timers.add(timer);
      }
    };
    poll();
  }

  replaySelected.addEventListener("click", () => byIds("replay", [...selected]));
  purgeSelected.addEventListener("click", () => byIds("purge", [...selected]));
  replayAll.addEventListener("click", () => byFilter("replay"));
  purgeAll.addEventListener("click", () => byFilter("purge"));

  load();
  if (arg) show(arg);
  return () => { stopped = true; for (const timer of timers) clearTimeout(timer); };
}
