// The console's shell: sign in, navigation (hash routes), one view at a time.
import { ApiError, get, session } from "./api.js";
import { append, banner, clear, field, h } from "./dom.js";
import { mountDeadLetters } from "./views/dead_letters.js";
import { mountDocuments } from "./views/documents.js";
import { mountJobs } from "./views/jobs.js";
import { mountSearch } from "./views/search.js";
import { mountStreams } from "./views/streams.js";

const VIEWS = {
  streams: mountStreams,
  "dead-letters": mountDeadLetters,
  jobs: mountJobs,
  documents: mountDocuments,
  search: mountSearch,
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signOutButton = document.getElementById("sign-out");
let unmount = null;
let me = null;

function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const [name, ...rest] = path.split("/");
  return {
    name: VIEWS[name] ? name : "streams",
    arg: rest.map(decodeURIComponent).join("/"),
    params: new URLSearchParams(query || ""),
  };
}

export function go(name, arg = "", params = null) {
  const query = params && [...params].length ? `?${params}` : "";
  location.hash = `#/${name}${arg ? `/${encodeURIComponent(arg)}` : ""}${query}`;
}

function showSignIn(message) {
  if (unmount) { unmount(); unmount = null; }
  nav.hidden = true;
  signOutButton.hidden = true;
  who.textContent = "";
  me = null;
  const input = h("input", {
    id: "credential",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "es_... or a JWT",
    required: true,
  });
  const form = h(
    "form",
    { class: "panel signin", id: "sign-in" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" },
      "Use an API key with the scope admin (your tenant) or operator (every tenant). ",
      "It stays in this tab (session storage) and is sent as a header; it is never stored in a cookie."),
    message ? banner("error", message) : null,
    field("API key or token", input),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Sign in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    session.signIn(input.value);
    await start();
  });
  append(clear(main), form);
  input.focus();
}

async function start() {
  if (!session.credential) { showSignIn(); return; }
  try {
    me = await get("v1/admin/session");
  } catch (error) {
    session.signOut();
    const status = error instanceof ApiError ? error.status : 0;
    const prefix = status === 401 ? "The credential was refused: " : status === 403 ? "Not allowed: " : "";
    showSignIn(`${prefix}${error.message}`);
    return;
  }
  nav.hidden = false;
  signOutButton.hidden = false;
  who.textContent = me.operator
    ? `operator (every tenant) · key of ${me.tenant}`
    : `admin of tenant ${me.tenant}`;
  who.dataset.tenant = me.tenant;
  render();
}

function render() {
  if (!me) return;
  if (unmount) { unmount(); unmount = null; }
  const { name, arg, params } = route();
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  const container = clear(main);
  unmount = VIEWS[name](container, { arg, params, me, go }) || null;
}

window.addEventListener("hashchange", render);
window.addEventListener("embedstream:unauthorized", (event) => {
  session.signOut();
  showSignIn(`Signed out: ${event.detail.message}`);
});
signOutButton.addEventListener("click", () => {
  session.signOut();
  showSignIn();
});

start();
