// The console's one connection to the broker (MQTT 5 over WebSocket, MQTT.js).
//
// Everything the page learns about devices arrives here: retained status, health and
// capabilities of every device, telemetry and job events of the devices being looked at, and
// replies to our commands. Commands never hang the page: every request has a timeout and then
// resolves with a local `no_answer` error instead of a reply.

const JOB_FINAL = new Set(["succeeded", "failed", "cancelled"]);
const decoder = new TextDecoder();

/** Does an MQTT topic match a subscription filter (with + and #)? */
export function topicMatches(filter, topic) {
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

function randomId(n = 10) {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("");
}

/** A reply-shaped object for failures that happen on this side of the broker. */
export function localError(code, message, details = null) {
  return { id: null, ok: false, error: { code, message, details }, local: true };
}

export class Link extends EventTarget {
  constructor() {
    super();
    this.client = null;
    this.url = "";
    this.prefix = "tether";
    this.clientId = `tether-web-${randomId()}`;
    this.state = "disconnected"; // connecting | connected | reconnecting | disconnected
    this.lastError = "";
    this.handlers = new Map(); // filter -> Set(handler)
    this.pending = new Map(); // command id -> {resolve, timer}
    this.fleet = new Map(); // device -> {status, health, caps, lastSeen}
    this.seq = 0;
  }

  _setState(state, error = "") {
    this.state = state;
    if (error) this.lastError = error;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, error } }));
  }

  /**
   * Connect; resolves once connected, rejects with an Error saying why (bad credentials,
   * broker unreachable) within `timeoutMs`. Afterwards MQTT.js reconnects by itself.
   */
  connect({ url, username, password, prefix }, timeoutMs = 10000) {
    this.disconnect();
    this.url = url;
    this.prefix = prefix || "tether";
    this.fleet.clear();
    if (typeof window.mqtt === "undefined") {
      return Promise.reject(new Error("MQTT.js did not load (web/vendor/mqtt.min.js is missing)"));
    }
    this._setState("connecting");
    return new Promise((resolve, reject) => {
      let settled = false;
      let client;
      const fail = (msg) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.end(true);
        if (this.client === client) this.client = null;
        this._setState("disconnected", msg);
        reject(new Error(msg));
      };
      try {
        client = window.mqtt.connect(url, {
          protocolVersion: 5,
          clientId: this.clientId,
          username: username || undefined,
          password: password || undefined,
          clean: true,
          keepalive: 30,
          reconnectPeriod: 3000,
          connectTimeout: timeoutMs,
          resubscribe: true,
        });
      } catch (err) {
        this._setState("disconnected", String(err.message || err));
        reject(err);
        return;
      }
      this.client = client;
      const timer = setTimeout(
        () => fail(`No answer from the broker at ${url} within ${timeoutMs / 1000} s`),
        timeoutMs,
      );
      client.on("connect", () => {
        this._setState("connected");
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          this._subscribeBase();
          resolve();
        }
      });
      client.on("reconnect", () => this._setState("reconnecting"));
      client.on("offline", () => {
        if (settled && this.client === client) this._setState("reconnecting");
      });
      client.on("error", (err) => {
        const msg = describeConnectError(err, url);
        if (!settled) fail(msg);
        else this._setState(this.state, msg);
      });
      client.on("close", () => {
        if (!settled) fail(`Could not connect to the broker at ${url} (connection closed)`);
      });
      client.on("message", (topic, payload, packet) => this._onMessage(topic, payload, packet));
    });
  }

  disconnect() {
    if (this.client) {
      const c = this.client;
      this.client = null;
      c.end(true);
    }
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve(localError("not_connected", "Disconnected from the broker before an answer came"));
    }
    this.pending.clear();
    if (this.state !== "disconnected") this._setState("disconnected");
  }

  _subscribeBase() {
    const p = this.prefix;
    this.client.subscribe(
      [`${p}/+/status`, `${p}/+/health`, `${p}/+/capabilities`, `${p}/+/res/client/${this.clientId}`],
      { qos: 1 },
    );
  }

  /** Call `handler(topic, body)` for messages on `filter`; returns the unsubscribe function. */
  subscribe(filter, handler) {
    let set = this.handlers.get(filter);
    if (!set) {
      set = new Set();
      this.handlers.set(filter, set);
      if (this.client) this.client.subscribe(filter, { qos: 1 });
    }
    set.add(handler);
    return () => {
      const s = this.handlers.get(filter);
      if (!s) return;
      s.delete(handler);
      if (s.size === 0) {
        this.handlers.delete(filter);
        if (this.client) this.client.unsubscribe(filter);
      }
    };
  }

  _onMessage(topic, payload, packet) {
    let body = null;
    if (payload && payload.length) {
      try {
        body = JSON.parse(decoder.decode(payload));
      } catch {
        return; // not ours: everything Tether publishes is JSON
      }
    }
    const parts = topic.split("/");
    const plen = this.prefix.split("/").length;
    if (topic.startsWith(this.prefix + "/") && parts.length > plen + 1) {
      const device = parts[plen];
      const kind = parts.slice(plen + 1).join("/");
      if (kind === "status" || kind === "health" || kind === "capabilities") {
        this._onRetained(device, kind, body);
      } else if (kind === `res/client/${this.clientId}`) {
        this._onReply(body, packet);
        return;
      } else if (body) {
        this._touch(device);
      }
    }
    for (const [filter, set] of this.handlers) {
      if (topicMatches(filter, topic)) for (const h of [...set]) h(topic, body);
    }
  }

  _touch(device) {
    const d = this.fleet.get(device);
    if (d && d.status?.state !== "offline") d.lastSeen = Date.now() / 1000;
  }

  _onRetained(device, kind, body) {
    let d = this.fleet.get(device);
    if (!body) {
      // a cleared retained message: forget that part
      if (!d) return;
      d[kind === "capabilities" ? "caps" : kind] = null;
    } else {
      if (!d) {
        d = { device, status: null, health: null, caps: null, lastSeen: null };
        this.fleet.set(device, d);
      }
      d[kind === "capabilities" ? "caps" : kind] = body;
      const ts = typeof body.ts === "number" ? body.ts : null;
      if (kind === "status" && body.state === "offline") {
        d.lastSeen = Math.max(d.lastSeen || 0, ts || 0) || null;
      } else {
        d.lastSeen = Math.max(d.lastSeen || 0, ts || Date.now() / 1000);
      }
    }
    this.dispatchEvent(new CustomEvent("fleet", { detail: { device, kind } }));
  }

  _onReply(body, packet) {
    let id = body && typeof body.id === "string" ? body.id : null;
    const corr = packet?.properties?.correlationData;
    if (!this.pending.has(id) && corr) id = decoder.decode(corr);
    const p = this.pending.get(id);
    if (!p) return; // late (after our timeout) or a duplicate
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.resolve(body);
  }

  /**
   * Send a command; resolves with the reply `{id, ok, result|error}`. Never rejects: when no
   * answer comes within `timeout` seconds it resolves with error code `no_answer`.
   * `expires_at` makes the device drop the command if it only arrives later (e.g. the device
   * was offline); a minute is added for clocks that disagree.
   */
  request(device, service, action, args = {}, { timeout = 15 } = {}) {
    if (!this.client || this.state !== "connected") {
      return Promise.resolve(
        localError("not_connected", "Not connected to the broker; the command was not sent"),
      );
    }
    const id = `${this.clientId}-${++this.seq}`;
    const topic = `${this.prefix}/${device}/cmd/${service}/${action}`;
    const body = { id, args: args || {}, expires_at: Date.now() / 1000 + timeout + 60 };
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(
          localError(
            "no_answer",
            `No answer from ${device} within ${timeout} s: it may be offline, slow or ` +
              "restarting (or the broker does not let you command it). The command expires " +
              "on the device if it arrives later.",
            { timeout },
          ),
        );
      }, timeout * 1000);
      this.pending.set(id, { resolve, timer });
      this.client.publish(topic, JSON.stringify(body), {
        qos: 1,
        properties: {
          responseTopic: `${this.prefix}/${device}/res/client/${this.clientId}`,
          correlationData: id,
        },
      });
    });
  }

  /**
   * Follow a job's events (`onEvent(ev)` in `seq` order); `done` resolves with the final
   * event. The final event is retained, so a job that already ended still reports.
   */
  followJob(device, jobId, onEvent) {
    let last = -1;
    let stop = () => {};
    const done = new Promise((resolve) => {
      stop = this.subscribe(`${this.prefix}/${device}/jobs/${jobId}`, (_t, ev) => {
        if (!ev || typeof ev.seq !== "number" || ev.seq <= last) return;
        last = ev.seq;
        onEvent(ev);
        if (JOB_FINAL.has(ev.state)) {
          stop();
          resolve(ev);
        }
      });
    });
    return { done, stop: () => stop() };
  }
}

function describeConnectError(err, url) {
  const msg = String(err?.message || err || "error");
  const code = err?.code;
  if (code === 134 || code === 135 || /not authori[sz]ed|bad user name or password/i.test(msg)) {
    return `The broker at ${url} refused the credentials (${msg})`;
  }
  return `Broker ${url}: ${msg}`;
}

export const isFinal = (state) => JOB_FINAL.has(state);
