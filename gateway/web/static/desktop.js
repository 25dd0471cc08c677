// The desktop login page: password login (the default) with the on-screen keyboard, captcha and
// lockout (password.js), QR login (qrlogin.js), then the unit choice and the logged-in view. Tokens
// live in `session` only: never in storage, never in a URL.

import { $, api, claimsOf, show } from "./common.js";
import { EnteredView } from "./entered.js";
import { installLanguageSwitch, onLanguageChange, t } from "./i18n.js";
import { PasswordForm } from "./password.js";
import { QrLogin } from "./qrlogin.js";
import { LoginTabs } from "./tabs.js";
import { UnitChooser, tokenBackend } from "./units.js";

const CLIENT_ID = "withholding-desktop";

const session = { tokens: null, claims: null, method: null, unit: null };
const demoChannel = "BroadcastChannel" in window ? new BroadcastChannel("qrgate-demo") : null;

function deviceName() {
  const platform = navigator.userAgentData?.platform || navigator.platform || "";
  return `Web ${platform}`.trim().slice(0, 128);
}

const qr = new QrLogin({
  mint: () => api("POST", "/v1/qr", { json: { client_id: CLIENT_ID, device_name: deviceName() } }),
  onMinted: (current) => {
    demoChannel?.postMessage({ type: "qr", qr_content: current.qr_content, deadline: current.deadline });
  },
  onConfirmed: (tokens) => {
    if (!tokens) return qr.lost("qr_delivered"); // this page's codes always deliver their tokens
    loggedIn(tokens, "qr");
  },
  refreshWhenExpired: () => !session.tokens && tabs.active === "qr",
});

const password = new PasswordForm({
  submit: (fields) => api("POST", "/v1/login/password", { json: { ...fields, client_id: CLIENT_ID } }),
  onSuccess: (answer) => loggedIn(answer.body, "pwd"),
});

const tabs = new LoginTabs({ qr, password });

// --- After login ------------------------------------------------------------------------------

const units = new UnitChooser({ onEntered: (unit) => showDone(unit), backend: tokenBackend(session), onLogout: () => logout() });
const entered = new EnteredView();

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
  $("done-summary").textContent = summary;
  entered.draw(session); // the unit's facts in words, the claims behind "details" (entered.js)
}

async function logout() {
  const token = session.tokens?.access_token;
  Object.assign(session, { tokens: null, claims: null, method: null, unit: null });
  entered.stop();
  units.reset();
  if (token) await api("POST", "/v1/logout", { token });
  show($("done"), false);
  show($("units"), false);
  show($("login"), true);
  document.body.classList.remove("logged-in");
  tabs.select("password", { force: true });
}

// --- Wiring -----------------------------------------------------------------------------------

installLanguageSwitch();
onLanguageChange(() => {
  qr.redraw();
  password.redraw();
  drawDone();
  units.redraw();
});
$("logout").addEventListener("click", logout);
$("switch-unit").addEventListener("click", () => {
  entered.stop();
  session.unit = null;
  show($("done"), false);
  units.start();
});
window.addEventListener("pagehide", () => qr.stop());
demoChannel?.addEventListener("message", (event) => {
  // The demo phone page asks which codes this browser shows (qr_content is public: it is the picture).
  const current = qr.current;
  if (event.data?.type === "ask" && current && !current.finished) {
    demoChannel.postMessage({ type: "qr", qr_content: current.qr_content, deadline: current.deadline });
  }
});
tabs.select("password", { force: true }); // the notice's default: 账号密码登录
// Back from registration or a password reset: the identifier they left in this tab is filled in
// (sessionStorage, not the URL: it is personal data), and the password is asked for.
const handedIdentifier = sessionStorage.getItem("qrgate.login-identifier");
sessionStorage.removeItem("qrgate.login-identifier");
if (handedIdentifier) {
  $("identifier").value = handedIdentifier;
  $("password").focus();
}
