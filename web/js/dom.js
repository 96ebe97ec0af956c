// Small DOM helpers and the widgets every view shares: badges, tables, error boxes, job
// panels. Text from devices is only ever set as text (never parsed as HTML).

import { isFinal } from "./link.js";

/** h("button", {class: "btn", onclick: f}, "text", child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "value") el.value = v;
    else if (k === "checked" || k === "disabled" || k === "selected" || k === "hidden")
      el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let uid = 0;
export const nextId = (p = "f") => `${p}-${++uid}`;

// --- formatting -----------------------------------------------------------------------------

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

export function fmtRate(bps) {
  return `${fmtBytes(bps)}/s`;
}

export function fmtPct(v) {
  return v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} %`;
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${s % 60} s`;
  return `${s} s`;
}

export function fmtAgo(ts) {
  if (!ts) return "never";
  const s = Date.now() / 1000 - ts;
  if (s < 5) return "just now";
  return `${fmtDuration(s)} ago`;
}

export function fmtTime(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "–";
}

// --- widgets --------------------------------------------------------------------------------

const TONES = {
  ok: "good", online: "good", running: "good", activated: "good", succeeded: "good",
  installed: "good", committed: "good", RUNNING: "good", connected_global: "good", full: "good",
  degraded: "warn", starting: "warn", stopping: "warn", silent: "warn", upgradable: "warn",
  queued: "warn", restarting: "warn", paused: "warn", pending: "warn", STARTING: "warn",
  BACKOFF: "warn", limited: "warn",
  offline: "bad", down: "bad", failed: "bad", dead: "bad", exited: "bad", FATAL: "bad",
  rolled_back: "bad", cancelled: "bad", unavailable: "bad", STOPPED: "bad", EXITED: "bad",
};

export function badge(text, tone) {
  const t = tone || TONES[text] || "neutral";
  return h("span", { class: `badge badge-${t}` }, text ?? "–");
}

/** A table with a caption (for screen readers), headers and rows of cells (nodes or text). */
export function table(caption, headers, rows, { empty = "Nothing to show." } = {}) {
  const wrap = h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption });
  if (!rows.length) {
    wrap.append(h("p", { class: "muted empty" }, empty));
    return wrap;
  }
  wrap.append(
    h(
      "table",
      {},
      h("caption", { class: "sr-only" }, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h(
        "tbody",
        {},
        rows.map((r) =>
          h("tr", r.attrs || {}, (r.cells || r).map((c, i) => h(i === 0 ? "th" : "td", i === 0 ? { scope: "row" } : {}, c))),
        ),
      ),
    ),
  );
  return wrap;
}

/** The visible form of an error reply: code, message, and the details for the curious. */
export function errorBox(error, what = "") {
  const code = error?.code || "error";
  const box = h(
    "div",
    { class: "alert alert-error", role: "alert" },
    h("strong", {}, what ? `${what} failed` : code === "no_answer" ? "No answer" : "Error"),
    " ",
    h("code", { class: "code" }, code),
    h("p", { class: "alert-msg" }, error?.message || "Unknown error"),
  );
  if (error?.details !== null && error?.details !== undefined) {
    box.append(
      h("details", {}, h("summary", {}, "Details"), h("pre", { class: "json" }, JSON.stringify(error.details, null, 2))),
    );
  }
  return box;
}

export function okBox(text) {
  return h("div", { class: "alert alert-ok", role: "status" }, text);
}

export function spinner(text = "Working…") {
  return h("div", { class: "working", role: "status" }, h("span", { class: "spin", "aria-hidden": "true" }), text);
}

/** A progress bar; `set(pct)` with null shows an indeterminate bar. */
export function progressBar(label) {
  const fill = h("div", { class: "bar-fill" });
  const bar = h(
    "div",
    { class: "bar indeterminate", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" },
    fill,
  );
  bar.set = (pct) => {
    if (pct === null || pct === undefined) {
      bar.classList.add("indeterminate");
      bar.removeAttribute("aria-valuenow");
      return;
    }
    const v = Math.max(0, Math.min(100, pct));
    bar.classList.remove("indeterminate");
    fill.style.width = `${v}%`;
    bar.setAttribute("aria-valuenow", v.toFixed(0));
    bar.setAttribute("aria-valuetext", `${v.toFixed(0)} %`);
  };
  return bar;
}

/**
 * A panel following one job: state, progress bar, message, output and the final result or
 * error. `onEnd(finalEvent)` runs when the job ends.
 */
export function jobPanel(app, device, service, title, ref, onEnd) {
  const state = h("span", {}, badge(ref.state || "queued"));
  const bar = progressBar(`${title} progress`);
  const pct = h("span", { class: "pct" }, "");
  const msg = h("p", { class: "job-msg muted", "aria-live": "polite" }, "Waiting for the device…");
  const out = h("pre", { class: "job-out", tabindex: "0", "aria-label": `${title} output` });
  const result = h("div", { class: "job-result" });
  const cancel = h("button", { class: "btn btn-small", type: "button" }, "Cancel");
  const details = h("details", { class: "job-details", open: true, hidden: true }, h("summary", {}, "Output"), out);
  const panel = h(
    "section",
    { class: "job", "data-job": ref.job_id, "aria-label": `Job ${title}` },
    h("div", { class: "job-head" }, h("strong", {}, title), state, pct, cancel),
    bar,
    msg,
    details,
    result,
  );
  let lines = 0;
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    const r = await app.link.request(device, service, "jobs/cancel", { job_id: ref.job_id });
    if (!r.ok) result.replaceChildren(errorBox(r.error, "Cancel"));
  });
  const follower = app.link.followJob(device, ref.job_id, (ev) => {
    state.replaceChildren(badge(ev.state));
    if (typeof ev.progress === "number") {
      bar.set(ev.progress);
      pct.textContent = `${Math.round(ev.progress)} %`;
    } else if (!isFinal(ev.state)) bar.set(null);
    if (ev.message) msg.textContent = ev.message;
    else if (ev.state === "running" && msg.textContent.startsWith("Waiting")) msg.textContent = "Running…";
    if (ev.lines?.length) {
      details.hidden = false;
      const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.append(ev.lines.join("\n") + "\n");
      lines += ev.lines.length;
      if (lines > 4000) out.textContent = out.textContent.split("\n").slice(-3000).join("\n");
      if (atEnd) out.scrollTop = out.scrollHeight;
    }
    if (isFinal(ev.state)) {
      cancel.hidden = true;
      panel.classList.add(`job-${ev.state}`);
      if (ev.state === "succeeded") {
        bar.set(100);
        pct.textContent = "100 %";
        msg.textContent = "Done.";
        details.open = false; // the output stays one click away; failures keep it open
      } else {
        bar.classList.remove("indeterminate");
        result.replaceChildren(errorBox(ev.error || { code: ev.state, message: `The job was ${ev.state}` }, title));
      }
      onEnd?.(ev);
    }
  });
  panel.stop = follower.stop;
  app.onLeave(follower.stop);
  return panel;
}

/**
 * Run an action from a button or form: disables `trigger` while waiting, shows the outcome in
 * `where` (error box, or a job panel for job actions). Resolves with the reply.
 */
export async function runAction(app, { device, service, action, args, where, trigger, title, timeout, onResult, onJobEnd, okText }) {
  const label = title || `${service}/${action}`;
  if (trigger) trigger.disabled = true;
  const wait = spinner(`${label}: waiting for the device…`);
  where?.replaceChildren(wait);
  let r;
  try {
    r = await app.link.request(device, service, action, args, { timeout: timeout || 20 });
  } finally {
    if (trigger) trigger.disabled = false;
    wait.remove();
  }
  if (!r.ok) {
    where?.replaceChildren(errorBox(r.error, label));
    return r;
  }
  const res = r.result;
  if (res && typeof res === "object" && typeof res.job_id === "string" && "state" in res) {
    where?.replaceChildren(jobPanel(app, device, service, label, res, onJobEnd));
  } else if (okText) {
    where?.replaceChildren(okBox(typeof okText === "function" ? okText(res) : okText));
  }
  onResult?.(res);
  return r;
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || nextId();
  input.id = id;
  const hintEl = hint ? h("small", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hintEl);
}

export function select(name, options, value) {
  return h(
    "select",
    { name },
    options.map((o) => {
      const [v, t] = Array.isArray(o) ? o : [o, o];
      return h("option", { value: v, selected: v === value }, t);
    }),
  );
}

export function card(title, ...children) {
  const id = nextId("card");
  return h("section", { class: "card", "aria-labelledby": id }, h("div", { class: "card-head" }, h("h2", { id, class: "card-title" }, title)), children);
}

/** A card with buttons at the right of its title. */
export function cardWith(title, actions, ...children) {
  const c = card(title, ...children);
  c.firstChild.append(h("div", { class: "card-actions" }, actions));
  return c;
}

export function toolbar(...children) {
  return h("div", { class: "toolbar" }, children);
}

export function button(text, onclick, cls = "btn", attrs = {}) {
  return h("button", { type: "button", class: cls, onclick, ...attrs }, text);
}

export const splitList = (s) =>
  String(s || "")
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);
