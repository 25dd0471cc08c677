// The forgotten-password page (/forgot-password) and the change of a hall temporary password
// (/change-password), one script:
//   forgot: ① identity + captcha -> an SMS code to the registered phone (shown masked) -> the code
//           (POST /v1/password/forgot) gives a reset ticket; ② the new password (on-screen keyboard);
//           ③ done: the account is unlocked, and the login page gets the identifier filled in.
//   change: a hall temporary password must be changed at the first login: the login page answered
//           403 password_change_required and handed over the identifier (this tab's sessionStorage,
//           removed when read; never the ticket, never the password). The person proves the
//           temporary password again here; the login's 403 carries the change ticket; ② and ③.
// The ticket lives in this page's memory only.

import { $, Captcha, api, problemMessage, show } from "./common.js";
import { installLanguageSwitch, onLanguageChange, t } from "./i18n.js";
import { attachKeyboard } from "/web/keyboard.js";
import {
  PASSWORD_CHANGE_KEY,
  RareCharPicker,
  backToLogin,
  checkFields,
  clearErrors,
  drawPasswordChecks,
  fieldError,
  identityFields,
  identityIds,
  liveRule,
  showRefusal,
  watchIdType,
} from "./account.js";

const PAGE = document.body.dataset.page; // "forgot" | "change"
const state = { sms: null, identity: null, ticket: null, identifier: null, resendTimer: null };

const CLIENT_ID = "withholding-desktop";

function go(step) {
  for (const name of ["verify", "current", "reset", "done"]) show($(`step-${name}`), name === step);
  const heading = $(`step-${step}`).querySelector("h2");
  heading.tabIndex = -1;
  heading.focus();
}

// ① Identity, captcha, SMS code ------------------------------------------------------------------
const picker = new RareCharPicker($("name"));
const captcha = new Captcha("step-verify", "captcha-image", "captcha-answer", "captcha-refresh");
watchIdType();
$("step-verify").addEventListener("input", () => ($("verify-message").textContent = ""));
for (const id of ["id-number", "name", "nationality", "sms-code"]) liveRule(id);

$("sms-send").addEventListener("click", async () => {
  const form = $("step-verify");
  clearErrors(form);
  $("verify-message").textContent = "";
  let ok = checkFields(identityIds());
  if (!$("captcha-answer").value.trim()) {
    fieldError("captcha", t("captcha_needed"), { focus: ok });
    ok = false;
  }
  if (!ok) return;
  const identity = identityFields();
  $("sms-send").disabled = true;
  const answer = await api("POST", "/v1/sms/challenges", {
    json: { purpose: "reset_password", identity, ...captcha.take() },
  });
  if (!answer.ok) {
    $("sms-send").disabled = false;
    showRefusal(answer, $("verify-message"));
  } else {
    state.sms = answer.body;
    state.identity = identity;
    drawSmsSent();
    resendCountdown(answer.body.resend_after);
    $("sms-code").focus();
  }
  await captcha.load(); // single use, right or wrong: a new one for the next request
});

function drawSmsSent() {
  if (state.sms) $("sms-code-hint").textContent = t("sms_sent_registered", { phone: state.sms.phone_masked });
}

function resendCountdown(seconds) {
  clearInterval(state.resendTimer);
  const until = Date.now() + seconds * 1000;
  const draw = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left <= 0) {
      clearInterval(state.resendTimer);
      $("sms-send").disabled = false;
      $("sms-send").textContent = t("sms_send_registered");
    } else $("sms-send").textContent = t("sms_resend_in", { s: left });
  };
  state.resendTimer = setInterval(draw, 1000);
  draw();
}

$("step-verify").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors($("step-verify"));
  $("verify-message").textContent = "";
  if (!state.sms) return fieldError("sms-code", t("rule_sms_first"));
  if (!checkFields(["sms-code"])) return;
  const body = { ...state.identity, sms_challenge_id: state.sms.challenge_id, sms_code: $("sms-code").value.trim() };
  $("verify-submit").disabled = true;
  const answer = await api("POST", "/v1/password/forgot", { json: body });
  $("verify-submit").disabled = false;
  if (!answer.ok) return showRefusal(answer, $("verify-message"));
  state.ticket = answer.body.reset_ticket;
  // Resident ID card holders log in with their ID number; the others with phone or login name,
  // which this page does not know (the phone is shown masked): nothing to fill in for them.
  state.identifier = state.identity.id_type === "resident_id" ? state.identity.id_number : null;
  drawResetWhy();
  go("reset");
});

// ② The new password -----------------------------------------------------------------------------
attachKeyboard($("password"));
liveRule("password");
$("password").addEventListener("input", () => drawPasswordChecks($("password"), $("password-checks")));
drawPasswordChecks($("password"), $("password-checks"));

function drawResetWhy() {
  $("reset-why").textContent = PAGE === "change" ? t("change_why") : t("reset_why");
}

$("step-reset").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = $("step-reset");
  clearErrors(form);
  $("reset-message").textContent = "";
  if (!checkFields(["password", "password-again"])) return;
  if ($("password").value !== $("password-again").value) return fieldError("password-again", t("rule_password_mismatch"));
  $("reset-submit").disabled = true;
  const answer = await api("POST", "/v1/password/reset", {
    json: { reset_ticket: state.ticket, new_password: $("password").value },
  });
  $("reset-submit").disabled = false;
  if (!answer.ok) {
    if (answer.body.code === "reset_ticket_invalid") {
      state.ticket = null;
      $("reset-message").textContent = t(PAGE === "change" ? "rule_change_ticket_invalid" : "rule_reset_ticket_invalid");
      $("reset-submit").disabled = true;
      return;
    }
    return showRefusal(answer, $("reset-message"));
  }
  state.ticket = null;
  drawDone();
  go("done");
});

function drawDone() {
  if (!$("step-done").hidden || state.ticket === null) {
    $("done-text").textContent = t(state.identifier ? "reset_done_text" : "reset_done_text_other");
  }
}

$("done-login").addEventListener("click", (event) => {
  event.preventDefault();
  location.assign(backToLogin(state.identifier));
});

// Start --------------------------------------------------------------------------------------------
installLanguageSwitch();
onLanguageChange(() => {
  drawSmsSent();
  drawResetWhy();
  drawDone();
  drawPasswordChecks($("password"), $("password-checks"));
  picker.redraw();
});

// /change-password: the temporary password proved again; the login's 403 gives the change ticket.
const currentCaptcha = new Captcha("current-captcha-row", "current-captcha-image", "current-captcha-answer", "current-captcha-refresh");
$("step-current").addEventListener("input", () => ($("current-message").textContent = ""));

$("step-current").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors($("step-current"));
  const identifier = $("identifier").value.trim();
  const password = $("current-password").value;
  let ok = true;
  for (const [id, value] of [["identifier", identifier], ["current-password", password]]) {
    if (!value) {
      fieldError(id, t("rule_required"), { focus: ok });
      ok = false;
    }
  }
  if (!ok) return;
  $("current-submit").disabled = true;
  const answer = await api("POST", "/v1/login/password", {
    json: { identifier, password, client_id: CLIENT_ID, ...currentCaptcha.take() },
  });
  $("current-submit").disabled = false;
  const { status, body } = answer;
  if (status === 403 && body.code === "password_change_required") {
    state.ticket = body.change_ticket;
    state.identifier = identifier;
    currentCaptcha.hide();
    drawResetWhy();
    return go("reset");
  }
  if (answer.ok) {
    // Not a temporary password: nothing to change here. End the session this check started.
    await api("POST", "/v1/logout", { token: body.access_token });
    $("current-message").textContent = t("rule_not_temporary");
    return;
  }
  if (status === 401 && body.code === "invalid_credentials") {
    fieldError("current-password", t("wrong_password", { attempts: body.attempts_left }));
  } else $("current-message").textContent = problemMessage(answer);
  if (body.captcha_required || status === 400 || currentCaptcha.active) await currentCaptcha.load();
});

if (PAGE === "change") {
  const handed = sessionStorage.getItem(PASSWORD_CHANGE_KEY);
  sessionStorage.removeItem(PASSWORD_CHANGE_KEY);
  if (handed) $("identifier").value = handed;
  go("current");
  $(handed ? "current-password" : "identifier").focus();
} else {
  show($("step-verify"));
  captcha.load();
}
