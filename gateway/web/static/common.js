// What the pages share: calling the gateway, captchas, messages for its problem
// answers, and reading (not verifying: the page only shows them) a JWT's claims.

import { t } from "./i18n.js";

export const $ = (id) => document.getElementById(id);

export function show(node, visible = true) {
  node.hidden = !visible;
}

/** One call to the gateway on this origin. Never throws: a network failure is status 0. Cookies are
 * neither sent nor accepted unless `credentials` is "same-origin" (the sign-in page's calls). */
export async function api(method, path, { json, form, token, signal, keepalive, credentials = "omit" } = {}) {
  const headers = {};
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(form).toString();
  }
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch(path, { method, headers, body, signal, keepalive, cache: "no-store", credentials });
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : null;
    return { ok: response.ok, status: response.status, body: data || {}, retryAfter: response.headers.get("retry-after") };
  } catch (error) {
    if (error.name === "AbortError") return { ok: false, status: -1, body: {}, aborted: true };
    return { ok: false, status: 0, body: {} };
  }
}

export function duration(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  return t("minutes_seconds", { m: Math.floor(total / 60), s: total % 60 });
}

/** A message for the problems password checks share (login and the unit declaration password). */
export function problemMessage(result, lockedKey = "locked") {
  const { status, body } = result;
  if (status === 0) return t("network_error");
  if (body.code === "captcha_required") return t("captcha_needed");
  if (body.code === "captcha_invalid") return t("captcha_wrong");
  if (status === 423) return t(lockedKey, { time: duration(body.retry_after ?? Number(result.retryAfter ?? 0)) });
  if (status === 429) return t("too_many");
  if (status === 503) return t("service_down");
  return body.detail || `HTTP ${status}`;
}

/** A captcha that is shown after the first failure and renewed after every attempt (each is single use). */
export class Captcha {
  constructor(rowId, imageId, answerId, refreshId, endpoint = "/v1/captcha") {
    this.endpoint = endpoint;
    this.row = $(rowId);
    this.image = $(imageId);
    this.answer = $(answerId);
    this.id = null;
    $(refreshId).addEventListener("click", () => this.load());
  }

  hide() {
    show(this.row, false);
    this.id = null;
  }

  get active() {
    return !this.row.hidden;
  }

  async load() {
    show(this.row);
    this.answer.value = "";
    const result = await api("POST", this.endpoint);
    if (result.ok) {
      this.id = result.body.captcha_id;
      this.image.src = result.body.image;
    }
    return result.ok;
  }

  /** The fields to send with an attempt (and forget them: the captcha is used up either way). */
  take() {
    if (!this.active || !this.id) return {};
    const fields = { captcha_id: this.id, captcha_answer: this.answer.value.trim() };
    this.id = null;
    return fields;
  }
}

export function claimsOf(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

const TIMES = new Set(["exp", "iat", "auth_time", "nbf"]);

export function fillClaims(table, claims) {
  table.replaceChildren();
  for (const [name, value] of Object.entries(claims)) {
    const row = table.insertRow();
    const key = document.createElement("th");
    key.scope = "row";
    key.textContent = name;
    row.append(key);
    let text = typeof value === "object" ? JSON.stringify(value) : String(value);
    if (TIMES.has(name) && typeof value === "number") text += `  (${new Date(value * 1000).toLocaleString()})`;
    row.insertCell().textContent = text;
  }
}
