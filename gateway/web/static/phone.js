// The phone simulator (/demo/app): what the mobile app does, in a browser. Log in, "scan" by pasting
// the QR content (or picking one that a desktop page in this browser shows), look at where the
// login comes from, then confirm or decline. The access token lives in memory only.

import { $, Captcha, api, problemMessage, show } from "./common.js";
import { installLanguageSwitch, onLanguageChange, t } from "./i18n.js";

const CLIENT_ID = "mobile-app";
const QR_PATH = /^\/q\/([A-Za-z0-9_-]{22})$/;
const publicUrl = new URL(document.body.dataset.publicUrl || location.origin);
const phone = { token: null, name: "", scan: null, timer: null };
const seen = new Map(); // qr_content -> deadline (ms), from desktop pages open in this browser
const channel = "BroadcastChannel" in window ? new BroadcastChannel("qrgate-demo") : null;
const captcha = new Captcha("phone-captcha-row", "phone-captcha-image", "phone-captcha-answer", "phone-captcha-refresh");

function screen(name) {
  for (const id of ["step-login", "step-scan", "step-confirm", "step-result"]) show($(id), id === `step-${name}`);
}

// --- Log in ---------------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const identifier = $("phone-identifier").value.trim();
  const password = $("phone-password").value;
  if (!identifier || !password) {
    $("phone-login-message").textContent = t("need_identifier");
    return;
  }
  $("phone-login-submit").disabled = true;
  const body = { identifier, password, client_id: CLIENT_ID, ...captcha.take() };
  const answer = await api("POST", "/v1/login/password", { json: body });
  $("phone-login-submit").disabled = false;
  $("phone-password").value = "";
  if (answer.ok) {
    phone.token = answer.body.access_token;
    phone.name = await maskedName(); // the person's masked real name, never what was typed
    $("phone-login-message").textContent = "";
    captcha.hide();
    showScan();
    return;
  }
  const { status, body: problem } = answer;
  $("phone-login-message").textContent =
    status === 401 && problem.code === "invalid_credentials"
      ? t("wrong_password", { attempts: problem.attempts_left })
      : problemMessage(answer);
  if (problem.captcha_required || status === 400 || captcha.active) await captcha.load();
}

/** The person's real name, masked (张*): GET /v1/sessions answers it with the sessions. */
async function maskedName() {
  const answer = await api("GET", "/v1/sessions", { token: phone.token });
  return answer.ok ? answer.body.display_name || "" : "";
}

function greeting() {
  return phone.name ? t("signed_in_as", { name: phone.name }) : t("phone_signed_in_unknown");
}

// --- Scan -------------------------------------------------------------------------------------------

function showScan() {
  clearInterval(phone.timer);
  phone.scan = null;
  $("qr-content").value = "";
  $("scan-message").textContent = "";
  $("signed-in").textContent = greeting();
  screen("scan");
  drawPicker();
  channel?.postMessage({ type: "ask" });
  $("qr-content").focus();
}

/** The qr_id of a login code of this gateway, or null (any other code is refused before any call). */
function qrIdOf(text) {
  let url;
  try {
    url = new URL(text.trim());
  } catch {
    return null;
  }
  if (url.origin !== publicUrl.origin || url.search || url.hash) return null;
  const match = QR_PATH.exec(url.pathname);
  return match ? match[1] : null;
}

async function scan(event) {
  event?.preventDefault();
  const qrId = qrIdOf($("qr-content").value);
  if (!qrId) {
    $("scan-message").textContent = t("not_our_code");
    return;
  }
  $("scan-submit").disabled = true;
  const answer = await api("POST", `/v1/qr/${qrId}/scan`, { token: phone.token });
  $("scan-submit").disabled = false;
  if (!answer.ok) {
    const code = answer.body.code;
    const key = { qr_already_scanned: "already_scanned", qr_expired: "qr_gone", qr_not_found: "qr_unknown" }[code];
    $("scan-message").textContent = key ? t(key) : t("scan_failed", { detail: problemMessage(answer) });
    return;
  }
  phone.scan = { ...answer.body, deadline: Date.now() + answer.body.expires_in * 1000 };
  showContext();
}

function drawPicker() {
  const now = Date.now();
  for (const [content, deadline] of seen) if (deadline <= now) seen.delete(content);
  const list = $("picker");
  list.replaceChildren(
    ...[...seen.keys()].map((content) => {
      const item = document.createElement("li");
      const text = document.createElement("code");
      text.textContent = content;
      const pick = document.createElement("button");
      pick.type = "button";
      pick.className = "secondary";
      pick.textContent = t("pick");
      pick.addEventListener("click", () => {
        $("qr-content").value = content;
        scan();
      });
      item.append(text, pick);
      return item;
    }),
  );
  show($("picker-block"), seen.size > 0);
}

/** The client by its name (扣缴客户端), not its id; an unknown id as it is. */
function clientName(clientId) {
  const key = `client_${clientId.replace(/-/g, "_")}`;
  const name = t(key);
  return name === key ? clientId : name;
}

const BROWSERS = [
  [/\bEdg(?:e|A|iOS)?\/(\d+)/, "Edge"],
  [/\b(?:Headless)?Chrome\/(\d+)/, "Chrome"],
  [/\bCriOS\/(\d+)/, "Chrome"],
  [/\bFirefox\/(\d+)/, "Firefox"],
  [/\bVersion\/(\d+)[^ ]* (?:Mobile\/\S+ )?Safari\//, "Safari"],
];
const SYSTEMS = [
  [/Windows/, "Windows"],
  [/iPhone|iPad|iPod/, "iOS"],
  [/Mac OS X|Macintosh/, "macOS"],
  [/Android/, "Android"],
  [/CrOS/, "ChromeOS"],
  [/Linux|X11/, "Linux"],
];

/** A user agent in words: "Chrome 浏览器 · Linux", "WithholdingClient 3.1 · Windows" (the raw text
 * stays behind "details"). */
function deviceInWords(agent) {
  const system = SYSTEMS.find(([pattern]) => pattern.test(agent))?.[1] ?? t("os_unknown");
  const browser = BROWSERS.find(([pattern]) => pattern.test(agent))?.[1];
  let what;
  if (browser) what = t("agent_browser", { name: browser });
  else {
    const product = /^([A-Za-z][\w.-]{0,40})\/([\w.]{1,20})/.exec(agent);
    what = product ? t("agent_program", { name: product[1], version: product[2] }) : t("agent_unknown");
  }
  return t("device_in_words", { browser: what, os: system });
}

// --- Confirm or decline ------------------------------------------------------------------------------

function showContext() {
  const context = phone.scan;
  $("ctx-device").textContent = context.device_name || t("unnamed_device");
  $("ctx-client").textContent = clientName(context.client_id);
  $("ctx-ip").textContent = context.requester.ip;
  $("ctx-agent").textContent = deviceInWords(context.requester.user_agent);
  $("ctx-agent-raw").textContent = context.requester.user_agent;
  $("ctx-time").textContent = new Date(context.requested_at).toLocaleString();
  $("ctx-network").textContent = t(`network_${context.proximity.replace("_network", "")}`);
  $("ctx-network").dataset.proximity = context.proximity;
  // A browser sign-in's code (client sso-signin) names the relying party in device_name: say where the
  // person signs in (登录到 {name}), never the internal client id.
  const signin = context.client_id === "sso-signin" && context.device_name;
  const title = signin ? t("signin_title", { name: context.device_name }) : t("confirm_title");
  $("step-confirm").querySelector("h1").textContent = title;
  if (signin) $("ctx-client").textContent = context.device_name;
  show($("proximity-warning"), context.proximity === "different_network");
  $("confirm-message").textContent = "";
  $("accept").disabled = $("decline").disabled = false;
  screen("confirm");
  clearInterval(phone.timer);
  const tick = () => {
    const left = Math.ceil((context.deadline - Date.now()) / 1000);
    $("confirm-countdown").textContent = t("confirm_countdown", { seconds: Math.max(0, left) });
    if (left <= 0) {
      clearInterval(phone.timer);
      $("accept").disabled = true;
      $("confirm-message").textContent = t("qr_gone");
    }
  };
  tick();
  phone.timer = setInterval(tick, 1000);
  $("decline").focus(); // the safe choice has the focus
}

async function decide(confirm) {
  const qrId = phone.scan?.qr_id;
  if (!qrId) return;
  $("accept").disabled = $("decline").disabled = true;
  const answer = await api("POST", `/v1/qr/${qrId}/${confirm ? "confirm" : "cancel"}`, { token: phone.token });
  clearInterval(phone.timer);
  if (!answer.ok) {
    $("confirm-message").textContent = answer.body.code === "qr_expired" ? t("qr_gone") : problemMessage(answer);
    $("decline").disabled = false;
    return;
  }
  phone.scan = null;
  $("result-icon").textContent = confirm ? "✓" : "✕";
  $("result-icon").className = `result-icon ${confirm ? "accepted" : "declined"}`;
  $("result-title").textContent = t(confirm ? "result_confirmed" : "result_declined");
  $("result-text").textContent = t(confirm ? "result_confirmed_text" : "result_declined_text");
  screen("result");
  $("scan-again").focus();
}

// --- Wiring ------------------------------------------------------------------------------------------

installLanguageSwitch();
onLanguageChange(() => {
  if (phone.token) $("signed-in").textContent = greeting();
  if (phone.scan && !$("step-confirm").hidden) showContext();
  drawPicker();
});
$("phone-login").addEventListener("submit", login);
$("scan-form").addEventListener("submit", scan);
$("accept").addEventListener("click", () => decide(true));
$("decline").addEventListener("click", () => decide(false));
$("scan-again").addEventListener("click", showScan);
channel?.addEventListener("message", (event) => {
  const { type, qr_content: content, deadline } = event.data ?? {};
  if (type === "qr" && typeof content === "string" && qrIdOf(content)) {
    seen.set(content, Number(deadline) || Date.now() + 120000);
    drawPicker();
  }
});
