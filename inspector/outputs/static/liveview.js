// inspector live view: one card per camera, fed by /events (server-sent events); no framework, no build step.
"use strict";

const SCALE_X_THRESHOLD = 2; // the score bar runs from 0 to twice the threshold (the mark sits at the middle)
const cards = new Map();

function card(name) {
  if (!cards.has(name)) {
    const node = document.getElementById("camera-card").content.firstElementChild.cloneNode(true);
    node.dataset.camera = name;
    node.querySelector(".name").textContent = name;
    const img = node.querySelector("img.frame");
    img.dataset.loading = "";
    img.addEventListener("load", () => nextImage(node));
    img.addEventListener("error", () => nextImage(node));
    document.getElementById("cameras").appendChild(node);
    cards.set(name, node);
  }
  return cards.get(name);
}

// One image request at a time per camera: a slow network shows fewer frames, never a queue of old ones.
function nextImage(node) {
  const img = node.querySelector("img.frame");
  const wanted = node.dataset.wanted || "";
  if (wanted && wanted !== img.dataset.shown) {
    img.dataset.loading = wanted;
    img.dataset.shown = wanted;
    img.src = wanted;
  } else {
    img.dataset.loading = "";
  }
}

function text(node, selector, value) {
  node.querySelector(selector).textContent = value === null || value === undefined ? "\u2013" : value;
}

function show(cam) {
  const node = card(cam.name);
  node.querySelector(".dot").classList.toggle("up", cam.up);
  text(node, ".fps", cam.fps.toFixed(1) + " fps");
  const verdict = node.querySelector(".verdict");
  verdict.textContent = cam.verdict || "\u2013";
  verdict.className = "verdict " + (cam.verdict || "");
  const scored = cam.score !== null && cam.score !== undefined;
  text(node, ".score", scored ? cam.score.toFixed(3) + " / " + cam.threshold.toFixed(3) : null);
  const fill = node.querySelector(".scorebar .fill");
  const ratio = scored && cam.threshold > 0 ? cam.score / (cam.threshold * SCALE_X_THRESHOLD) : 0;
  fill.style.width = Math.min(100, Math.max(0, ratio * 100)).toFixed(1) + "%";
  fill.classList.toggle("over", scored && cam.score > cam.threshold);
  text(node, ".part", cam.part_id);
  text(node, ".product", cam.product);
  text(node, ".gallery", cam.gallery ? cam.gallery.slice(0, 12) : null);
  text(node, ".seq", cam.seq);
  text(node, ".captured", cam.captured_at ? cam.captured_at.replace("T", " ").slice(0, 23) : null);
  text(node, ".hour", cam.pass_last_hour + " PASS \u00b7 " + cam.review_last_hour + " REVIEW \u00b7 " +
    cam.fail_last_hour + " FAIL");
  text(node, ".error", cam.error || "");
  if (cam.image) {
    node.dataset.wanted = cam.image;
    if (!node.querySelector("img.frame").dataset.loading) nextImage(node);
  }
}

function render(state) {
  const daemon = document.getElementById("daemon");
  daemon.textContent = state.state;
  daemon.className = "state " + state.state;
  state.cameras.forEach(show);
}

function offline() {
  const daemon = document.getElementById("daemon");
  daemon.textContent = "offline (reconnecting)";
  daemon.className = "state offline";
}

fetch("/state").then((r) => r.json()).then(render).catch(offline);
const events = new EventSource("/events"); // reconnects by itself after a daemon restart
events.onmessage = (event) => render(JSON.parse(event.data));
events.onerror = offline;
