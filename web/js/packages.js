// Packages (the apt service): search and list, install/remove/upgrade as jobs with progress,
// and the repositories of sources.list.d.

import {
  badge, button, card, clear, errorBox, field, h, runAction, select, spinner, splitList, table, toolbar,
} from "./dom.js";

export function renderPackages(app, device, panel) {
  const search = h("input", { name: "search", type: "search", placeholder: "name or description" });
  const filter = select("filter", [["installed", "Installed"], ["upgradable", "Upgradable"], ["all", "All known"]], "installed");
  const list = h("div", { id: "package-list" });
  const pager = h("div", { class: "pager" });
  const jobs = h("div", { class: "jobs", id: "package-jobs", "aria-live": "polite" });
  let page = 1;

  const specs = h("input", { name: "packages", type: "text", spellcheck: "false", placeholder: "curl  htop=3.2.2-2  libfoo:arm64" });
  const installBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Install");
  const installForm = h(
    "form",
    { class: "form inline", "aria-label": "Install packages" },
    field("Packages to install", specs, "Names separated by spaces; name=version or name:arch are allowed."),
    h("div", { class: "actions" }, installBtn),
  );
  installForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    startJob("install", { packages: splitList(specs.value) }, installBtn, `Install ${specs.value.trim()}`);
  });

  const searchForm = h(
    "form",
    { class: "form row", role: "search", "aria-label": "Search packages" },
    field("Search", search),
    field("Show", filter),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn" }, "Search")),
  );
  searchForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    page = 1;
    load();
  });
  filter.addEventListener("change", () => {
    page = 1;
    load();
  });

  const repos = h("div", { id: "repo-list" });
  const repoOut = h("div", { class: "form-out", "aria-live": "polite" });

  clear(
    panel,
    card(
      "Install",
      installForm,
      toolbar(
        button("Update package lists", (ev) => startJob("update", {}, ev.currentTarget, "Update package lists")),
        button("Upgrade all", (ev) => startJob("upgrade", {}, ev.currentTarget, "Upgrade all packages")),
        button("Repair", (ev) => startJob("repair", {}, ev.currentTarget, "Repair (dpkg --configure -a)"), "btn btn-ghost"),
      ),
      jobs,
    ),
    card("Packages", searchForm, list, pager),
    card("Repositories", reposForm(), repoOut, repos),
  );

  function startJob(action, args, trigger, title) {
    const slot = h("div", { class: "job-slot" });
    jobs.prepend(slot);
    runAction(app, { device, service: "apt", action, args, where: slot, trigger, title, onJobEnd: (ev) => ev.state === "succeeded" && load() });
  }

  async function load() {
    list.replaceChildren(spinner("Reading packages…"));
    pager.replaceChildren();
    const args = { filter: filter.value, page, page_size: 50 };
    if (search.value.trim()) args.search = search.value.trim();
    const r = await app.link.request(device, "apt", "list", args, { timeout: 65 });
    if (!r.ok) return list.replaceChildren(errorBox(r.error, "apt/list"));
    const res = r.result;
    clear(
      list,
      table(
        "Packages",
        ["Package", "Status", "Installed", "Candidate", "Description", "Actions"],
        res.packages.map((p) => ({
          attrs: { "data-package": p.name },
          cells: [
            p.architecture && p.architecture !== "all" ? `${p.name}:${p.architecture}` : p.name,
            h("span", { class: "pkg-status" }, badge(p.status), p.held ? badge("held", "neutral") : null),
            p.version || "–",
            p.candidate || "–",
            h("span", { class: "summary" }, p.summary || ""),
            h(
              "div",
              { class: "row-actions" },
              p.status === "not-installed" || p.status === "config-files"
                ? button("Install", (ev) => startJob("install", { packages: [p.name] }, ev.currentTarget, `Install ${p.name}`), "btn btn-small", { "aria-label": `Install ${p.name}` })
                : null,
              p.status === "upgradable"
                ? button("Upgrade", (ev) => startJob("upgrade", { packages: [p.name] }, ev.currentTarget, `Upgrade ${p.name}`), "btn btn-small", { "aria-label": `Upgrade ${p.name}` })
                : null,
              p.status !== "not-installed"
                ? button("Remove", (ev) => {
                    if (confirm(`Remove ${p.name} from ${device}?`)) startJob("remove", { packages: [p.name] }, ev.currentTarget, `Remove ${p.name}`);
                  }, "btn btn-small btn-danger", { "aria-label": `Remove ${p.name}` })
                : null,
            ),
          ],
        })),
        { empty: "No packages match." },
      ),
    );
    clear(
      pager,
      button("Previous", () => { page--; load(); }, "btn btn-small", { disabled: res.page <= 1 }),
      h("span", { class: "muted" }, ` Page ${res.page} of ${res.pages} · ${res.total} packages `),
      button("Next", () => { page++; load(); }, "btn btn-small", { disabled: res.page >= res.pages }),
    );
  }

  function reposForm() {
    const file = h("input", { name: "file", type: "text", spellcheck: "false", placeholder: "example.sources" });
    const uri = h("input", { name: "uri", type: "text", spellcheck: "false", placeholder: "https://deb.example.com/debian" });
    const suite = h("input", { name: "suite", type: "text", spellcheck: "false", placeholder: "bookworm" });
    const comps = h("input", { name: "components", type: "text", spellcheck: "false", placeholder: "main contrib" });
    const key = h("textarea", { name: "key", rows: "3", spellcheck: "false", class: "mono", placeholder: "-----BEGIN PGP PUBLIC KEY BLOCK-----" });
    const add = h("button", { type: "submit", class: "btn" }, "Add repository");
    const form = h(
      "form",
      { class: "form", "aria-label": "Add a repository" },
      h("div", { class: "row" }, field("File", file, "In sources.list.d: name.sources or name.list"), field("URI", uri), field("Suite", suite), field("Components", comps)),
      h("details", {}, h("summary", {}, "Signing key (optional)"), field("ASCII-armored public key", key)),
      h("div", { class: "actions" }, add),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const args = { file: file.value.trim(), uris: splitList(uri.value), suites: splitList(suite.value), components: splitList(comps.value) };
      if (key.value.trim()) args.key = key.value.trim();
      const r = await runAction(app, { device, service: "apt", action: "repos/add", args, where: repoOut, trigger: add, title: "Add repository", okText: (res) => `Added entry ${res.index} to ${res.file}. Run "Update package lists" to use it.` });
      if (r.ok) loadRepos();
    });
    return h("details", { class: "add-repo" }, h("summary", {}, "Add a repository"), form);
  }

  async function loadRepos() {
    repos.replaceChildren(spinner("Reading repositories…"));
    const r = await app.link.request(device, "apt", "repos/list", {});
    if (!r.ok) return repos.replaceChildren(errorBox(r.error, "apt/repos/list"));
    const { repos: items, errors } = r.result;
    clear(
      repos,
      table(
        "Repositories",
        ["File", "Entry", "Enabled", "Types", "URIs", "Suites", "Components", ""],
        items.map((e) => ({
          attrs: { "data-repo": `${e.file}#${e.index}` },
          cells: [
            e.file, String(e.index), badge(e.enabled ? "yes" : "no", e.enabled ? "good" : "neutral"), (e.types || []).join(" "),
            h("span", { class: "mono small" }, (e.uris || []).join(" ")), (e.suites || []).join(" "), (e.components || []).join(" ") || "–",
            e.readonly ? h("span", { class: "muted small" }, "read-only") : button("Remove", async (ev) => {
              if (!confirm(`Remove entry ${e.index} of ${e.file}?`)) return;
              const rr = await runAction(app, { device, service: "apt", action: "repos/remove", args: { file: e.file, index: e.index }, where: repoOut, trigger: ev.currentTarget, title: `Remove ${e.file} entry ${e.index}`, okText: "Removed." });
              if (rr.ok) loadRepos();
            }, "btn btn-small btn-danger", { "aria-label": `Remove ${e.file} entry ${e.index}` }),
          ],
        })),
        { empty: "No repositories configured." },
      ),
      Object.entries(errors || {}).map(([f, why]) => errorBox({ code: "unreadable", message: `${f}: ${why}` })),
    );
  }

  load();
  loadRepos();
}
