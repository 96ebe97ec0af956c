// Tether console: the page shell, the connect screen, the devices list and the router.

import { Link, deviceIdProblem } from "./link.js";
import { badge, clear, errorBox, field, fmtAgo, h, table } from "./dom.js";
import { renderDevice } from "./device.js";

const STORE = "tether.console";

const app = {
  link: new Link(),
  main: document.getElementById("main"),
  leaveFns: [],
  current: null, // {view, device}
  onLeave(fn) {
    this.leaveFns.push(fn);
  },
  leave() {
    for (const fn of this.leaveFns.splice(0)) {
      try {
        fn();
      } catch (err) {
        console.error(err);
      }
    }
  },
  go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
};
window.tetherConsole = app; // for debugging from the browser's developer tools

// --- header ---------------------------------------------------------------------------------

const connPill = document.getElementById("conn-state");
const connUrl = document.getElementById("conn-url");
const disconnectBtn = document.getElementById("disconnect");
const crumbs = document.getElementById("crumbs");

function showConnState() {
  const s = app.link.state;
  const text = { connected: "connected", connecting: "connecting…", reconnecting: "reconnecting…", disconnected: "not connected" }[s];
  connPill.replaceChildren(badge(text, s === "connected" ? "good" : s === "disconnected" ? "neutral" : "warn"));
  // while reconnecting, say why (and how often it happened) instead of only spinning
  const why = s === "reconnecting" && app.link.lastError ? app.link.lastError : "";
  const drops = app.link.drops > 1 ? ` (connection lost ${app.link.drops} times)` : "";
  connUrl.textContent = s === "disconnected" ? "" : why ? `${app.link.url}: ${why}${drops}` : app.link.url;
  connUrl.title = why;
  connPill.title = why;
  disconnectBtn.hidden = s === "disconnected";
}
app.link.addEventListener("state", (ev) => {
  showConnState();
  if (ev.detail.state === "disconnected" && app.current?.view !== "connect") route();
});
disconnectBtn.addEventListener("click", () => {
  const saved = loadSaved();
  saveSettings({ ...saved, auto: false });
  app.link.disconnect();
  route();
});

function setCrumbs(...items) {
  clear(
    crumbs,
    items.map((it, i) =>
      h("li", {}, it.href && i < items.length - 1 ? h("a", { href: it.href }, it.text) : h("span", { "aria-current": i === items.length - 1 ? "page" : null }, it.text)),
    ),
  );
}

// --- connect --------------------------------------------------------------------------------

function loadSaved() {
  try {
    return JSON.parse(localStorage.getItem(STORE) || "{}");
  } catch {
    return {};
  }
}

function saveSettings(s) {
  const keep = { url: s.url, username: s.username || "", prefix: s.prefix || "tether", auto: Boolean(s.auto) };
  if (s.remember && s.password) {
    keep.password = s.password;
    keep.remember = true;
  }
  localStorage.setItem(STORE, JSON.stringify(keep));
}

function defaultBroker() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.hostname || "localhost"}:9001`;
}

function renderConnect(message) {
  app.current = { view: "connect" };
  setCrumbs({ text: "Connect" });
  document.title = "Connect · Tether console";
  const saved = loadSaved();
  const params = new URLSearchParams(location.search);
  const url = h("input", { name: "url", type: "text", required: true, autocomplete: "url", spellcheck: "false", value: params.get("broker") || saved.url || defaultBroker() });
  const user = h("input", { name: "username", type: "text", autocomplete: "username", value: saved.username || "" });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", value: saved.password || "" });
  const remember = h("input", { name: "remember", type: "checkbox", checked: Boolean(saved.remember) });
  const prefix = h("input", { name: "prefix", type: "text", spellcheck: "false", value: params.get("prefix") || saved.prefix || "tether" });
  const out = h("div", { class: "form-out", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Connect");
  const form = h(
    "form",
    { class: "connect-form", "aria-labelledby": "connect-title" },
    h("h1", { id: "connect-title" }, "Connect to a broker"),
    h("p", { class: "muted" }, "The console talks to your devices through the same MQTT broker they use, over WebSocket (MQTT 5)."),
    field("Broker WebSocket URL", url, "For example ws://localhost:9001 or wss://broker.example.com/mqtt"),
    field("Username", user, "Leave empty for a broker that allows anonymous clients."),
    field("Password", pass),
    h("div", { class: "check" }, remember, h("label", { for: (remember.id = "remember") }, "Remember the password in this browser")),
    h("details", { class: "advanced" }, h("summary", {}, "Advanced"), field("Topic prefix", prefix, "The devices' topic_prefix setting (default tether).")),
    h("div", { class: "actions" }, submit),
    out,
  );
  if (message) out.append(errorBox({ code: "disconnected", message }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const s = { url: url.value.trim(), username: user.value.trim(), password: pass.value, remember: remember.checked, prefix: prefix.value.trim() || "tether" };
    if (!/^wss?:\/\//.test(s.url)) {
      out.replaceChildren(errorBox({ code: "invalid_request", message: "The broker URL must start with ws:// or wss://", details: { field: "url", value: s.url } }));
      url.focus();
      return;
    }
    await connect(s, submit, out);
  });
  clear(app.main, h("div", { class: "connect-wrap" }, form));
  // not after the connection was given up on (the message says why): the user decides
  if (!message && (params.get("broker") || (saved.auto && saved.url && (!saved.username || saved.password)))) {
    connect({ ...saved, url: url.value.trim(), prefix: prefix.value.trim() || "tether", remember: Boolean(saved.remember) }, submit, out);
  } else {
    url.focus();
  }
}

async function connect(s, submit, out) {
  submit.disabled = true;
  out.replaceChildren(h("p", { class: "muted", role: "status" }, `Connecting to ${s.url}…`));
  try {
    await app.link.connect(s);
    saveSettings({ ...s, auto: true });
    if (location.search) history.replaceState(null, "", location.pathname + location.hash);
    route();
  } catch (err) {
    out.replaceChildren(errorBox({ code: "no_connection", message: err.message }));
  } finally {
    submit.disabled = false;
  }
}

// --- devices --------------------------------------------------------------------------------

function healthSummary(d) {
  const hl = d.health;
  if (!hl) return [badge("unknown", "neutral")];
  if (deviceState(d) === "offline") return [badge(`${hl.state} (last known)`, "neutral")];
  const bad = Object.entries(hl.services || {}).filter(([, s]) => s.state !== "ok");
  return [badge(hl.state), bad.length ? h("span", { class: "muted small" }, " ", bad.map(([n, s]) => `${n}: ${s.state}`).join(", ")) : null];
}

function deviceState(d) {
  return d.status?.state || "unknown";
}

function renderDevices() {
  app.current = { view: "devices" };
  setCrumbs({ text: "Devices" });
  document.title = "Devices · Tether console";
  const filter = h("input", { type: "search", name: "filter", placeholder: "Filter by name", "aria-label": "Filter devices" });
  const list = h("div", { id: "device-list" });
  const count = h("p", { class: "muted", "aria-live": "polite" });
  clear(
    app.main,
    h("div", { class: "page-head" }, h("h1", {}, "Devices"), filter),
    count,
    list,
  );
  let pending = false;
  const draw = () => {
    pending = false;
    const q = filter.value.trim().toLowerCase();
    const all = [...app.link.fleet.values()].filter((d) => d.status);
    const shown = all
      .filter((d) => !q || d.device.toLowerCase().includes(q))
      .sort((a, b) => (deviceState(a) === "online" ? 0 : 1) - (deviceState(b) === "online" ? 0 : 1) || a.device.localeCompare(b.device));
    const online = all.filter((d) => deviceState(d) === "online").length;
    count.textContent = `${all.length} device${all.length === 1 ? "" : "s"}, ${online} online`;
    clear(
      list,
      table(
        "Devices",
        ["Device", "State", "Health", "Version", "Last seen", "Services"],
        shown.map((d) => ({
          attrs: { "data-device": d.device, class: `row-${deviceState(d)}` },
          cells: [
            h("a", { href: `#/d/${encodeURIComponent(d.device)}` }, d.device),
            h("span", { class: "dev-state" }, badge(deviceState(d))),
            h("span", { class: "dev-health" }, healthSummary(d)),
            d.status?.version || "–",
            h("span", { class: "dev-seen", title: new Date((d.lastSeen || 0) * 1000).toLocaleString() }, fmtAgo(d.lastSeen)),
            d.caps ? d.caps.services.map((s) => s.name).filter((n) => n !== "agent").join(", ") : "–",
          ],
        })),
        { empty: all.length ? "No device matches the filter." : `No devices yet. A device appears here once it publishes its retained status on ${app.link.prefix}/<device>/status.` },
      ),
    );
  };
  const schedule = () => {
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  };
  filter.addEventListener("input", schedule);
  app.link.addEventListener("fleet", schedule);
  const timer = setInterval(schedule, 5000);
  app.onLeave(() => {
    app.link.removeEventListener("fleet", schedule);
    clearInterval(timer);
  });
  draw();
}

// --- router ---------------------------------------------------------------------------------

function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  const parts = hash.split("/").filter(Boolean);
  if (app.link.state === "disconnected") {
    app.leave();
    renderConnect(app.link.lastError && app.current?.view !== "connect" ? app.link.lastError : "");
    return;
  }
  if (parts[0] === "d" && parts[1] && deviceIdProblem(parts[1])) {
    // never build topics from it (a + or # in a topic makes the broker drop the connection)
    app.leave();
    app.current = { view: "bad-device" };
    setCrumbs({ text: "Devices", href: "#/" }, { text: "Invalid device" });
    document.title = "Invalid device · Tether console";
    clear(
      app.main,
      h("h1", {}, "Invalid device id"),
      errorBox({ code: "invalid_request", message: `${deviceIdProblem(parts[1])}.`, details: { field: "device", value: parts[1] } }),
      h("p", {}, h("a", { href: "#/" }, "Back to the devices")),
    );
    return;
  }
  if (parts[0] === "d" && parts[1]) {
    const tab = parts[2] || "overview";
    if (app.current?.view === "device" && app.current.device === parts[1]) {
      app.current.selectTab(tab);
      return;
    }
    app.leave();
    app.current = { view: "device", device: parts[1] };
    setCrumbs({ text: "Devices", href: "#/" }, { text: parts[1] });
    document.title = `${parts[1]} · Tether console`;
    renderDevice(app, parts[1], tab);
    return;
  }
  app.leave();
  renderDevices();
}

window.addEventListener("hashchange", route);
showConnState();
route();

