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

// The names a command topic is built from, as the device checks them (common/topics.py,
// common/dispatch.py, common/config.py). Checked here before anything is published: a topic
// with `+`/`#` makes the broker drop the whole connection, and a name the device cannot match
// is never answered.
export const SERVICE_RE = /^[a-z][a-z0-9_]*$/;
export const ACTION_RE = /^[a-z][a-z0-9_]*(\/[a-z][a-z0-9_]*)*$/;
export const DEVICE_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const JOB_ID_RE = /^[^/+#\u0000]{1,200}$/; // one topic level

/** Why a device id is not valid, or null. */
export function deviceIdProblem(device) {
  if (typeof device === "string" && DEVICE_RE.test(device)) return null;
  return device
    ? "device id must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, e.g. gw-0042"
    : "device id is empty: give one, e.g. gw-0042";
}

/**
 * Check the parts of a command topic; returns null when they are fine, else an
 * `invalid_request` error (reply-shaped, like the device's) saying which part and why.
 */
export function checkCommand(device, service, action) {
  const bad = (field, value, message) =>
    localError("invalid_request", message, { field, value, sent: false });
  const dp = deviceIdProblem(device);
  if (dp) return bad("device", device, dp);
  if (typeof service !== "string" || !SERVICE_RE.test(service)) {
    return bad(
      "service",
      service,
      service
        ? "service must be one lowercase word (a-z, 0-9, _; starting with a letter), e.g. stats"
        : "service is empty: choose one, e.g. stats",
    );
  }
  if (typeof action !== "string" || !ACTION_RE.test(action)) {
    return bad(
      "action",
      action,
      action
        ? "action must be lowercase words separated by /, e.g. wifi/scan (a-z, 0-9, _; no spaces, + or #)"
        : "action is empty: give one, lowercase words separated by /, e.g. get or wifi/scan",
    );
  }
  return null;
}

/** Is `filter` a subscription filter the broker accepts (wildcards only as whole levels)? */
export function validFilter(filter) {
  if (typeof filter !== "string" || !filter || filter.includes("\u0000")) return false;
  const levels = filter.split("/");
  return levels.every(
    (l, i) => (l === "#" ? i === levels.length - 1 : l === "+" || !/[+#]/.test(l)),
  );
}

/** Is `prefix` usable as the topic prefix (levels without wildcards, none empty)? */
export function validPrefix(prefix) {
  return (
    typeof prefix === "string" &&
    prefix.split("/").every((l) => l.length > 0 && !/[+#\u0000]/.test(l))
  );
}

// MQTT 5 DISCONNECT reason codes a broker sends, in words
const DISCONNECT_REASONS = {
  129: "malformed packet",
  130: "protocol error, e.g. a topic with + or #",
  135: "not authorized",
  137: "server busy",
  139: "server shutting down",
  141: "keep alive timeout",
  142: "session taken over by another client with the same id",
  144: "topic name invalid",
  149: "packet too large",
  151: "quota exceeded",
  152: "administrative action",
};

// A connection the broker closes within this long after accepting it counts as a quick drop;
// after QUICK_DROPS_MAX of them in a row the page stops reconnecting and says why.
const QUICK_DROP_MS = 5000;
const QUICK_DROPS_MAX = 4;

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
    this.drops = 0; // connections lost since connect() (for the header and the tests)
    this.quickDrops = 0; // of them, in a row, right after the broker accepted the connection
    this.connectedAt = 0;
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
    this.drops = 0;
    this.quickDrops = 0;
    this.connectedAt = 0;
    this.lastError = "";
    if (!validPrefix(this.prefix)) {
      const msg = `The topic prefix "${this.prefix}" is not valid: levels separated by /, none empty, without + or #`;
      this._setState("disconnected", msg);
      return Promise.reject(new Error(msg));
    }
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
      client.on("packetreceive", (packet) => {
        // the broker accepted the connection (MQTT.js emits "connect" only after resending
        // what was queued, which may itself make the broker drop the connection)
        if (packet?.cmd === "connack" && !packet.reasonCode && this.client === client) {
          this.connectedAt = Date.now();
        }
      });
      client.on("connect", () => {
        if (this.client !== client) return;
        this.lastError = "";
        this._setState("connected");
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          this._subscribeBase();
          resolve();
        }
      });
      client.on("reconnect", () => {
        if (this.client === client) this._setState("reconnecting");
      });
      client.on("offline", () => {
        if (settled && this.client === client) this._setState("reconnecting");
      });
      client.on("error", (err) => {
        const msg = describeConnectError(err, url);
        if (!settled) fail(msg);
        else if (this.client === client) this._setState(this.state, msg);
      });
      client.on("disconnect", (packet) => {
        // MQTT 5: the broker says why it is closing the connection
        if (this.client !== client) return;
        const rc = packet?.reasonCode;
        const why = packet?.properties?.reasonString || DISCONNECT_REASONS[rc] || "";
        this.lastError = `The broker closed the connection (reason ${rc ?? "?"}${why ? `: ${why}` : ""})`;
      });
      client.on("close", () => {
        if (!settled) {
          fail(`Could not connect to the broker at ${url} (connection closed)`);
          return;
        }
        if (this.client !== client) return;
        this._onDropped(client, url);
      });
      client.on("message", (topic, payload, packet) => this._onMessage(topic, payload, packet));
    });
  }

  /**
   * The connection was lost after it had worked. MQTT.js reconnects by itself; commands still
   * waiting get `not_connected` at once instead of waiting for their timeout, and their
   * unsent/unacknowledged messages are dropped so that a message the broker refuses cannot
   * make every reconnect fail again. A broker that keeps closing the connection right after
   * accepting it stops the reconnecting, with the reason on the connect screen.
   */
  _onDropped(client, url) {
    const quick = this.connectedAt && Date.now() - this.connectedAt < QUICK_DROP_MS;
    if (this.connectedAt) {
      this.drops += 1;
      this.quickDrops = quick ? this.quickDrops + 1 : 0;
    }
    this.connectedAt = 0;
    const reason = this.lastError || `Lost the connection to the broker at ${url}`;
    this._failPending("not_connected", `The connection to the broker was lost before an answer came (${reason}); the command may or may not have run`);
    if (this.quickDrops >= QUICK_DROPS_MAX) {
      this.client = null;
      client.end(true);
      this._setState(
        "disconnected",
        `The broker at ${url} closed the connection ${this.quickDrops} times in a row right ` +
          `after accepting it, so the console stopped reconnecting. Last reason: ${reason}. ` +
          "Check the broker's log (e.g. an ACL or a limit refusing this client), then connect again.",
      );
      return;
    }
    this._setState("reconnecting", reason);
  }

  _failPending(code, message) {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.resolve(localError(code, message));
    }
    // our commands still queued in MQTT.js (resent on reconnect otherwise): drop them (after
    // the above, so that their "Message removed" callbacks find nothing pending)
    const client = this.client;
    for (const [mid, o] of Object.entries(client?.outgoing || {})) {
      if (o?.cmd === "publish" && o.cb?.tetherCommand) {
        try {
          client.removeOutgoingMessage(Number(mid));
        } catch {
          // already gone
        }
      }
    }
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
    if (!validFilter(filter)) {
      // never send it: the broker would drop the whole connection
      console.warn(`tether console: not subscribing to the invalid filter ${JSON.stringify(filter)}`);
      return () => {};
    }
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
    const invalid = checkCommand(device, service, action);
    if (invalid) return Promise.resolve(invalid);
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
      // called on the broker's PUBACK: an MQTT 5 broker may refuse the message there (e.g. its
      // ACL), and then no answer will ever come
      const onAck = (err) => {
        const p = this.pending.get(id);
        if (!err || !p) return;
        this.pending.delete(id);
        clearTimeout(p.timer);
        const msg = String(err.message || err);
        p.resolve(
          localError(
            /not authori[sz]ed|135/i.test(msg) || err.code === 135 ? "not_authorized" : "not_sent",
            `The broker did not accept the command for ${device} (${msg})`,
            { topic, code: err.code ?? null },
          ),
        );
      };
      onAck.tetherCommand = id;
      this.client.publish(
        topic,
        JSON.stringify(body),
        {
          qos: 1,
          properties: {
            responseTopic: `${this.prefix}/${device}/res/client/${this.clientId}`,
            correlationData: id,
          },
        },
        onAck,
      );
    });
  }

  /**
   * Follow a job's events (`onEvent(ev)` in `seq` order); `done` resolves with the final
   * event. The final event is retained, so a job that already ended still reports.
   */
  followJob(device, jobId, onEvent) {
    if (deviceIdProblem(device) || typeof jobId !== "string" || !JOB_ID_RE.test(jobId)) {
      const ev = { seq: 0, state: "failed", error: { code: "invalid_request", message: `Cannot follow job ${JSON.stringify(jobId)} of ${device}: not a valid job or device id` } };
      queueMicrotask(() => onEvent(ev));
      return { done: Promise.resolve(ev), stop: () => {} };
    }
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
