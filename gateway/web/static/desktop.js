// The desktop login page: QR login (qrlogin.js), password login with captcha and lockout
// (password.js), then the unit choice and the logged-in view. Tokens live in `session` only: never
// in storage, never in a URL.

import { $, api, claimsOf, fillClaims, show } from "./common.js";
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

const units = new UnitChooser({ onEntered: (unit) => showDone(unit), backend: tokenBackend(session) });

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
  tabs.select("qr", { force: true });
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
window.addEventListener("pagehide", () => qr.stop());
demoChannel?.addEventListener("message", (event) => {
  // The demo phone page asks which codes this browser shows (qr_content is public: it is the picture).
  const current = qr.current;
  if (event.data?.type === "ask" && current && !current.finished) {
    demoChannel.postMessage({ type: "qr", qr_content: current.qr_content, deadline: current.deadline });
  }
});
// Back from registration or a password reset: the identifier they left in this tab is filled in
// (sessionStorage, not the URL: it is personal data), and the password is asked for.
const handedIdentifier = sessionStorage.getItem("qrgate.login-identifier");
sessionStorage.removeItem("qrgate.login-identifier");
if (handedIdentifier) {
  $("identifier").value = handedIdentifier;
  tabs.select("password");
  $("password").focus();
} else qr.refresh();
