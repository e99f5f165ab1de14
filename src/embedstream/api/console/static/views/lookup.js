// A lookup form (an id, a button) shared by the jobs and documents views.
import { field, h } from "../dom.js";

export function lookupForm({ id, label, value, placeholder, onLookup }) {
  const input = h("input", { id, class: "wide", value: value || "", placeholder, spellcheck: "false" });
  const form = h("form", { class: "panel row" }, field(label, input),
    h("button", { type: "submit", class: "primary" }, "Look up"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) onLookup(input.value.trim());
  });
  return form;
}
