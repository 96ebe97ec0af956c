// Containers (the containers service): list with state and actions, logs, the run form, image
// pulls with progress, and images.

import {
  badge, button, card, cardWith, clear, errorBox, field, fmtBytes, fmtTime, h, runAction, select, spinner, splitList, table,
} from "./dom.js";

export function renderContainers(app, device, panel) {
  const list = h("div", { id: "container-list" });
  const out = h("div", { class: "form-out", "aria-live": "polite", id: "container-out" });
  const logs = h("div", { id: "container-logs" });
  const images = h("div", { id: "image-list" });
  const pullOut = h("div", { class: "form-out", "aria-live": "polite", id: "pull-out" });
  const runOut = h("div", { class: "form-out", "aria-live": "polite", id: "run-out" });
  const engine = h("div", { id: "engine" });

  clear(
    panel,
    cardWith("Containers", button("Refresh", () => load(), "btn btn-small"), engine, out, list, logs),
    h("div", { class: "grid-2" }, card("Run a container", runForm(), runOut), card("Images", pullForm(), pullOut, images)),
  );

  async function load() {
    if (!list.firstChild) list.replaceChildren(spinner("Reading containers…"));
    const r = await app.link.request(device, "containers", "ps", { all: true });
    if (!r.ok) {
      list.replaceChildren(errorBox(r.error, "containers/ps"));
      if (["service_unavailable", "engine_missing"].includes(r.error.code)) loadEngine();
      return;
    }
    const act = (action, c, trigger, args = {}) =>
      runAction(app, {
        device, service: "containers", action, args: { name: c.name, ...args }, where: out, trigger, title: `${action} ${c.name}`, timeout: action === "remove" ? 30 : 40,
        okText: (res) => (res.state ? `${c.name}: ${res.state} (${res.status})` : `${c.name}: removed`),
      }).then((rr) => rr.ok && load());
    clear(
      list,
      table(
        "Containers",
        ["Name", "Image", "State", "Status", "Ports", "Created", "Actions"],
        r.result.containers.map((c) => {
          const running = c.state === "running" || c.state === "restarting";
          return {
            attrs: { "data-container": c.name },
            cells: [
              c.name, h("span", { class: "mono small" }, c.image), h("span", { class: "ctr-state" }, badge(c.state)), c.status,
              (c.ports || []).map((p) => (p.host_port ? `${p.host_ip ? `${p.host_ip}:` : ""}${p.host_port}→${p.container_port}/${p.protocol}` : `${p.container_port}/${p.protocol}`)).join(", ") || "–",
              fmtTime(c.created),
              h(
                "div",
                { class: "row-actions" },
                running
                  ? button("Stop", (ev) => act("stop", c, ev.currentTarget), "btn btn-small", { "aria-label": `Stop ${c.name}` })
                  : button("Start", (ev) => act("start", c, ev.currentTarget), "btn btn-small", { "aria-label": `Start ${c.name}` }),
                button("Restart", (ev) => act("restart", c, ev.currentTarget), "btn btn-small", { "aria-label": `Restart ${c.name}` }),
                button("Logs", () => showLogs(c.name), "btn btn-small btn-ghost", { "aria-label": `Logs of ${c.name}` }),
                button("Remove", (ev) => confirm(`Remove container ${c.name}${running ? " (it is running and will be killed)" : ""}?`) && act("remove", c, ev.currentTarget, { force: running }), "btn btn-small btn-danger", { "aria-label": `Remove ${c.name}` }),
              ),
            ],
          };
        }),
        { empty: "No containers on this device yet. Run one below." },
      ),
    );
  }

  async function loadEngine() {
    const r = await app.link.request(device, "containers", "engine", {});
    if (!r.ok) return engine.replaceChildren(errorBox(r.error, "containers/engine"));
    const e = r.result;
    clear(
      engine,
      e.running
        ? null
        : h(
            "div",
            { class: "alert alert-warn" },
            h("strong", {}, e.installed ? "The Docker engine is not running. " : "Docker is not installed. "),
            e.reason || "",
            e.installed ? null : button("Install Docker", (ev) => runAction(app, { device, service: "containers", action: "engine/install", args: {}, where: engine, trigger: ev.currentTarget, title: "Install Docker", onJobEnd: () => load() }), "btn btn-primary"),
          ),
    );
  }

  let logsName = null;
  let following = null; // {jobId, stop}
  const unfollow = () => {
    if (!following) return;
    const f = following;
    following = null;
    f.stop();
    app.link.request(device, "containers", "jobs/cancel", { job_id: f.jobId }, { timeout: 10 });
  };
  app.onLeave(unfollow);

  async function showLogs(name) {
    unfollow();
    logsName = name;
    logs.replaceChildren(spinner(`Reading the log of ${name}…`));
    const r = await app.link.request(device, "containers", "logs", { name, tail: 200, timestamps: false });
    if (!r.ok) return logs.replaceChildren(errorBox(r.error, `logs of ${name}`));
    const pre = h("pre", { class: "logs", tabindex: "0", "aria-label": `Log of ${name}`, id: "container-log-text" }, r.result.lines.join("\n") || "");
    const status = h("span", { class: "muted small", "aria-live": "polite" });
    const follow = button("Follow", () => (following ? stopFollowing() : startFollowing()), "btn btn-small", { "aria-pressed": "false" });
    const out = h("div", { class: "form-out" });
    const stopFollowing = () => {
      unfollow();
      follow.textContent = "Follow";
      follow.setAttribute("aria-pressed", "false");
      status.textContent = "";
    };
    const startFollowing = async () => {
      follow.disabled = true;
      // the stream starts with the last lines itself, so nothing falls between two requests
      const fr = await app.link.request(device, "containers", "logs/follow", { name, tail: 200, max_seconds: 900 });
      follow.disabled = false;
      if (!fr.ok) return out.replaceChildren(errorBox(fr.error, `follow ${name}`));
      out.replaceChildren();
      pre.textContent = "";
      follow.textContent = "Stop following";
      follow.setAttribute("aria-pressed", "true");
      status.textContent = "following new lines…";
      const jobId = fr.result.job_id;
      const f = app.link.followJob(device, jobId, (ev) => {
        if (ev.lines?.length) {
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.append((pre.textContent && !pre.textContent.endsWith("\n") ? "\n" : "") + ev.lines.join("\n") + "\n");
          if (atEnd) pre.scrollTop = pre.scrollHeight;
        }
        if (["succeeded", "failed", "cancelled"].includes(ev.state)) {
          if (following?.jobId === jobId) following = null;
          follow.textContent = "Follow";
          follow.setAttribute("aria-pressed", "false");
          status.textContent = ev.state === "succeeded" ? `stopped following (${ev.result?.stopped || "ended"})` : "";
          if (ev.state === "failed") out.replaceChildren(errorBox(ev.error, `follow ${name}`));
        }
      });
      following = { jobId, stop: f.stop };
    };
    clear(
      logs,
      h("div", { class: "logs-head" }, h("h3", {}, `Log of ${name}`), status, follow, button("Refresh", () => showLogs(logsName), "btn btn-small"), button("Close", () => { unfollow(); logs.replaceChildren(); }, "btn btn-small btn-ghost")),
      r.result.truncated ? h("p", { class: "muted small" }, "Older lines were left out.") : null,
      out,
      pre,
    );
    pre.scrollTop = pre.scrollHeight;
  }

  function runForm() {
    const image = h("input", { name: "image", type: "text", spellcheck: "false", required: true, placeholder: "registry.example.com/app:1.2" });
    const name = h("input", { name: "name", type: "text", spellcheck: "false", placeholder: "my-app" });
    const command = h("input", { name: "command", type: "text", spellcheck: "false", placeholder: "optional, e.g. sh -c 'echo hi; sleep 600'" });
    const ports = h("input", { name: "ports", type: "text", spellcheck: "false", placeholder: "8080:80 127.0.0.1:9000:9000/tcp" });
    const env = h("textarea", { name: "env", rows: "3", spellcheck: "false", class: "mono", placeholder: "KEY=value (one per line)" });
    const restart = select("restart", [["no", "no"], ["always", "always"], ["unless-stopped", "unless-stopped"], ["on-failure", "on-failure"]], "unless-stopped");
    const go = h("button", { type: "submit", class: "btn btn-primary" }, "Run");
    const form = h(
      "form",
      { class: "form", "aria-label": "Run a container" },
      h("div", { class: "row" }, field("Image", image), field("Name", name)),
      field("Command", command, "Split like a shell would, without running a shell."),
      h("div", { class: "row" }, field("Ports", ports, "host:container[/proto], separated by spaces"), field("Restart policy", restart)),
      field("Environment", env),
      h("div", { class: "actions" }, go),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const envObj = {};
      for (const line of env.value.split("\n")) {
        const t = line.trim();
        if (!t) continue;
        const i = t.indexOf("=");
        if (i < 1) {
          runOut.replaceChildren(errorBox({ code: "invalid_request", message: `Environment lines are KEY=value; "${t}" is not`, details: { field: "env", value: t } }));
          return;
        }
        envObj[t.slice(0, i)] = t.slice(i + 1);
      }
      const args = { image: image.value.trim(), ports: splitList(ports.value), env: envObj, restart: restart.value };
      if (name.value.trim()) args.name = name.value.trim();
      if (command.value.trim()) args.command = command.value.trim();
      const r = await runAction(app, { device, service: "containers", action: "run", args, where: runOut, trigger: go, title: `Run ${args.image}`, timeout: 310, okText: (res) => `${res.name} is ${res.state} (${res.id.slice(0, 12)}).` });
      if (r.ok) load();
    });
    return form;
  }

  function pullForm() {
    const image = h("input", { name: "image", type: "text", spellcheck: "false", required: true, placeholder: "debian:12" });
    const go = h("button", { type: "submit", class: "btn" }, "Pull");
    const form = h("form", { class: "form inline", "aria-label": "Pull an image" }, field("Image to pull", image, "From a public or a logged-in registry"), h("div", { class: "actions" }, go));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const slot = h("div", { class: "job-slot" });
      pullOut.prepend(slot);
      runAction(app, { device, service: "containers", action: "pull", args: { image: image.value.trim() }, where: slot, trigger: go, title: `Pull ${image.value.trim()}`, onJobEnd: () => loadImages() });
    });
    return form;
  }

  async function loadImages() {
    images.replaceChildren(spinner("Reading images…"));
    const r = await app.link.request(device, "containers", "images", {});
    if (!r.ok) return images.replaceChildren(errorBox(r.error, "containers/images"));
    clear(
      images,
      table(
        "Images",
        ["Tags", "Id", "Size", "Created"],
        r.result.images.map((i) => [(i.tags || []).join(", ") || "<none>", h("span", { class: "mono small" }, i.id.replace(/^sha256:/, "").slice(0, 12)), fmtBytes(i.size), fmtTime(i.created)]),
        { empty: "No images." },
      ),
    );
  }

  load();
  loadImages();
}
