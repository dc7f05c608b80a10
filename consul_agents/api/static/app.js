// The registry at a glance: every agent the viewer's token may see, by datacenter and type, refreshed
// every few seconds. Agent data is always inserted as text (never as HTML): it comes from registrants.
"use strict";

const REFRESH_MS = 3000;
const STATUSES = ["passing", "warning", "critical", "maintenance"];
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("consul-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("consul-token", tokenInput.value);
  refresh();
});

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

// One answer per datacenter, never one datacenter's failover standing in for another's (GET /v1/census).
async function fetchCensus() {
  const headers = tokenInput.value ? { "X-Consul-Token": tokenInput.value } : {};
  const response = await fetch("/v1/census", { headers, cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function group(agents) {
  const byDc = new Map();
  for (const agent of agents) {
    const dc = agent.datacenter || "(local)";
    if (!byDc.has(dc)) byDc.set(dc, new Map());
    const byType = byDc.get(dc);
    if (!byType.has(agent.agent_type)) byType.set(agent.agent_type, []);
    byType.get(agent.agent_type).push(agent);
  }
  return byDc;
}

function row(agent) {
  const load = el("span", { class: "bar" }, el("span", { style: `width:${Math.round(agent.current_load * 100)}%` }));
  const caps = el("td", {}, ...agent.capabilities.map((c) => el("span", { class: "cap" }, c)),
    ...(agent.card_digest ? [el("span", { class: "cap a2a", title: "A2A Agent Card " + agent.card_digest },
      "A2A card " + (agent.card_version || ""))] : []));
  return el("tr", { "data-agent-id": agent.agent_id },
    el("td", { class: "id", title: agent.endpoint }, agent.agent_id),
    el("td", {}, el("span", { class: "status " + agent.status }, agent.status),
      ...(agent.draining ? [" ", el("span", { class: "status draining", title: "alive, taking no new work" }, "draining")] : [])),
    el("td", {}, load, agent.current_load.toFixed(2)),
    el("td", {}, agent.health_score.toFixed(1)),
    caps);
}

function render(agents) {
  const root = document.getElementById("agents");
  const byDc = group(agents);
  const sections = [];
  for (const dc of [...byDc.keys()].sort()) {
    const cards = [];
    for (const [type, members] of [...byDc.get(dc).entries()].sort()) {
      members.sort((a, b) => a.agent_id.localeCompare(b.agent_id));
      const head = el("tr", {}, ...["agent", "status", "load", "health", "capabilities"].map((h) => el("th", {}, h)));
      cards.push(el("div", { class: "type", "data-agent-type": type },
        el("h3", {}, type + " ", el("span", { class: "count" }, `(${members.length})`)),
        el("table", {}, el("thead", {}, head), el("tbody", {}, ...members.map(row)))));
    }
    sections.push(el("section", { class: "dc", "data-datacenter": dc }, el("h2", {}, "datacenter " + dc),
      el("div", { class: "types" }, ...cards)));
  }
  root.replaceChildren(...(sections.length ? sections : [el("div", { class: "empty" }, "No agents visible to this token.")]));
  const counts = STATUSES.map((s) => `${agents.filter((a) => a.status === s).length} ${s}`);
  const draining = agents.filter((a) => a.draining).length;
  if (draining) counts.push(`${draining} draining`);
  document.getElementById("summary").textContent = `${agents.length} agents: ${counts.join(", ")}`;
}

// When this page first saw Consul unreachable (null while it is reachable).
let outageSince = null;

async function consulHealth() {
  try {
    const response = await fetch("/health", { cache: "no-store" });
    const body = await response.json();
    return response.ok ? null : body.message || response.statusText;
  } catch (error) {
    return "the API itself does not answer (" + error.message + ")";
  }
}

// During fail-static the API answers from its last state and says how old it is (staleness, seconds):
// the outage began at least that long ago, also when this page was opened after it began.
function showOutage(problem, agents) {
  const banner = document.getElementById("outage");
  if (problem === null) {
    outageSince = null;
    banner.hidden = true;
    return;
  }
  const stale = Math.max(0, ...agents.map((a) => a.staleness || 0));
  const began = Date.now() - stale * 1000;
  outageSince = outageSince === null ? began : Math.min(outageSince, began);
  const shown = agents.length ? "The agents below are the last state known before then." : "";
  banner.textContent = `Consul is unreachable since ${new Date(outageSince).toLocaleTimeString()} (${problem}). ${shown}`;
  banner.hidden = false;
}

async function refresh() {
  const state = document.getElementById("state");
  const [health, census] = await Promise.allSettled([consulHealth(), fetchCensus()]);
  const failed = census.status === "rejected" ? census : undefined;
  const agents = failed ? [] : census.value;
  showOutage(health.value, agents);
  if (failed) {
    // Keep the agents last shown: an error is no reason to show an empty registry.
    state.className = "error";
    state.textContent = "error: " + failed.reason.message;
    state.title = failed.reason.message;
    return;
  }
  render(agents);
  state.className = "";
  state.title = "";
  state.textContent = "updated " + new Date().toLocaleTimeString();
}

refresh();
setInterval(refresh, REFRESH_MS);
