// The desktop login page: QR login (WebSocket, or long-poll when sockets are blocked or when
// ?transport=poll asks for it), password login with captcha and lockout, then the unit choice and
// the logged-in view. Tokens live in `session` only: never in storage, never in a URL.

import { $, Captcha, api, claimsOf, duration, fillClaims, problemMessage, show } from "./common.js";
import { installLanguageSwitch, onLanguageChange, t } from "./i18n.js";
import { UnitChooser } from "./units.js";

const CLIENT_ID = "withholding-desktop";
const SOCKET_OPEN_TIMEOUT = 4000; // ms before a socket that has not opened counts as blocked
const POLL_WAIT = 25; // s, below the gateway's long_poll_max_wait
const RECONNECTS = 5; // socket drops in a row before falling back to long-poll

const params = new URLSearchParams(location.search);
const session = { tokens: null, claims: null, method: null, unit: null };
const qr = {
  current: null, // the mint answer, with `deadline` (ms)
  generation: 0, // bumped on every refresh: callbacks of an older QR code do nothing
  transport: params.get("transport") === "poll" ? "poll" : "ws",
  socket: null,
  poller: null,
  timer: null,
  drops: 0,
  status: null, // [key, values] of the status line, redrawn on a language switch
  tick: null, // redraws the countdown
};
const demoChannel = "BroadcastChannel" in window ? new BroadcastChannel("qrgate-demo") : null;

// --- QR login -------------------------------------------------------------------------------

function setStatus(key, values = {}) {
  qr.status = [key, values];
  let text = t(key, values);
  if (qr.transport === "poll" && key === "qr_waiting") text += t("transport_poll");
  $("qr-status").textContent = text;
  $("qr-status").dataset.state = key;
}

// The picture's overlay: a short word over the dimmed code, and a refresh button where the page
// does not refresh by itself.
const OVERLAYS = {
  qr_scanned: ["qr_scanned_short", false],
  qr_confirmed: ["qr_confirmed_short", false],
  qr_expired: ["qr_expired_short", false],
  qr_cancelled: ["qr_cancelled_short", true],
  qr_lost: ["qr_lost_short", true],
  qr_delivered: ["qr_lost_short", true],
  qr_failed: ["qr_lost_short", true],
};

function overlay(state) {
  const box = $("qr-overlay");
  box.dataset.state = state || "";
  if (!state) {
    show(box, false);
    $("qr-frame").classList.remove("dimmed");
    return;
  }
  const [key, refresh] = OVERLAYS[state];
  $("qr-overlay-text").textContent = t(key);
  show($("qr-refresh"), refresh);
  $("qr-frame").classList.add("dimmed");
  show(box, true);
}

function stopWaiting() {
  qr.generation += 1;
  if (qr.socket) {
    qr.socket.onclose = null;
    qr.socket.close(1000);
    qr.socket = null;
  }
  qr.poller?.abort();
  qr.poller = null;
  clearInterval(qr.timer);
  qr.timer = null;
  qr.tick = null;
  $("qr-countdown").textContent = "";
}

/** The desktop no longer wants this code (tab switch, new code, page closed): tell the gateway. */
function abandon() {
  const current = qr.current;
  qr.current = null;
  if (current && !current.finished) {
    api("DELETE", `/v1/qr/${current.qr_id}`, { token: current.waiter_token, keepalive: true });
  }
}

async function refreshQr() {
  stopWaiting();
  abandon();
  const generation = qr.generation;
  overlay(null);
  $("qr-image").removeAttribute("src");
  $("qr-countdown").textContent = "";
  setStatus("qr_loading");
  const minted = await api("POST", "/v1/qr", { json: { client_id: CLIENT_ID, device_name: deviceName() } });
  if (generation !== qr.generation) return;
  if (!minted.ok) {
    setStatus("qr_failed", { detail: problemMessage(minted) });
    overlay("qr_failed");
    return;
  }
  const current = { ...minted.body, deadline: Date.now() + minted.body.expires_in * 1000 };
  qr.current = current;
  // Same origin as this page (the image_url/events_url of the answer name the public URL).
  $("qr-image").src = `/v1/qr/${encodeURIComponent(current.qr_id)}.svg?size=6`;
  demoChannel?.postMessage({ type: "qr", qr_content: current.qr_content, deadline: current.deadline });
  setStatus("qr_waiting");
  startCountdown(generation);
  qr.drops = 0;
  if (qr.transport === "ws" && "WebSocket" in window) openSocket(generation);
  else poll(generation);
}

function deviceName() {
  const platform = navigator.userAgentData?.platform || navigator.platform || "";
  return `Web ${platform}`.trim().slice(0, 128);
}

function startCountdown(generation) {
  qr.tick = () => {
    if (generation !== qr.generation || !qr.current) return;
    const left = Math.ceil((qr.current.deadline - Date.now()) / 1000);
    if (left <= 0) {
      expired(generation);
      return;
    }
    $("qr-countdown").textContent = t("qr_countdown", { seconds: left });
  };
  qr.tick();
  qr.timer = setInterval(qr.tick, 1000);
}

function expired(generation) {
  if (generation !== qr.generation) return;
  if (qr.current) qr.current.finished = true;
  stopWaiting();
  setStatus("qr_expired");
  overlay("qr_expired");
  setTimeout(() => {
    if (qr.generation === generation + 1 && !session.tokens && activeTab() === "qr") refreshQr();
  }, 600);
}

function scanned(name) {
  setStatus("qr_scanned", { name });
  overlay("qr_scanned");
}

function cancelled() {
  if (qr.current) qr.current.finished = true;
  stopWaiting();
  setStatus("qr_cancelled");
  overlay("qr_cancelled");
}

function confirmed(tokens) {
  if (qr.current) qr.current.finished = true;
  stopWaiting();
  setStatus("qr_confirmed");
  overlay("qr_confirmed");
  loggedIn(tokens, "qr");
}

function lost(key = "qr_lost") {
  stopWaiting();
  setStatus(key);
  overlay(key);
}

function handle(message, generation) {
  if (generation !== qr.generation) return;
  switch (message.type) {
    case "state":
      if (message.state === "scanned") scanned(message.scanner?.display_name ?? "");
      break; // the terminal states are followed by their own message
    case "scanned":
      scanned(message.scanner.display_name);
      break;
    case "confirmed":
      confirmed(message.token);
      break;
    case "cancelled":
      cancelled();
      break;
    case "expired":
      expired(generation);
      break;
  }
}

function socketUrl(qrId) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/qr/${encodeURIComponent(qrId)}/events`;
}

function openSocket(generation) {
  const current = qr.current;
  let opened = false;
  const socket = new WebSocket(socketUrl(current.qr_id));
  qr.socket = socket;
  const giveUp = setTimeout(() => {
    if (!opened && generation === qr.generation) fallBack(generation);
  }, SOCKET_OPEN_TIMEOUT);
  socket.onopen = () => {
    opened = true;
    clearTimeout(giveUp);
    socket.send(JSON.stringify({ type: "hello", waiter_token: current.waiter_token }));
  };
  socket.onmessage = (event) => {
    qr.drops = 0;
    try {
      handle(JSON.parse(event.data), generation);
    } catch {
      /* not JSON: ignore */
    }
  };
  socket.onclose = (event) => {
    clearTimeout(giveUp);
    if (generation !== qr.generation) return;
    qr.socket = null;
    if (!opened) return fallBack(generation); // blocked by a proxy or firewall
    switch (event.code) {
      case 1000:
        return; // after a terminal message, already handled
      case 4404:
        return expired(generation);
      case 4409:
        return lost("qr_delivered");
      case 4400:
      case 4401:
        return lost();
      default: // 1001 server going away, 1013 try again, 1006 dropped: the new socket gets the state first
        qr.drops += 1;
        if (qr.drops > RECONNECTS) return fallBack(generation);
        setTimeout(() => generation === qr.generation && openSocket(generation), 250 * 2 ** qr.drops);
    }
  };
}

function fallBack(generation) {
  if (qr.socket) {
    qr.socket.onclose = null;
    qr.socket.close();
    qr.socket = null;
  }
  qr.transport = "poll";
  if (qr.status?.[0] === "qr_waiting") setStatus("qr_waiting");
  poll(generation);
}

async function poll(generation) {
  const current = qr.current;
  const controller = new AbortController();
  qr.poller = controller;
  let failures = 0;
  while (generation === qr.generation) {
    const path = `/v1/qr/${encodeURIComponent(current.qr_id)}/state?wait=${POLL_WAIT}`;
    const answer = await api("GET", path, { token: current.waiter_token, signal: controller.signal });
    if (generation !== qr.generation || answer.aborted) return;
    if (!answer.ok) {
      if (answer.status === 404 || answer.status === 410) return expired(generation);
      if (answer.status === 401) return lost();
      failures += 1; // network or 503: back off and ask again
      await new Promise((resolve) => setTimeout(resolve, Math.min(8000, 500 * 2 ** failures)));
      continue;
    }
    failures = 0;
    const view = answer.body;
    if (view.state === "scanned") scanned(view.scanner?.display_name ?? "");
    else if (view.state === "confirmed" && view.token) return confirmed(view.token);
    else if (view.state === "cancelled") return cancelled();
    else if (view.state === "expired") return expired(generation);
    else if (view.state === "delivered") return lost("qr_delivered");
  }
}

// --- Password login --------------------------------------------------------------------------

const captcha = new Captcha("captcha-row", "captcha-image", "captcha-answer", "captcha-refresh");
let lockTimer = null;

function passwordMessage(text) {
  $("password-message").textContent = text;
}

async function passwordLogin(event) {
  event.preventDefault();
  const identifier = $("identifier").value.trim();
  const password = $("password").value;
  if (!identifier || !password) return passwordMessage(t("need_identifier"));
  clearInterval(lockTimer);
  $("password-submit").disabled = true;
  const body = { identifier, password, client_id: CLIENT_ID, ...captcha.take() };
  const answer = await api("POST", "/v1/login/password", { json: body });
  $("password-submit").disabled = false;
  $("password").value = "";
  if (answer.ok) {
    passwordMessage("");
    show($("captcha-row"), false);
    return loggedIn(answer.body, "pwd");
  }
  const { status, body: problem } = answer;
  if (status === 401 && problem.code === "invalid_credentials") {
    passwordMessage(t("wrong_password", { attempts: problem.attempts_left }));
  } else if (status === 423) {
    showLock(problem.retry_after ?? Number(answer.retryAfter ?? 0));
  } else {
    passwordMessage(problemMessage(answer));
  }
  if (problem.captcha_required || status === 400 || captcha.active) await captcha.load();
  $(status === 400 && problem.code?.startsWith("captcha") ? "captcha-answer" : "password").focus();
}

function showLock(seconds) {
  const until = Date.now() + seconds * 1000;
  const draw = () => {
    const left = (until - Date.now()) / 1000;
    if (left <= 0) {
      clearInterval(lockTimer);
      passwordMessage("");
    } else passwordMessage(t("locked", { time: duration(left) }));
  };
  draw();
  lockTimer = setInterval(draw, 1000);
}

// --- Tabs ------------------------------------------------------------------------------------

function activeTab() {
  return $("tab-qr").getAttribute("aria-selected") === "true" ? "qr" : "password";
}

function selectTab(name) {
  if (name === activeTab() && (name !== "qr" || qr.current)) return;
  $("tab-qr").setAttribute("aria-selected", String(name === "qr"));
  $("tab-password").setAttribute("aria-selected", String(name === "password"));
  show($("panel-qr"), name === "qr");
  show($("panel-password"), name === "password");
  if (name === "qr") refreshQr();
  else {
    stopWaiting();
    abandon();
    $("identifier").focus();
  }
}

// --- After login ------------------------------------------------------------------------------

const units = new UnitChooser({ onEntered: (unit) => showDone(unit), session });

function loggedIn(tokens, method) {
  session.tokens = tokens;
  session.claims = claimsOf(tokens.access_token);
  session.method = method;
  show($("login"), false);
  document.body.classList.add("logged-in");
  if (document.body.dataset.units === "true") units.start();
  else showDone(null);
}

function showDone(unit) {
  session.unit = unit;
  show($("units"), false);
  show($("done"), true);
  drawDone();
  $("logout").focus();
}

function drawDone() {
  if (!session.tokens) return;
  let summary = t(session.method === "qr" ? "done_summary_qr" : "done_summary_pwd");
  if (session.unit) {
    summary += " " + t("done_unit", { name: session.unit.name, tin: session.unit.tin, via: session.unit.via });
  }
  $("done-summary").textContent = summary;
  fillClaims($("claims"), session.claims);
  show($("unit-claims-block"), Boolean(session.unit));
  if (session.unit) fillClaims($("unit-claims"), claimsOf(session.unit.token));
}

async function logout() {
  const token = session.tokens?.access_token;
  Object.assign(session, { tokens: null, claims: null, method: null, unit: null });
  units.reset();
  if (token) await api("POST", "/v1/logout", { token });
  show($("done"), false);
  show($("units"), false);
  show($("login"), true);
  document.body.classList.remove("logged-in");
  $("tab-qr").setAttribute("aria-selected", "false");
  selectTab("qr");
}

// --- Wiring -----------------------------------------------------------------------------------

installLanguageSwitch();
onLanguageChange(() => {
  if (qr.status) setStatus(...qr.status);
  if (!$("qr-overlay").hidden) overlay($("qr-overlay").dataset.state);
  qr.tick?.();
  drawDone();
  units.redraw();
});
$("tab-qr").addEventListener("click", () => selectTab("qr"));
$("tab-password").addEventListener("click", () => selectTab("password"));
$("qr-refresh").addEventListener("click", () => refreshQr());
$("panel-password").addEventListener("submit", passwordLogin);
$("logout").addEventListener("click", logout);
window.addEventListener("pagehide", () => {
  stopWaiting();
  abandon();
});
demoChannel?.addEventListener("message", (event) => {
  // The demo phone page asks which codes this browser shows (qr_content is public: it is the picture).
  if (event.data?.type === "ask" && qr.current && !qr.current.finished) {
    demoChannel.postMessage({ type: "qr", qr_content: qr.current.qr_content, deadline: qr.current.deadline });
  }
});
refreshQr();
