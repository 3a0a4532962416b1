// The digitrec page: a drawing pad read live as you write, and pictures read by upload or drag-and-drop.
// Everything goes through the same HTTP API that programs use (POST /api/read); nothing is read here.
"use strict";

const PEN = 0.06;          // pen width, as a fraction of the pad's height: a thick felt tip
const LIVE_MS = 250;       // while a stroke is drawn, ask for a reading at most this often
const MAX_RATIO = 2;       // pad pixels per CSS pixel at most: sharp on phones, small uploads

const settings = { maxUploadBytes: 10_000_000, lowConfidence: 0.7, learning: false };
const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(p) {
  return p < 0.001 ? "<0.1%" : `${(100 * p).toFixed(1)}%`;
}

function megabytes(n) {
  return `${+(n / 1e6).toFixed(1)} MB`;
}

// ---------------------------------------------------------------------------------------------------
// Talking to the server

async function postPicture(blob, name, annotate) {
  const form = new FormData();
  form.append("file", blob, name);
  let response;
  try {
    response = await fetch(`/api/read?top_k=3&inputs=true${annotate ? "&annotate=true" : ""}`, { method: "POST", body: form });
  } catch {
    throw new Error("Cannot reach the server. Is `digitrec serve` still running?");
  }
  return answer(response);
}

async function postJSON(url, payload) {
  let response;
  try {
    response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
  } catch {
    throw new Error("Cannot reach the server. Is `digitrec serve` still running?");
  }
  return answer(response);
}

async function answer(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: the status line says enough */ }
  if (!response.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) && detail.length ? detail[0].msg
      : `the server answered ${response.status} ${response.statusText}`;
    throw new Error(text.charAt(0).toUpperCase() + text.slice(1));
  }
  return body;
}

async function loadSettings() {
  try {
    const response = await fetch("/api/model");
    if (!response.ok) return;
    const model = await response.json();
    settings.maxUploadBytes = model.limits.max_upload_bytes;
    settings.lowConfidence = model.low_confidence;
    settings.learning = model.learning;
    $("size-limit").textContent = `up to ${megabytes(settings.maxUploadBytes)}`;
    const accuracy = model.test_accuracy == null ? "" : ` · ${(100 * model.test_accuracy).toFixed(2)}% on MNIST's test digits`;
    $("model-info").textContent = `model ${model.model || model.name}${accuracy} · digitrec ${model.version}`;
  } catch { /* the page works with the defaults */ }
}

// ---------------------------------------------------------------------------------------------------
// Showing a reading: the number, and a card per digit with its three likeliest labels

function isUnsure(digit) {
  return digit.confidence < settings.lowConfidence;
}

function digitCard(digit) {
  const card = el("li", isUnsure(digit) ? "digit unsure" : "digit");
  card.tabIndex = 0;
  card.setAttribute("role", "button");
  const others = digit.top.slice(1).map(([label, p]) => `${label} ${percent(p)}`).join(", ");
  card.setAttribute("aria-label", `${digit.label}, ${percent(digit.confidence)} sure; then ${others}`);
  card.append(el("span", "big", String(digit.label)));
  const bars = el("div", "bars");
  for (const [label, p] of digit.top) {
    const bar = el("div", "bar");
    const track = el("span", "track");
    const fill = el("span", "fill");
    fill.style.width = `${Math.max(1, 100 * p)}%`;
    track.append(fill);
    bar.append(el("span", "", String(label)), track, el("span", "pct", percent(p)));
    bars.append(bar);
  }
  card.append(bars);
  return card;
}

function showReading(prefix, reading, extra = {}) {
  const text = $(`${prefix}-text`);
  const status = $(`${prefix}-status`);
  text.textContent = reading.text;
  Object.assign(text.dataset, { state: "done", ...extra });
  status.classList.remove("error");
  const unsure = reading.digits.filter(isUnsure).length;
  const notes = (reading.notes || []).join("; ");
  status.textContent = !reading.digits.length ? "No digits found. Write larger, or with darker ink."
    : (unsure ? `${unsure} uncertain ${unsure === 1 ? "digit" : "digits"}, shown in orange.`
      : `${reading.digits.length} ${reading.digits.length === 1 ? "digit" : "digits"}.`) + (notes ? ` Note: ${notes}.` : "");
  const cards = reading.digits.map(digitCard);
  cards.forEach((card, i) => {
    card.addEventListener("click", () => select(prefix, i));
    card.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); select(prefix, i); } });
  });
  $(`${prefix}-digits`).replaceChildren(...cards);
  const chosen = selected[prefix];
  selected[prefix] = null;
  if (chosen && reading.digits[chosen.index]) select(prefix, chosen.index, reading);
  else $(`${prefix}-inspect`).hidden = true;
  readings[prefix] = reading;
}

// ---------------------------------------------------------------------------------------------------
// A digit selected: what the model saw (its 28x28 input and a saliency map), and keys to correct it

const readings = { draw: null, upload: null };
const selected = { draw: null, upload: null };   // { index, digit }

function select(prefix, index, reading = readings[prefix]) {
  const digit = reading && reading.digits[index];
  if (!digit || !digit.input) return;
  selected[prefix] = { index, digit };
  $(`${prefix}-digits`).querySelectorAll(".digit").forEach((card, i) => card.classList.toggle("selected", i === index));
  const box = $(`${prefix}-inspect`);
  box.hidden = false;
  paintDigit(box.querySelector(".seen-input"), digit.input, null);
  const saliency = box.querySelector(".seen-saliency");
  paintDigit(saliency, digit.input, null);
  postJSON("/api/explain", { image: digit.input }).then((answer) => {
    if (selected[prefix] && selected[prefix].digit === digit) paintDigit(saliency, digit.input, answer.saliency);
  }).catch(() => { /* the input alone still shows */ });
  const fix = box.querySelector(".fix");
  fix.hidden = !settings.learning;
  const status = box.querySelector(".fix-status");
  status.textContent = settings.learning ? `Read as ${digit.label}. Wrong? Pick the right digit; right? Pick ${digit.label} to confirm.`
    : "This server does not learn from corrections (start it with digitrec serve --learn).";
  const keys = box.querySelector(".keys");
  keys.replaceChildren(...Array.from({ length: 10 }, (_, d) => {
    const key = el("button", d === digit.label ? "read" : "", String(d));
    key.type = "button";
    key.dataset.digit = String(d);
    key.addEventListener("click", () => correct(prefix, digit, d, status));
    return key;
  }));
}

// The 28x28 digit in grey, and where `heat` (28x28 in [0, 1]) is given, the strokes that decided in red.
function paintDigit(canvas, input, heat) {
  const g = canvas.getContext("2d");
  const image = g.createImageData(28, 28);
  for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) {
    const v = input[r][c], h = heat ? Math.sqrt(heat[r][c]) : 0, k = 4 * (28 * r + c);
    image.data[k] = v * (1 - 0.7 * h) + 255 * 0.7 * h;
    image.data[k + 1] = v * (1 - 0.7 * h) + (200 * (1 - h) + 55 * h) * 0.7 * h;
    image.data[k + 2] = v * (1 - 0.7 * h) + 40 * (1 - h) * 0.7 * h;
    image.data[k + 3] = 255;
  }
  g.putImageData(image, 0, 0);
}

async function correct(prefix, digit, label, status) {
  status.classList.remove("error");
  try {
    const stored = await postJSON("/api/samples", { digit: digit.input, label, predicted: digit.label });
    status.textContent = (label === digit.label ? `Stored ${label} as read right.` : `Stored as ${label} (read as ${digit.label}).`)
      + ` ${stored.total} ${stored.total === 1 ? "sample" : "samples"} to learn from: digitrec learn fit.`;
    status.dataset.stored = String(stored.total);
  } catch (error) {
    status.textContent = error.message;
    status.classList.add("error");
  }
}

// A message in place of a reading: state "error" (shown as a problem) or "empty" (a hint).
function showMessage(prefix, message, state) {
  const text = $(`${prefix}-text`);
  text.textContent = "";
  text.dataset.state = state;
  const status = $(`${prefix}-status`);
  status.textContent = message;
  status.classList.toggle("error", state === "error");
  $(`${prefix}-digits`).replaceChildren();
  $(`${prefix}-inspect`).hidden = true;
  selected[prefix] = null;
  readings[prefix] = null;
}

// ---------------------------------------------------------------------------------------------------
// The drawing pad

const pad = $("pad");
const overlay = $("overlay");
const ink = pad.getContext("2d");
const marks = overlay.getContext("2d");
const strokes = [];        // each a list of [x, y] in CSS pixels of the pad
let current = null;        // the stroke being drawn: { id, points }
let shown = null;          // the reading on the pad now, with the pad width it was read at
let generation = 0;        // bumped when the drawing changes under a reading in flight
let inFlight = false, again = false, lastAsked = 0, liveTimer = 0;
let fitted = null;         // the pad's CSS size when last fitted

function padSize() {
  return { w: pad.clientWidth, h: pad.clientHeight };
}

function fitPad() {
  const ratio = Math.min(window.devicePixelRatio || 1, MAX_RATIO);
  const { w, h } = padSize();
  const width = Math.round(w * ratio), height = Math.round(h * ratio);
  if (!width || !height || (pad.width === width && pad.height === height)) return;
  // A turned phone: scale the writing with the pad, so that it stays where it was and whole.
  const k = fitted ? Math.min(w / fitted.w, h / fitted.h) : 1;
  if (k !== 1) for (const stroke of strokes) for (const point of stroke) { point[0] *= k; point[1] *= k; }
  fitted = { w, h };
  pad.width = overlay.width = width;
  pad.height = overlay.height = height;
  paint();
  if (strokes.length) askSoon(0); else clearMarks();
}

function paint() {
  const ratio = pad.width / padSize().w;
  ink.setTransform(1, 0, 0, 1, 0, 0);
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  ink.setTransform(ratio, 0, 0, ratio, 0, 0);
  ink.strokeStyle = ink.fillStyle = "#1c2333";
  ink.lineWidth = PEN * padSize().h;
  ink.lineCap = ink.lineJoin = "round";
  for (const points of strokes) {
    ink.beginPath();
    ink.moveTo(points[0][0], points[0][1]);
    if (points.length === 1) ink.lineTo(points[0][0] + 0.01, points[0][1]);  // a dot
    for (let i = 1; i < points.length - 1; i++) {   // smooth: curves through the midpoints
      const [x, y] = points[i], [nx, ny] = points[i + 1];
      ink.quadraticCurveTo(x, y, (x + nx) / 2, (y + ny) / 2);
    }
    if (points.length > 1) ink.lineTo(...points[points.length - 1]);
    ink.stroke();
  }
  $("pad-box").classList.toggle("inked", strokes.length > 0);
  $("undo").disabled = $("clear").disabled = strokes.length === 0;
}

function clearMarks() {
  marks.clearRect(0, 0, overlay.width, overlay.height);
}

function drawMarks() {
  clearMarks();
  if (!shown) return;
  const k = overlay.width / shown.width;
  const ratio = overlay.width / padSize().w;
  const size = Math.round(13 * ratio);
  marks.font = `600 ${size}px system-ui, sans-serif`;
  marks.lineWidth = 2 * ratio;
  for (const digit of shown.reading.digits) {
    const [x, y, w, h] = digit.box.map((v) => v * k);
    const colour = isUnsure(digit) ? "#ea8a00" : "#16a34a";
    const pad4 = 4 * ratio;
    marks.strokeStyle = colour;
    marks.beginPath();
    marks.roundRect(x - pad4, y - pad4, w + 2 * pad4, h + 2 * pad4, 6 * ratio);
    marks.stroke();
    const label = `${digit.label}  ${Math.round(100 * digit.confidence)}%`;
    const tw = marks.measureText(label).width + 10 * ratio, th = size + 8 * ratio;
    const ty = y - pad4 - th - 2 * ratio >= 0 ? y - pad4 - th - 2 * ratio : Math.min(y + h + pad4 + 2 * ratio, overlay.height - th);
    marks.fillStyle = colour;
    marks.beginPath();
    marks.roundRect(x - pad4, ty, tw, th, 5 * ratio);
    marks.fill();
    marks.fillStyle = "#fff";
    marks.textBaseline = "middle";
    marks.fillText(label, x - pad4 + 5 * ratio, ty + th / 2 + ratio);
  }
}

// Readings: at most one request in flight; a change meanwhile asks again once it is back.
async function askNow() {
  if (inFlight) { again = true; return; }
  if (!strokes.length) return;
  inFlight = true;
  again = false;
  lastAsked = performance.now();
  const asked = generation;
  const drawn = current ? "partial" : String(strokes.length);
  const width = pad.width;
  $("draw-text").dataset.state = "busy";
  try {
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const reading = await postPicture(blob, "drawing.png", false);
    if (asked === generation) {
      shown = { reading, width };
      showReading("draw", reading, { strokes: drawn });
      drawMarks();
    }
  } catch (error) {
    if (asked === generation) { shown = null; clearMarks(); showMessage("draw", error.message, "error"); }
  } finally {
    inFlight = false;
    if (again && strokes.length) askNow();
  }
}

function askSoon(delay) {
  clearTimeout(liveTimer);
  liveTimer = setTimeout(() => { liveTimer = 0; askNow(); }, delay);
}

function drawingChanged() {
  generation++;
  paint();
  if (strokes.length) {
    askNow();
  } else {
    shown = null;
    clearMarks();
    showMessage("draw", "Several digits side by side, or on two lines, are fine.", "empty");
  }
}

function pointOf(event) {
  const r = pad.getBoundingClientRect();
  return [event.clientX - r.left, event.clientY - r.top];
}

pad.addEventListener("pointerdown", (event) => {
  if (current || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  current = { id: event.pointerId, points: [pointOf(event)] };
  strokes.push(current.points);
  paint();
});

pad.addEventListener("pointermove", (event) => {
  if (!current || event.pointerId !== current.id) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) current.points.push(pointOf(e));
  paint();
  if (!liveTimer) askSoon(Math.max(0, LIVE_MS - (performance.now() - lastAsked)));
});

function endStroke(event) {
  if (!current || event.pointerId !== current.id) return;
  current = null;
  clearTimeout(liveTimer);
  liveTimer = 0;
  drawingChanged();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function undo() {
  if (current || !strokes.length) return;
  strokes.pop();
  drawingChanged();
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", () => {
  if (current) return;
  strokes.length = 0;
  drawingChanged();
});
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z" && !event.shiftKey) {
    event.preventDefault();
    undo();
  }
});
new ResizeObserver(fitPad).observe(pad);

// ---------------------------------------------------------------------------------------------------
// Pictures: the file picker or a file dropped on the card

const input = $("file");
const drop = $("drop");
const figure = $("figure");
const picture = $("annotated");
let uploads = 0;           // only the latest picture's answer is shown

async function readPicture(file) {
  if (!file) return;
  if (file.size > settings.maxUploadBytes) {
    showMessage("upload", `${file.name} is ${megabytes(file.size)}; pictures up to ${megabytes(settings.maxUploadBytes)} can be read.`, "error");
    return;
  }
  const mine = ++uploads;
  const preview = URL.createObjectURL(file);
  picture.src = preview;
  figure.hidden = false;
  figure.classList.add("busy");
  drop.hidden = true;
  $("upload-text").dataset.state = "busy";
  $("upload-status").classList.remove("error");
  $("upload-status").textContent = `Reading ${file.name}…`;
  try {
    const reading = await postPicture(file, file.name, true);
    if (mine !== uploads) return;
    picture.src = reading.annotated;
    showReading("upload", reading);
  } catch (error) {
    if (mine !== uploads) return;
    figure.hidden = true;
    drop.hidden = false;
    showMessage("upload", `${file.name}: ${error.message}`, "error");
  } finally {
    if (mine === uploads) figure.classList.remove("busy");
    URL.revokeObjectURL(preview);
  }
}

input.addEventListener("change", () => {
  readPicture(input.files[0]);
  input.value = "";   // choosing the same file again reads it again
});
$("another").addEventListener("click", () => input.click());

const uploadCard = $("upload");
uploadCard.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
uploadCard.addEventListener("dragleave", (event) => {
  if (!uploadCard.contains(event.relatedTarget)) drop.classList.remove("over");
});
uploadCard.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  readPicture(event.dataTransfer.files[0]);
});
// A file dropped beside the card must not replace the page with the picture.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

loadSettings();
