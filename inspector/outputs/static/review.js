// The review page: log in, judge the oldest REVIEW or FAIL part with g / d / u, export (engineers).
"use strict";
let session = null;
let queue = [];

const $ = (id) => document.getElementById(id);
const say = (text) => { $("message").textContent = text; };

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (session) headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  const doc = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(doc.error || response.status + " " + response.statusText);
  return doc;
}

function show(loggedIn) {
  $("login").hidden = loggedIn;
  $("review").hidden = !loggedIn;
  $("who").textContent = loggedIn ? session.user + " (" + session.role + ")" : "";
  $("export").hidden = !loggedIn || session.role !== "engineer";
}

async function refresh() {
  queue = (await call("GET", "/review/api/queue")).records;
  $("count").textContent = queue.length + " part(s) to judge";
  const part = queue[0];
  $("part").hidden = !part;
  if (!part) return;
  $("part-id").textContent = part.part_id || "(no part id)";
  $("verdict").textContent = part.verdict;
  $("verdict").className = "verdict " + part.verdict;
  $("score").textContent = part.score === null ? "-" : part.score.toFixed(4);
  $("threshold").textContent = part.threshold === null ? "-" : part.threshold.toFixed(4);
  $("camera").textContent = part.camera;
  $("seq").textContent = part.seq;
  $("frame").src = part.images["frame.png"];
  $("overlay").src = part.images["overlay.jpg"];
}

async function judgeCurrent(judgment) {
  const part = queue[0];
  if (!part) return;
  try {
    await call("POST", "/review/api/judge", { id: part.id, judgment,
      defect_type: $("defect-type").value || null, note: $("note").value });
    say(part.part_id + ": " + judgment);
    $("note").value = ""; $("defect-type").value = "";
    await refresh();
  } catch (error) { say(error.message); }
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    session = await call("POST", "/review/login", { user: $("user").value, password: $("password").value });
    $("password").value = "";
    show(true); say(""); await refresh();
  } catch (error) { session = null; say(error.message); }
});

$("logout").addEventListener("click", async () => {
  try { await call("POST", "/review/logout", {}); } catch (error) { /* gone already */ }
  session = null; show(false);
});

$("export").addEventListener("click", async () => {
  try { say("exported to " + (await call("POST", "/review/api/export", {})).out); }
  catch (error) { say(error.message); }
});

document.addEventListener("keydown", (event) => {
  if (!session || ["INPUT", "TEXTAREA"].includes(event.target.tagName)) return;
  const judgment = { g: "good", d: "defect", u: "unsure" }[event.key];
  if (judgment) judgeCurrent(judgment);
});

(async () => {
  try { session = await call("GET", "/review/api/session"); show(true); await refresh(); }
  catch (error) { show(false); }
})();
