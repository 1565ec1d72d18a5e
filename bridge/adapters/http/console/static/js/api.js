// The console's one way to the API: same-origin fetch with the login cookie, the CSRF token
// on everything that changes something, and errors in the API's shape turned into ApiError.

const CSRF_COOKIE = "bridge_csrf";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `the bridge answered ${status}`);
    this.status = status;
    this.location = body ? body.location : null;
    this.body = body;
  }
}

export function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

let bearer = null;
/** A viewer link's token: sent as a bearer token instead of the cookie. */
export function useBearer(token) { bearer = token; }

export async function request(path, { method = "GET", body, accept = "application/json",
  raw = false, signal } = {}) {
  const headers = { Accept: accept };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = cookie(CSRF_COOKIE);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", signal,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let parsed = null;
    try { parsed = await response.json(); } catch { parsed = null; }
    if (response.status === 401 && !bearer && !path.startsWith("/console/session")) {
      location.assign(`/console/login?next=${encodeURIComponent(location.hash || "#/")}`);
    }
    throw new ApiError(response.status, parsed);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path, options) => request(path, options);
export const post = (path, body) => request(path, { method: "POST", body: body ?? {} });
export const patch = (path, body) => request(path, { method: "PATCH", body });

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
