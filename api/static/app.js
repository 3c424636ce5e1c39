// The pick cell's web page: commands, the live stream, jobs, the stop button (also Escape), the candidate
// picker and the sequence editor. Plain script, no build step; talks to the API of this server only.
"use strict";

const ORDER = ["queued", "grounding", "needs_choice", "tracking", "grasping", "lifting", "placing", "succeeded"];
const jobs = new Map();
let camera = { width: 0, height: 0 };

const $ = (id) => document.getElementById(id);

function token() {
  return $("token").value.trim();
}

function say(text) {
  $("message").textContent = text;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    data = null;
  }
  if (!res.ok) {
    const msg = data && data.error ? data.error.message : res.statusText;
    throw new Error(res.status + ": " + msg);
  }
  return data;
}

// ---------------------------------------------------------------- stop
// The stop guard (GET /health's stop_port), a process of its own, halts the arm without waiting for the API's
// threads, which heavy reading keeps busy; a stop goes there first and to the API's own POST /stop if the guard
// cannot be reached.
let stopGuard = null;

async function stopThroughGuard() {
  if (!stopGuard) return null;
  try {
    const res = await fetch(stopGuard, { method: "POST" }); // no body, no custom header: no preflight round trip
    return res.ok ? await res.json() : null;
  } catch (_) {
    return null;
  }
}

async function stop() {
  try {
    const r = (await stopThroughGuard()) || (await api("POST", "/stop"));
    say("Stopped: motion halted in " + (r.halt_s * 1000).toFixed(0) + " ms; " + r.cancelled + " waiting job(s) cancelled.");
  } catch (e) {
    say("Stop request failed: " + e.message + ". Use the robot's emergency stop.");
  }
}

// ---------------------------------------------------------------- jobs
function progressOf(job) {
  const i = ORDER.indexOf(job.state);
  return i < 0 ? ORDER.length - 1 : i;
}

function renderJobs() {
  const list = $("jobs");
  const sorted = [...jobs.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1)).slice(0, 30);
  list.replaceChildren();
  for (const job of sorted) {
    const li = document.createElement("li");
    li.dataset.jobId = job.id;
    li.dataset.state = job.state;
    const title = document.createElement("div");
    const state = document.createElement("span");
    state.className = "state state-" + job.state;
    state.textContent = job.state.replace("_", " ");
    title.append(job.target ? job.target.phrase + " — " : job.command + " — ", state);
    const bar = document.createElement("progress");
    bar.max = ORDER.length - 1;
    bar.value = progressOf(job);
    bar.setAttribute("aria-label", "progress of " + job.command);
    const info = document.createElement("div");
    info.className = "hint";
    const secs = Object.values(job.timings || {}).reduce((a, b) => a + b, 0);
    const why = job.reason ? " reason: " + job.reason + (job.detail ? " (" + job.detail + ")" : "") : "";
    info.textContent = job.controller.split(":")[0] + " · " + secs.toFixed(1) + " s" + why;
    li.append(title, bar, info);
    list.append(li);
  }
  renderChooser();
}

function waitingJob() {
  for (const job of jobs.values()) if (job.state === "needs_choice") return job;
  return null;
}

function renderChooser() {
  const job = waitingJob();
  const box = $("chooser");
  const group = $("candidates");
  if (!job) {
    box.hidden = true;
    group.replaceChildren();
    return;
  }
  box.hidden = false;
  if (group.dataset.jobId === job.id && group.children.length === job.candidates.length) return;
  group.dataset.jobId = job.id;
  group.replaceChildren();
  job.candidates.forEach((c, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = "Candidate " + i + ": " + c.phrase + (c.box ? " at x " + Math.round((c.box[0] + c.box[2]) / 2) : "");
    b.addEventListener("click", () => choose(job.id, i));
    group.append(b);
  });
}

async function choose(jobId, index) {
  try {
    await api("POST", "/jobs/" + encodeURIComponent(jobId) + "/choose", { candidate: index });
    say("Candidate " + index + " chosen.");
  } catch (e) {
    say("Choice refused: " + e.message);
  }
}

function streamClick(ev) {
  const job = waitingJob();
  if (!job) return;
  const img = $("stream");
  const w = img.naturalWidth || camera.width;
  const h = img.naturalHeight || camera.height;
  const rect = img.getBoundingClientRect();
  const x = ((ev.clientX - rect.left) / rect.width) * w;
  const y = ((ev.clientY - rect.top) / rect.height) * h;
  let best = -1;
  let bestArea = Infinity;
  job.candidates.forEach((c, i) => {
    if (!c.box) return;
    const [x0, y0, x1, y1] = c.box;
    const pad = 4;
    if (x >= x0 - pad && x <= x1 + pad && y >= y0 - pad && y <= y1 + pad) {
      const area = (x1 - x0) * (y1 - y0);
      if (area < bestArea) {
        best = i;
        bestArea = area;
      }
    }
  });
  if (best < 0) say("That point is on none of the candidates; click inside a numbered box.");
  else choose(job.id, best);
}

// ---------------------------------------------------------------- status
async function refreshHealth() {
  try {
    const h = await api("GET", "/health");
    camera = { width: h.camera.width || 0, height: h.camera.height || 0 };
    stopGuard = h.stop_port ? location.protocol + "//" + location.hostname + ":" + h.stop_port + "/stop" : null;
    const r = h.robot;
    let robot = r.connected ? "connected" : "NOT CONNECTED";
    if (r.protective_stop) robot += ", PROTECTIVE STOP: " + r.message;
    if (r.emergency_stop) robot += ", EMERGENCY STOP";
    robot += r.moving ? ", moving" : ", still";
    $("status-robot").textContent = robot;
    $("status-camera").textContent = h.camera.ok ? "streaming " + h.camera.width + "×" + h.camera.height : "no image";
    const v = Object.values(h.safety.violations || {}).reduce((a, b) => a + b, 0);
    $("status-safety").textContent = h.safety.mode + " mode, TCP ≤ " + h.safety.max_tcp_speed_m_s + " m/s, " + v + " limit hits";
    $("status-models").textContent = "method: " + h.models.method + "; default controller " + h.queue.default_controller;
    $("status-grounding").textContent = h.grounding;
  } catch (e) {
    $("status-robot").textContent = "server unreachable (" + e.message + ")";
  }
}

// ---------------------------------------------------------------- events
function connectEvents() {
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(proto + location.host + "/events");
  ws.addEventListener("message", (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.kind === "snapshot") msg.data.jobs.forEach((j) => jobs.set(j.id, j));
    else if (msg.kind === "job") jobs.set(msg.data.id, msg.data);
    else if (msg.kind === "robot") refreshHealth();
    renderJobs();
  });
  ws.addEventListener("close", () => setTimeout(connectEvents, 1000));
}

// ---------------------------------------------------------------- forms
// A POST's answer can arrive after the events of the same job: never let it overwrite a newer state.
function remember(job) {
  if (!jobs.has(job.id)) jobs.set(job.id, job);
}

async function submitPick(ev) {
  ev.preventDefault();
  const command = $("command").value.trim();
  if (!command) {
    say("Type what to pick, e.g. 'pick the red cup'.");
    return;
  }
  const body = { command };
  if ($("controller").value) body.controller = $("controller").value;
  try {
    const job = await api("POST", "/pick", body);
    remember(job);
    renderJobs();
    say("Queued: " + command);
  } catch (e) {
    say("Not queued: " + e.message);
  }
}

async function submitSequence(ev) {
  ev.preventDefault();
  const body = { document: $("sequence").value };
  if ($("controller").value) body.controller = $("controller").value;
  try {
    const r = await api("POST", "/sequence", body);
    r.jobs.forEach(remember);
    renderJobs();
    say("Sequence queued: " + r.jobs.length + " pick(s).");
  } catch (e) {
    say("Sequence not queued: " + e.message);
  }
}

document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") {
    ev.preventDefault();
    stop();
  }
});

window.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("sam2grasp-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("sam2grasp-token", token()));
  $("stop").addEventListener("click", stop);
  $("pick-form").addEventListener("submit", submitPick);
  $("sequence-form").addEventListener("submit", submitSequence);
  $("stream").addEventListener("click", streamClick);
  connectEvents();
  refreshHealth();
  setInterval(refreshHealth, 2000);
});
