// The browser sign-in page (/signin): sign in to an application (a relying party) with the QR code
// (default) or the password, with the desktop page's own components (qrlogin.js, password.js, tabs.js).
// Every post goes to this origin with the sign-in's id, its CSRF token and the browser's cookies; a
// success answers {redirect}: the application's redirect URI with the code, where the page then goes.
// The QR code's `confirmed` carries no token: the server takes the result when the page asks it to.
// No token ever reaches this page.
//
// The unit step: when the application asked for scope `unit`, the sign-in answers {unit_step: true}
// (or the page opens at it, for a person signed in already), and the desktop's UnitChooser (units.js)
// runs with a backend of this page's server (/signin/unit/...), which calls the units service itself;
// entering a unit answers {redirect}.

import { $, api, problemMessage, show } from "./common.js";
import { installLanguageSwitch, onLanguageChange, t } from "./i18n.js";
import { PasswordForm } from "./password.js";
import { QrLogin } from "./qrlogin.js";
import { LoginTabs } from "./tabs.js";
import { UnitChooser } from "./units.js";

const signin = document.body.dataset; // request, csrf, party (its name), returnTo (its origin)
let leaving = false;
let stepping = false; // at the unit step: the QR code is not wanted any more

function post(path, fields = {}) {
  const form = { request: signin.request, csrf: signin.csrf, ...fields };
  return api("POST", path, { form, credentials: "same-origin" });
}

/** The refusals only this page meets, then the ones every login meets. */
function describe(answer) {
  if (answer.status === 404 && answer.body.code === "signin_not_found") return t("signin_gone");
  return problemMessage(answer);
}

function leave(answer) {
  if (answer.body.unit_step) return unitStep();
  leaving = true;
  $("signin-status").textContent = t("signin_going", { name: signin.party });
  $("password-submit").disabled = true;
  location.assign(answer.body.redirect);
}

const qr = new QrLogin({
  mint: () => post("/signin/qr"),
  onConfirmed: async (token, current) => {
    const answer = await post("/signin/qr/complete", { waiter_token: current.waiter_token });
    if (answer.ok) leave(answer);
    else qr.lost("signin_failed", { detail: describe(answer) });
  },
  refreshWhenExpired: () => !leaving && !stepping && tabs.active === "qr",
  describe,
});

const password = new PasswordForm({
  submit: (fields) => post("/signin/password", fields),
  onSuccess: leave,
  describe,
});

const tabs = new LoginTabs({ qr, password });

const units = new UnitChooser({
  backend: {
    list: () => post("/signin/unit/list"),
    enter: (tin) => post("/signin/unit/enter", { tin }),
    verify: (tin, fields) => post("/signin/unit/verify", { tin, ...fields }),
  },
  onEntered: (unit) => {
    if (unit?.answer?.redirect) leave({ body: unit.answer });
  },
});

function unitStep() {
  stepping = true;
  qr.stop();
  for (const id of ["panel-qr", "panel-password", "cancel"]) show($(id), false);
  document.querySelector(".tabs").hidden = true;
  units.start();
}

$("unit-cancel").addEventListener("click", async () => {
  const answer = await post("/signin/unit/cancel");
  if (answer.ok) leave(answer);
  else $("units-message").textContent = describe(answer);
});

function drawHeading() {
  const title = t("signin_title", { name: signin.party });
  $("signin-title").textContent = title;
  document.title = title;
  $("signin-return").textContent = signin.returnTo ? t("signin_return", { origin: signin.returnTo }) : "";
  if (leaving) $("signin-status").textContent = t("signin_going", { name: signin.party });
}

installLanguageSwitch();
drawHeading();
onLanguageChange(() => {
  drawHeading();
  qr.redraw();
  password.redraw();
  units.redraw();
});
window.addEventListener("pagehide", () => qr.stop());
if (signin.unitStep === "true") unitStep();
else tabs.select("qr", { force: true }); // this page opens on the QR code (the shared markup opens on the password)
