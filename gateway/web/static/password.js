// The password form, shared by the desktop page and the browser sign-in page: account and password
// (with the on-screen keyboard, keyboard.js, shown by default), the captcha after a wrong password,
// attempts left, the lock and its time left (the 登录 button is disabled while it lasts). The page decides
// where the attempt goes (`submit`) and what success does; the markup (#panel-password, #identifier,
// #password, #captcha-row, #captcha-image, #captcha-answer, #captcha-refresh, #password-message,
// #password-submit) is the same in both.

import { $, Captcha, duration, problemMessage, show } from "./common.js";
import { t } from "./i18n.js";
import { attachKeyboard } from "./keyboard.js";

export class PasswordForm {
  /**
   * submit(fields): an `api` result for {identifier, password, captcha_id?, captcha_answer?}.
   * onSuccess(answer): the attempt succeeded.
   * describe(answer): a message for a refusal this form does not know (optional; else problemMessage).
   */
  constructor({ submit, onSuccess, describe = problemMessage }) {
    this.submit = submit;
    this.onSuccess = onSuccess;
    this.describe = describe;
    this.captcha = new Captcha("captcha-row", "captcha-image", "captcha-answer", "captcha-refresh");
    this.lockTimer = null;
    this.message = null; // [key, values] or a plain string, redrawn on a language switch
    this.keyboard = attachKeyboard($("password"));
    $("panel-password").addEventListener("submit", (event) => this.attempt(event));
    // The lock is the account's: another account may be tried at once.
    $("identifier").addEventListener("input", () => {
      if (this.lockTimer) {
        this.stopLock();
        this.say(null);
      }
    });
  }

  focus() {
    $("identifier").focus();
  }

  /** Show `message`: an i18n key with `values`, a plain text, or null for none. */
  say(message, values = {}) {
    this.message = message ? [message, values] : null;
    this.redraw();
  }

  redraw() {
    if (this.lockTimer) return; // the lock's countdown redraws itself every second
    const [key, values] = this.message ?? ["", {}];
    $("password-message").textContent = key ? t(key, values) : "";
  }

  /** Clear what a previous sign-in left (after a logout). */
  reset() {
    this.stopLock();
    this.say(null);
    this.captcha.hide();
  }

  async attempt(event) {
    event.preventDefault();
    const identifier = $("identifier").value.trim();
    const password = $("password").value;
    if (!identifier || !password) return this.say("need_identifier");
    this.stopLock();
    $("password-submit").disabled = true;
    const answer = await this.submit({ identifier, password, ...this.captcha.take() });
    $("password-submit").disabled = false;
    $("password").value = "";
    if (answer.ok) {
      this.say(null);
      show($("captcha-row"), false);
      return this.onSuccess(answer);
    }
    const { status, body: problem } = answer;
    if (status === 403 && problem.code === "password_change_required") {
      // A hall temporary password: set a new one first (/change-password, which asks for it again).
      // Only the identifier is handed over, in this tab's sessionStorage (removed when read).
      sessionStorage.setItem("qrgate.password-change", identifier);
      return location.assign(`/change-password${location.search}`);
    }
    if (status === 401 && problem.code === "invalid_credentials") {
      this.say("wrong_password", { attempts: problem.attempts_left });
    } else if (status === 423) {
      this.showLock(problem.retry_after ?? Number(answer.retryAfter ?? 0));
    } else {
      this.say(this.describe(answer));
    }
    if (problem.captcha_required || status === 400 || this.captcha.active) await this.captcha.load();
    $(status === 400 && problem.code?.startsWith("captcha") ? "captcha-answer" : "password").focus();
  }

  showLock(seconds) {
    const until = Date.now() + seconds * 1000;
    const draw = () => {
      const left = (until - Date.now()) / 1000;
      if (left <= 0) {
        this.stopLock();
        this.say(null);
      } else $("password-message").textContent = t("locked", { time: duration(left) });
    };
    $("password-submit").disabled = true; // no login while locked: the lock would only answer again
    this.lockTimer = setInterval(draw, 1000);
    draw();
  }

  stopLock() {
    clearInterval(this.lockTimer);
    this.lockTimer = null;
    $("password-submit").disabled = false;
  }
}
