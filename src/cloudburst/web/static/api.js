// The JSON API client: sends the session's CSRF token with every change and
// turns an error answer into an Error carrying the API's one-line message.

let csrfToken = null;

export function setCsrf(token) { csrfToken = token; }

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(`/api/v1${path}`, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
    if (response.status === 401) window.dispatchEvent(new CustomEvent("cb-logged-out"));
    throw new ApiError(message, response.status);
  }
  return data;
}
