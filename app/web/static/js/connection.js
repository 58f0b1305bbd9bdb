// The page's WebSocket to /ws: subscribe, reconnect with backoff, and say so in the
// #connection banner. Both live pages (models and jobs) use one of these.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
// The server answers a ping within a quarter second; a socket silent for this long after
// one is dead even if the browser has not noticed (a laptop that slept, a dropped NAT).
const PING_AFTER_MS = 15000;
const DEAD_AFTER_MS = 30000;

export class Connection {
  constructor({ onMessage, onState }) {
    this.onMessage = onMessage;
    this.onState = onState ?? (() => {});
    this.banner = document.getElementById("connection");
    this.ws = null;
    this.delay = FIRST_DELAY_MS;
    // Not "offline" before the first attempt fails: the page starts out trusting the API.
    this.offline = false;
    this.lastFrame = 0;
    this.leaving = false;
    this.countdown = null;
  }

  connect() {
    // Navigating away closes the socket: that is not a lost connection worth a banner.
    window.addEventListener("pagehide", () => {
      this.leaving = true;
    });
    setInterval(() => this.watch(), 5000);
    this.open();
  }

  open() {
    const proto = window.location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${window.location.host}/ws`);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.lastFrame = Date.now();
      ws.send(JSON.stringify({ type: "subscribe", channel: "download" }));
    });
    ws.addEventListener("message", (msg) => {
      if (ws !== this.ws) return;
      this.lastFrame = Date.now();
      let message;
      try {
        message = JSON.parse(msg.data);
      } catch {
        return;
      }
      // Online once the snapshot has arrived: until then the page's picture is stale.
      if (message.type === "snapshot") this.back();
      this.onMessage(message);
    });
    ws.addEventListener("close", () => this.lost(ws));
  }

  back() {
    this.delay = FIRST_DELAY_MS;
    clearInterval(this.countdown);
    this.countdown = null;
    if (this.banner) this.banner.hidden = true;
    if (this.offline) {
      this.offline = false;
      this.onState(true);
    }
  }

  lost(ws) {
    if (ws !== this.ws || this.leaving) return;
    this.ws = null;
    if (!this.offline) {
      this.offline = true;
      this.onState(false);
    }
    let left = Math.round(this.delay / 1000);
    const say = () => {
      if (!this.banner) return;
      this.banner.textContent =
        left > 0
          ? `Connection to the service lost; reconnecting in ${left} s…`
          : "Connection to the service lost; reconnecting…";
      this.banner.hidden = false;
    };
    say();
    clearInterval(this.countdown);
    this.countdown = setInterval(() => {
      left = Math.max(0, left - 1);
      say();
    }, 1000);
    setTimeout(() => this.open(), this.delay);
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
  }

  watch() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this.offline) return;
    const quiet = Date.now() - this.lastFrame;
    if (quiet > DEAD_AFTER_MS) {
      ws.close();
      this.lost(ws);
    } else if (quiet > PING_AFTER_MS) {
      ws.send(JSON.stringify({ type: "ping" }));
    }
  }
}
