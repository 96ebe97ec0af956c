// One device: header with its state, tabs, the overview (live telemetry, system, services)
// and the raw command tab.

import { lineChart } from "./charts.js";
import {
  badge, button, card, cardWith, clear, errorBox, field, fmtAgo, fmtBytes, fmtDuration, fmtPct, fmtRate,
  h, nextId, runAction, select, spinner, table,
} from "./dom.js";
import { renderPackages } from "./packages.js";
import { renderNetwork } from "./network.js";
import { renderContainers } from "./containers.js";
import { checkCommand } from "./link.js";

const TABS = [
  { id: "overview", label: "Overview", render: renderOverview },
  { id: "packages", label: "Packages", service: "apt", render: renderPackages },
  { id: "network", label: "Network", service: "network", render: renderNetwork },
  { id: "containers", label: "Containers", service: "containers", render: renderContainers },
  { id: "command", label: "Command", render: renderCommand },
];

export function renderDevice(app, device, firstTab) {
  const info = () => app.link.fleet.get(device) || { device, status: null, health: null, caps: null, lastSeen: null };
  const head = h("div", { class: "device-head" });
  const banner = h("div", { class: "banner-slot", "aria-live": "assertive" });
  const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": `${device} sections` });
  const panels = h("div", { class: "panels" });
  clear(app.main, head, banner, tablist, panels);

  const drawHead = () => {
    const d = info();
    const state = d.status?.state || "unknown";
    clear(
      head,
      h("h1", {}, device),
      h(
        "dl",
        { class: "facts" },
        h("div", {}, h("dt", {}, "State"), h("dd", { id: "device-state" }, badge(state))),
        h("div", {}, h("dt", {}, "Health"), h("dd", { id: "device-health" }, state === "offline" && d.health ? badge(`${d.health.state} (last known)`, "neutral") : badge(d.health?.state || "unknown"))),
        h("div", {}, h("dt", {}, "Version"), h("dd", {}, d.status?.version || "–")),
        h("div", {}, h("dt", {}, "Last seen"), h("dd", {}, fmtAgo(d.lastSeen))),
      ),
    );
    if (state === "offline") {
      clear(
        banner,
        h(
          "div",
          { class: "alert alert-warn", role: "alert", id: "offline-banner" },
          h("strong", {}, `${device} is offline`),
          ` (last seen ${fmtAgo(d.lastSeen)}). Commands get no answer until it reconnects; `,
          "they expire instead of running late. Jobs that end meanwhile report when it is back.",
        ),
      );
    } else if (!d.status) {
      clear(banner, h("div", { class: "alert alert-warn", role: "alert" }, `No status from ${device} yet: it may not exist, or not have connected to this broker.`));
    } else banner.replaceChildren();
    updateTabs();
  };

  const tabs = new Map();
  for (const t of TABS) {
    const tabId = nextId("tab");
    const panelId = nextId("panel");
    const btn = h("button", { type: "button", role: "tab", id: tabId, "aria-controls": panelId, "aria-selected": "false", tabindex: "-1", "data-tab": t.id }, t.label);
    const panel = h("div", { role: "tabpanel", id: panelId, "aria-labelledby": tabId, class: "panel", hidden: true, tabindex: "0" });
    btn.addEventListener("click", () => {
      location.hash = `#/d/${encodeURIComponent(device)}/${t.id}`;
    });
    tablist.append(btn);
    panels.append(panel);
    tabs.set(t.id, { ...t, btn, panel, rendered: false });
  }
  tablist.addEventListener("keydown", (ev) => {
    const visible = [...tabs.values()].filter((t) => !t.btn.hidden);
    const i = visible.findIndex((t) => t.btn === document.activeElement);
    if (i < 0) return;
    let j = null;
    if (ev.key === "ArrowRight") j = (i + 1) % visible.length;
    else if (ev.key === "ArrowLeft") j = (i - 1 + visible.length) % visible.length;
    else if (ev.key === "Home") j = 0;
    else if (ev.key === "End") j = visible.length - 1;
    if (j === null) return;
    ev.preventDefault();
    visible[j].btn.focus();
    visible[j].btn.click();
  });

  function updateTabs() {
    const caps = info().caps;
    const names = caps ? new Set(caps.services.map((s) => s.name)) : null;
    for (const t of tabs.values()) t.btn.hidden = Boolean(t.service && names && !names.has(t.service));
  }

  function selectTab(id) {
    const t = tabs.get(id) || tabs.get("overview");
    for (const o of tabs.values()) {
      const on = o === t;
      o.btn.setAttribute("aria-selected", String(on));
      o.btn.tabIndex = on ? 0 : -1;
      o.panel.hidden = !on;
    }
    if (!t.rendered) {
      t.rendered = true;
      const caps = info().caps;
      if (t.service && caps && !caps.services.some((s) => s.name === t.service)) {
        t.panel.append(h("p", { class: "muted" }, `${device} does not run the ${t.service} service.`));
      } else {
        t.render(app, device, t.panel, info);
      }
    }
  }

  app.current.selectTab = selectTab;
  const onFleet = (ev) => {
    if (ev.detail.device === device) drawHead();
  };
  app.link.addEventListener("fleet", onFleet);
  const timer = setInterval(drawHead, 5000);
  app.onLeave(() => {
    app.link.removeEventListener("fleet", onFleet);
    clearInterval(timer);
  });
  drawHead();
  selectTab(firstTab);
}

// --- overview -------------------------------------------------------------------------------

function renderOverview(app, device, panel, info) {
  const charts = h("div", { class: "charts", id: "charts" });
  const live = card("Live", h("p", { class: "muted", id: "telemetry-wait" }, "Waiting for telemetry… (the device publishes a sample every stats.interval seconds)"), charts);
  const system = h("div", { id: "system" });
  const services = h("div", { id: "services" });
  const svcOut = h("div", { class: "form-out", "aria-live": "polite" });
  const logs = h("div", { id: "service-logs" });
  clear(
    panel,
    h("div", { class: "grid-2" }, live, cardWith("System", button("Refresh", () => loadSystem(), "btn btn-small"), system)),
    cardWith("Services", button("Refresh", () => loadServices(), "btn btn-small"), h("p", { class: "muted" }, "Each program of the bundle, as supervisord and the health topic see it. Restarting the gateway drops the link for a moment."), svcOut, services, logs),
  );

  // live telemetry
  const samples = [];
  const tiles = {
    cpu: chartTile("CPU", "chart-cpu"),
    mem: chartTile("Memory", "chart-mem"),
    disk: chartTile("Disk /", "chart-disk"),
    net: chartTile("Network", "chart-net"),
  };
  charts.append(...Object.values(tiles).map((t) => t.el));
  const stop = app.link.subscribe(`${app.link.prefix}/${device}/stats`, (_t, s) => {
    if (!s || typeof s.ts !== "number") return;
    const prev = samples.at(-1);
    if (prev && s.ts <= prev.ts) return;
    const dt = prev ? s.ts - prev.ts : 0;
    s.rx = prev && dt > 0 ? Math.max(0, (s.net_recv - prev.net_recv) / dt) : null;
    s.tx = prev && dt > 0 ? Math.max(0, (s.net_sent - prev.net_sent) / dt) : null;
    samples.push(s);
    if (samples.length > 120) samples.shift();
    document.getElementById("telemetry-wait")?.remove();
    const col = (k) => samples.map((x) => x[k]).filter((v) => v !== null && v !== undefined);
    tiles.cpu.set(fmtPct(s.cpu), `load ${s.load1}${s.temp != null ? ` · ${s.temp.toFixed(0)} °C` : ""}`, [{ values: col("cpu"), cls: "s1" }], 100);
    tiles.mem.set(fmtPct(s.mem), `swap ${fmtPct(s.swap)}`, [{ values: col("mem"), cls: "s2" }], 100);
    tiles.disk.set(fmtPct(s.disk), "root filesystem", [{ values: col("disk"), cls: "s3" }], 100);
    tiles.net.set(s.rx === null ? "–" : `↓ ${fmtRate(s.rx)}`, s.tx === null ? "" : `↑ ${fmtRate(s.tx)}`, [{ values: col("rx"), cls: "s1" }, { values: col("tx"), cls: "s4", fill: false }], null);
    charts.dataset.samples = String(samples.length);
  });
  app.onLeave(stop);

  async function loadSystem() {
    system.replaceChildren(spinner("Reading the system…"));
    const r = await app.link.request(device, "stats", "get", { per_cpu: false });
    if (!r.ok) return system.replaceChildren(errorBox(r.error, "stats/get"));
    const s = r.result;
    clear(
      system,
      h(
        "dl",
        { class: "kv" },
        kv("Hostname", s.hostname), kv("OS", s.os), kv("Kernel", `${s.kernel} (${s.arch})`),
        kv("Uptime", fmtDuration(s.uptime)), kv("CPU", `${s.cpu.count} × ${fmtPct(s.cpu.percent)}, load ${s.cpu.load.map((x) => x.toFixed(2)).join(" ")}`),
        kv("Memory", `${fmtBytes(s.memory.used)} of ${fmtBytes(s.memory.total)} (${fmtPct(s.memory.percent)})`),
      ),
      table("Filesystems", ["Mount", "Type", "Used", "Size", "Use"], s.filesystems.map((f) => [f.mountpoint, f.fstype, fmtBytes(f.used), fmtBytes(f.total), fmtPct(f.percent)])),
      table("Interfaces", ["Interface", "Link", "Addresses", "Received", "Sent"], s.interfaces.map((i) => [i.name, badge(i.up ? "up" : "down", i.up ? "good" : "neutral"), i.addresses.map((a) => a.address).join(", ") || "–", fmtBytes(i.bytes_recv), fmtBytes(i.bytes_sent)])),
    );
  }

  let lastServices = null;
  async function loadServices() {
    if (!lastServices) services.replaceChildren(spinner("Reading services…"));
    const r = await app.link.request(device, "agent", "services", {});
    if (!r.ok) return services.replaceChildren(errorBox(r.error, "agent/services"));
    lastServices = r.result;
    drawServices();
  }

  function drawServices() {
    if (!lastServices) return;
    const health = info().health?.services || {};
    clear(
      services,
      table(
        "Services",
        ["Service", "Process", "Health", "PID", "Uptime", "Restarts", "Last exit", "Actions"],
        lastServices.map((s) => {
          const hs = health[s.name];
          const hstate = hs?.state || s.health;
          return {
            attrs: { "data-service": s.name },
            cells: [
              s.name,
              badge(s.state),
              h("span", { class: "svc-health", title: hs?.reason || s.reason || "" }, badge(hstate), hs?.reason || s.reason ? h("span", { class: "muted small" }, " ", hs?.reason || s.reason) : null),
              h("span", { class: "svc-pid" }, s.pid ?? "–"),
              fmtDuration(s.uptime),
              String(hs?.restarts ?? s.restarts ?? 0),
              s.last_exit || "–",
              h(
                "div",
                { class: "row-actions" },
                button("Restart", (ev) => control("restart", s.name, ev.currentTarget), "btn btn-small", { "aria-label": `Restart ${s.name}` }),
                s.name === "gateway" ? null : s.state === "RUNNING" || s.state === "STARTING"
                  ? button("Stop", (ev) => control("stop", s.name, ev.currentTarget), "btn btn-small", { "aria-label": `Stop ${s.name}` })
                  : button("Start", (ev) => control("start", s.name, ev.currentTarget), "btn btn-small", { "aria-label": `Start ${s.name}` }),
                button("Logs", () => showLogs(s.name), "btn btn-small btn-ghost", { "aria-label": `Logs of ${s.name}` }),
              ),
            ],
          };
        }),
      ),
    );
  }

  async function control(action, name, trigger) {
    const r = await runAction(app, {
      device, service: "agent", action, args: { service: name }, where: svcOut, trigger, title: `${action} ${name}`, timeout: 40,
      okText: (res) => `${res.service}: ${res.action} done, now ${res.state}.`,
    });
    if (r.ok) {
      // the gateway answers first and then restarts: ask again once it is back
      if (name !== "gateway") await loadServices();
      setTimeout(loadServices, name === "gateway" ? 4000 : 2500);
    }
  }

  async function showLogs(name) {
    logs.replaceChildren(spinner(`Reading the log of ${name}…`));
    const r = await app.link.request(device, "agent", "logs", { service: name, tail: 200 });
    if (!r.ok) return logs.replaceChildren(errorBox(r.error, `agent/logs ${name}`));
    const pre = h("pre", { class: "logs", tabindex: "0", "aria-label": `Log of ${name}` }, r.result.lines.join("\n") || "(empty)");
    clear(logs, h("h3", {}, `Log of ${name}`, r.result.truncated ? h("span", { class: "muted small" }, " (older lines left out)") : null), pre);
    pre.scrollTop = pre.scrollHeight;
  }

  const onFleet = (ev) => {
    if (ev.detail.device === device && ev.detail.kind === "health") drawServices();
    if (ev.detail.device === device && ev.detail.kind === "status" && info().status?.state === "online" && !lastServices) {
      loadServices();
      loadSystem();
    }
  };
  app.link.addEventListener("fleet", onFleet);
  app.onLeave(() => app.link.removeEventListener("fleet", onFleet));
  loadSystem();
  loadServices();
}

function kv(k, v) {
  return h("div", {}, h("dt", {}, k), h("dd", {}, v));
}

function chartTile(title, id) {
  const value = h("div", { class: "tile-value" }, "–");
  const sub = h("div", { class: "tile-sub muted" }, "");
  const box = h("div", { class: "tile-chart" });
  const el = h("figure", { class: "tile", id }, h("figcaption", {}, title), value, sub, box);
  return {
    el,
    set(v, s, series, max) {
      value.textContent = v;
      sub.textContent = s;
      box.replaceChildren(lineChart(series, { max, label: `${title}: ${v} ${s}` }));
    },
  };
}

// --- command --------------------------------------------------------------------------------

function renderCommand(app, device, panel, info) {
  const caps = info().caps;
  const services = caps ? caps.services.map((s) => s.name) : ["agent", "stats"];
  const svc = select("service", services, "stats");
  const act = h("input", { name: "action", type: "text", list: "action-list", spellcheck: "false", value: "get" });
  const actions = h("datalist", { id: "action-list" });
  const doc = h("p", { class: "muted small", id: "action-doc" });
  const args = h("textarea", { name: "args", rows: "6", spellcheck: "false", class: "mono" }, "{}");
  const timeout = h("input", { name: "timeout", type: "number", min: "1", max: "600", value: "20" });
  const out = h("div", { class: "form-out", "aria-live": "polite", id: "command-out" });
  const result = h("div", { id: "command-result" });
  const send = h("button", { type: "submit", class: "btn btn-primary" }, "Send");
  const fill = () => {
    const s = caps?.services.find((x) => x.name === svc.value);
    clear(actions, (s?.actions || []).map((a) => h("option", { value: a.name }, a.doc || "")));
    const a = s?.actions.find((x) => x.name === act.value);
    doc.textContent = a ? `${a.doc || ""}${a.mutating ? " · changes the device" : ""}${a.job ? " · runs as a job" : ""}` : "";
  };
  svc.addEventListener("change", () => {
    act.value = "";
    fill();
  });
  act.addEventListener("input", fill);
  const form = h(
    "form",
    { class: "form", "aria-label": "Send a command" },
    h("p", { class: "muted" }, "Send any action with JSON arguments (see docs/api.md). The reply, or the error with its message, is shown below."),
    h("div", { class: "row" }, field("Service", svc), field("Action", act), field("Timeout (s)", timeout)),
    actions,
    doc,
    field("Arguments (JSON object)", args),
    h("div", { class: "actions" }, send),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(args.value.trim() || "{}");
    } catch (err) {
      out.replaceChildren(errorBox({ code: "invalid_json", message: `The arguments are not valid JSON: ${err.message}` }));
      return;
    }
    result.replaceChildren();
    // checked before anything is sent (link.request checks again for every other caller)
    const action = act.value.trim();
    const invalid = checkCommand(device, svc.value, action);
    act.removeAttribute("aria-invalid");
    svc.removeAttribute("aria-invalid");
    if (invalid) {
      const input = invalid.error.details.field === "service" ? svc : act;
      if (invalid.error.details.field !== "device") input.setAttribute("aria-invalid", "true");
      out.replaceChildren(errorBox(invalid.error, "Send"));
      input.focus();
      return;
    }
    const r = await runAction(app, { device, service: svc.value, action, args: parsed, where: out, trigger: send, timeout: Number(timeout.value) || 20 });
    if (r.ok) result.replaceChildren(h("pre", { class: "json", tabindex: "0", "aria-label": "Result" }, JSON.stringify(r.result, null, 2)));
  });
  fill();
  clear(panel, card("Send a command", form, out, result));
}
