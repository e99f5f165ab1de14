// Calls to embedstream's JSON API with the credential kept in this tab's sessionStorage.
// No cookies are used: the credential travels in a header, set here and nowhere else.

const STORAGE_KEY = "embedstream.credential";
// The console lives at <base>/console/: the API is at <base>/v1/...
const BASE = new URL("../", document.baseURI);

export const session = {
  get credential() { return sessionStorage.getItem(STORAGE_KEY); },
  signIn(credential) { sessionStorage.setItem(STORAGE_KEY, credential.trim()); },
  signOut() { sessionStorage.removeItem(STORAGE_KEY); },
};

export class ApiError extends Error {
  constructor(status, message, body, retryAfter) {
    super(message);
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

function credentialHeaders() {
  const credential = session.credential;
  if (!credential) return {};
  // API keys start with es_; anything else is a bearer token (JWT)
  return credential.startsWith("es_") ? { "X-API-Key": credential } : { Authorization: `Bearer ${credential}` };
}

export function describe(status, body) {
  if (body && Array.isArray(body.errors)) {
    return body.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
  }
  if (body && typeof body.error === "string") return body.error;
  return `HTTP ${status}`;
}

export async function api(method, path, body, query) {
  const url = new URL(path, BASE);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json", ...credentialHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, `the API does not answer (${error.message})`, null, null);
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const error = new ApiError(response.status, describe(response.status, data), data, response.headers.get("Retry-After"));
    if (response.status === 401) window.dispatchEvent(new CustomEvent("embedstream:unauthorized", { detail: error }));
    throw error;
  }
  return data;
}

export const get = (path, query) => api("GET", path, undefined, query);
export const post = (path, body) => api("POST", path, body);
