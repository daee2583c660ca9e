// Runs the playground page's own script under Node against a live server, with just enough
// of a browser around it (elements, storage, a recording AudioContext). Prints JSON.
//   node playground_harness.js <playground.js> <base url> <action: load|speak|speak-twice|dialogue>
"use strict";
const fs = require("fs");
const vm = require("vm");

const [page, base, action] = process.argv.slice(2);
const script = fs.readFileSync(page, "utf8");

class Element {
  constructor(id) {
    Object.assign(this, {id, value: "", textContent: "", hidden: false, disabled: false, checked: false,
                         href: "", options: [], listeners: {}, children: []});
  }
  addEventListener(type, fn) { this.listeners[type] = fn; }
  add(option) { this.options.push(option); if (option.selected || this.options.length === 1) this.value = option.value; }
  set innerHTML(_) { this.options = []; }
  replaceChildren(...nodes) { this.children = nodes; this.textContent = nodes.map((n) => n.textContent).join(""); }
}
const elements = {};
// What the page's HTML sets before its script runs.
const initial = {text: {value: "Hello there. This is a playground test."}, speed: {value: "1"},
                 conversation: {checked: true}, banner: {hidden: true}, "key-form": {hidden: true}, spoken: {hidden: true},
                 download: {hidden: true}, stop: {disabled: true}};
const document = {
  getElementById(id) {
    if (!elements[id]) {
      elements[id] = Object.assign(new Element(id), initial[id] || {});
    }
    return elements[id];
  },
  createElement(tag) { return new Element(tag); },
};
const storage = () => { const m = new Map(); return {getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, String(v))}; };

const scheduled = [];  // seconds of audio handed to the AudioContext, in order
class AudioContext {
  constructor({sampleRate}) { this.sampleRate = sampleRate; this.currentTime = 0; this.destination = {}; }
  createBuffer(channels, length, rate) {
    const data = new Float32Array(length);
    return {duration: length / rate, copyToChannel: (samples) => data.set(samples), data};
  }
  createBufferSource() {
    const source = {connect() {}, start(at) { scheduled.push({at, seconds: source.buffer.duration, rms: rms(source.buffer.data)}); }};
    return source;
  }
  close() {}
}
const rms = (a) => Math.sqrt(a.reduce((s, x) => s + x * x, 0) / Math.max(1, a.length));

const requests = [];
const sandbox = {
  document, AudioContext, sessionStorage: storage(), localStorage: storage(), performance, console, JSON, Math,
  Promise, Error, DataView, setTimeout, clearTimeout, location: {origin: ""}, Uint8Array, Float32Array, ArrayBuffer, Blob, FormData, AbortController, String,
  Option: class { constructor(text, value) { Object.assign(this, {text, value, selected: false}); } },
  URL: {createObjectURL: (blob) => "blob:" + blob.size},
  fetch: async (path, init) => {
    const response = await fetch(base + path, init);
    requests.push({path, status: response.status, headers: Object.fromEntries(response.headers),
                   sent: (init && init.headers) || {}, body: init && typeof init.body === "string" ? init.body : null});
    return response;
  },
};
vm.createContext(sandbox);

(async () => {
  vm.runInContext(script, sandbox);
  const $ = (id) => document.getElementById(id);
  await sandbox.playgroundReady;
  const result = {voices: $("voice").options.map((o) => o.value), selected: $("voice").value,
                  cloneDisabled: $("clone").disabled, cloneNote: $("clone-note").textContent,
                  conversationDisabled: $("conversation").disabled, backend: $("backend").textContent,
                  banner: $("banner").hidden ? null : $("banner").textContent};
  const turns = [];
  if (action === "dialogue") {
    $("dialogue").checked = true;
    $("dialogue").listeners.change();
    $("text").value = "A: Hello there, how are you?\nB: Very well, thank you.\nAnd you?";
    result.voice2 = $("voice2").value;
    result.helpShown = !$("dialogue-help").hidden;
  }
  for (let n = 0; n < {load: 0, speak: 1, "speak-twice": 2, dialogue: 1}[action]; n++) {
    scheduled.length = 0;
    elements.speak.listeners.click();
    await settle(() => !elements.speak.disabled && elements.stats.textContent !== "Generating…");
    const last = requests.filter((r) => r.path === "/v1/audio/speech" || r.path.startsWith("/v1/text-to-dialogue")).pop();
    turns.push({stats: elements.stats.textContent, seconds: scheduled.reduce((s, b) => s + b.seconds, 0),
                blocks: scheduled.length, rms: Math.max(0, ...scheduled.map((b) => b.rms)),
                spoken: $("spoken").hidden ? null : $("spoken").textContent,
                requestId: last.headers["x-request-id"], session: last.sent["X-Session-Id"] || null, path: last.path,
                body: last.body ? JSON.parse(last.body) : null,
                download: elements.download.hidden ? null : elements.download.href});
  }
  result.turns = turns;
  console.log(JSON.stringify(result));
})().catch((err) => { console.error(err); process.exit(1); });

async function settle(done, timeoutMs = 60000) {
  const until = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > until) throw new Error("timed out waiting for the page");
    await new Promise((r) => setTimeout(r, 20));
  }
}
