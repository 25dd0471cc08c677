// Waiting for a QR login, shared by the desktop page and the browser sign-in page: show a minted code
// and its countdown, wait on the WebSocket (long-poll when sockets are blocked or when ?transport=poll
// asks for it), say who scanned, refresh an expired code, and hand the confirmation to the page.
// The page decides how a code is minted and what a confirmation does; the markup (#qr-frame,
// #qr-image, #qr-overlay, #qr-overlay-text, #qr-refresh, #qr-status, #qr-countdown) is the same in both.

import { $, api, problemMessage, show } from "./common.js";
import { t } from "./i18n.js";

const SOCKET_OPEN_TIMEOUT = 4000; // ms before a socket that has not opened counts as blocked
const POLL_WAIT = 25; // s, below the gateway's long_poll_max_wait
const RECONNECTS = 5; // socket drops in a row before falling back to long-poll

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

function socketUrl(qrId) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/qr/${encodeURIComponent(qrId)}/events`;
}

export class QrLogin {
  /**
   * mint(): the gateway's answer to minting (an `api` result whose body is the mint answer).
   * onConfirmed(token, current): the person confirmed; `token` is the token response, or undefined
   *   for codes whose result the server keeps (the sign-in page's), `current` the mint answer.
   * onMinted(current): a new code is shown (optional).
   * refreshWhenExpired(): whether an expired code is replaced by itself (default: always).
   * describe(answer): a message for a refused mint (default: problemMessage).
   */
  constructor({ mint, onConfirmed, onMinted = () => {}, refreshWhenExpired = () => true, describe = problemMessage }) {
    this.mint = mint;
    this.describe = describe;
    this.onConfirmed = onConfirmed;
    this.onMinted = onMinted;
    this.refreshWhenExpired = refreshWhenExpired;
    this.current = null; // the mint answer, with `deadline` (ms)
    this.generation = 0; // bumped on every refresh: callbacks of an older QR code do nothing
    this.transport = new URLSearchParams(location.search).get("transport") === "poll" ? "poll" : "ws";
    this.socket = null;
    this.poller = null;
    this.timer = null;
    this.drops = 0;
    this.status = null; // [key, values] of the status line, redrawn on a language switch
    this.tick = null; // redraws the countdown
    $("qr-refresh").addEventListener("click", () => this.refresh());
  }

  /** Redraw the texts after a language switch. */
  redraw() {
    if (this.status) this.setStatus(...this.status);
    if (!$("qr-overlay").hidden) this.overlay($("qr-overlay").dataset.state);
    this.tick?.();
  }

  setStatus(key, values = {}) {
    this.status = [key, values];
    let text = t(key, values);
    if (this.transport === "poll" && key === "qr_waiting") text += t("transport_poll");
    $("qr-status").textContent = text;
    $("qr-status").dataset.state = key;
  }

  overlay(state) {
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

  /** Stop waiting for the code shown (its callbacks do nothing from now on). */
  stopWaiting() {
    this.generation += 1;
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000);
      this.socket = null;
    }
    this.poller?.abort();
    this.poller = null;
    clearInterval(this.timer);
    this.timer = null;
    this.tick = null;
    $("qr-countdown").textContent = "";
  }

  /** The page no longer wants this code (tab switch, new code, page closed): tell the gateway. */
  abandon() {
    const current = this.current;
    this.current = null;
    if (current && !current.finished) {
      api("DELETE", `/v1/qr/${current.qr_id}`, { token: current.waiter_token, keepalive: true });
    }
  }

  /** Stop waiting and give the code up. */
  stop() {
    this.stopWaiting();
    this.abandon();
  }

  async refresh() {
    this.stop();
    const generation = this.generation;
    this.overlay(null);
    $("qr-image").removeAttribute("src");
    $("qr-countdown").textContent = "";
    this.setStatus("qr_loading");
    const minted = await this.mint();
    if (generation !== this.generation) return;
    if (!minted.ok) {
      this.setStatus("qr_failed", { detail: this.describe(minted) });
      this.overlay("qr_failed");
      return;
    }
    const current = { ...minted.body, deadline: Date.now() + minted.body.expires_in * 1000 };
    this.current = current;
    // Same origin as this page (the image_url/events_url of the answer name the public URL).
    $("qr-image").src = `/v1/qr/${encodeURIComponent(current.qr_id)}.svg?size=6`;
    this.onMinted(current);
    this.setStatus("qr_waiting");
    this.startCountdown(generation);
    this.drops = 0;
    if (this.transport === "ws" && "WebSocket" in window) this.openSocket(generation);
    else this.poll(generation);
  }

  startCountdown(generation) {
    this.tick = () => {
      if (generation !== this.generation || !this.current) return;
      const left = Math.ceil((this.current.deadline - Date.now()) / 1000);
      if (left <= 0) {
        this.expired(generation);
        return;
      }
      $("qr-countdown").textContent = t("qr_countdown", { seconds: left });
    };
    this.tick();
    this.timer = setInterval(this.tick, 1000);
  }

  expired(generation) {
    if (generation !== this.generation) return;
    if (this.current) this.current.finished = true;
    this.stopWaiting();
    this.setStatus("qr_expired");
    this.overlay("qr_expired");
    setTimeout(() => {
      if (this.generation === generation + 1 && this.refreshWhenExpired()) this.refresh();
    }, 600);
  }

  scanned(name) {
    this.setStatus("qr_scanned", { name });
    this.overlay("qr_scanned");
  }

  cancelled() {
    if (this.current) this.current.finished = true;
    this.stopWaiting();
    this.setStatus("qr_cancelled");
    this.overlay("qr_cancelled");
  }

  confirmed(token) {
    const current = this.current;
    if (current) current.finished = true;
    this.stopWaiting();
    this.setStatus("qr_confirmed");
    this.overlay("qr_confirmed");
    this.onConfirmed(token, current);
  }

  /** The code can no longer be waited for: say why, and offer a new one. */
  lost(key = "qr_lost", values = {}) {
    this.stopWaiting();
    this.setStatus(key, values);
    this.overlay(OVERLAYS[key] ? key : "qr_lost");
  }

  handle(message, generation) {
    if (generation !== this.generation) return;
    switch (message.type) {
      case "state":
        if (message.state === "scanned") this.scanned(message.scanner?.display_name ?? "");
        break; // the terminal states are followed by their own message
      case "scanned":
        this.scanned(message.scanner.display_name);
        break;
      case "confirmed":
        this.confirmed(message.token);
        break;
      case "cancelled":
        this.cancelled();
        break;
      case "expired":
        this.expired(generation);
        break;
    }
  }

  openSocket(generation) {
    const current = this.current;
    let opened = false;
    const socket = new WebSocket(socketUrl(current.qr_id));
    this.socket = socket;
    const giveUp = setTimeout(() => {
      if (!opened && generation === this.generation) this.fallBack(generation);
    }, SOCKET_OPEN_TIMEOUT);
    socket.onopen = () => {
      opened = true;
      clearTimeout(giveUp);
      socket.send(JSON.stringify({ type: "hello", waiter_token: current.waiter_token }));
    };
    socket.onmessage = (event) => {
      this.drops = 0;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // not JSON: ignore
      }
      this.handle(message, generation);
    };
    socket.onclose = (event) => {
      clearTimeout(giveUp);
      if (generation !== this.generation) return;
      this.socket = null;
      if (!opened) return this.fallBack(generation); // blocked by a proxy or firewall
      switch (event.code) {
        case 1000:
          return; // after a terminal message, already handled
        case 4404:
          return this.expired(generation);
        case 4409:
          return this.lost("qr_delivered");
        case 4400:
        case 4401:
          return this.lost();
        default: // 1001 server going away, 1013 try again, 1006 dropped: the new socket gets the state first
          this.drops += 1;
          if (this.drops > RECONNECTS) return this.fallBack(generation);
          setTimeout(() => generation === this.generation && this.openSocket(generation), 250 * 2 ** this.drops);
      }
    };
  }

  fallBack(generation) {
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close();
      this.socket = null;
    }
    this.transport = "poll";
    if (this.status?.[0] === "qr_waiting") this.setStatus("qr_waiting");
    this.poll(generation);
  }

  async poll(generation) {
    const current = this.current;
    const controller = new AbortController();
    this.poller = controller;
    let failures = 0;
    let seen = null; // the state of the last answer: sent as `since`, so no change waits a whole poll
    while (generation === this.generation) {
      const since = seen ? `&since=${encodeURIComponent(seen)}` : "";
      const path = `/v1/qr/${encodeURIComponent(current.qr_id)}/state?wait=${POLL_WAIT}${since}`;
      const answer = await api("GET", path, { token: current.waiter_token, signal: controller.signal });
      if (generation !== this.generation || answer.aborted) return;
      if (!answer.ok) {
        if (answer.status === 404 || answer.status === 410) return this.expired(generation);
        if (answer.status === 401) return this.lost();
        failures += 1; // network or 503: back off and ask again
        await new Promise((resolve) => setTimeout(resolve, Math.min(8000, 500 * 2 ** failures)));
        continue;
      }
      failures = 0;
      const view = answer.body;
      seen = view.state;
      if (view.state === "scanned") this.scanned(view.scanner?.display_name ?? "");
      else if (view.state === "confirmed") return this.confirmed(view.token); // no token: kept for the server
      else if (view.state === "cancelled") return this.cancelled();
      else if (view.state === "expired") return this.expired(generation);
      else if (view.state === "delivered") return this.lost("qr_delivered");
    }
  }
}
