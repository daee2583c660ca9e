"use strict";
const SAMPLE_RATE = 24000;
const $ = (id) => document.getElementById(id);
// Absolute URLs from the origin: a page opened as http://user:key@host/ may not fetch
// relative URLs (they would carry its credentials); the key form covers that case.
const api = (path) => location.origin + path;
const session = () => sessionStorage.getItem("sesame-session") || newSession();
let playback = null;  // {controller, context, timer}
let apiKey = "";  // typed into the key form when the server asked for one; never stored

function newSession() {
  const id = "playground-" + Math.random().toString(36).slice(2, 12);
  sessionStorage.setItem("sesame-session", id);
  return id;
}

// With API_KEY set, the browser usually asked for it when it loaded this page (HTTP Basic)
// and sends it along; where it does not (a 401), the key form asks, and the key stays in
// this page's memory only.
function headers(extra) {
  const all = Object.assign({}, extra || {});
  if (apiKey) all["Authorization"] = "Bearer " + apiKey;
  return all;
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("stats").textContent = message;
}

async function errorText(response) {
  try {
    const body = await response.json();
    const e = body.error || body.detail;
    return (e && (e.message || (e[0] && e[0].msg))) || response.statusText;
  } catch (_) { return response.statusText; }
}

async function loadVoices() {
  const [voices, health] = await Promise.all([
    fetch(api("/v1/audio/voices"), {headers: headers()}),
    fetch(api("/health")).then((r) => r.json()).catch(() => ({})),
  ]);
  showBackend(health);
  if (voices.status === 401) { askForKey("This server wants its API key: enter it above."); return; }
  if (!voices.ok) { $("stats").textContent = "Voices: " + await errorText(voices); return; }
  $("key-form").hidden = true;
  if ($("stats").textContent.startsWith("This server wants") || $("stats").textContent.startsWith("Voices:")) {
    $("stats").textContent = "";
  }
  const list = (await voices.json()).voices.filter((v) => !v.name.includes("→"));  // OpenAI names are aliases
  for (const [id, pick] of [["voice", (i, v) => v.id === health.default_voice], ["voice2", (i) => i === 1]]) {
    const select = $(id);
    select.innerHTML = "";
    list.forEach((v, i) => {
      const option = new Option(v.name + " (" + v.id + ")", v.id);
      option.selected = pick(i, v);
      select.add(option);
    });
  }
}

// What this backend can and cannot do, said on the page rather than hidden.
function showBackend(health) {
  const model = health.model || {};
  $("backend").textContent = (health.backend || "unknown") + " backend";
  if (model.warning) { $("banner").textContent = model.warning; $("banner").hidden = false; }
  const remembers = !!(health.context && health.context.enabled);
  $("conversation").disabled = !remembers;
  $("conversation").checked = remembers && $("conversation").checked;
  $("conversation-note").hidden = remembers;
  $("conversation-note").textContent = remembers ? "" :
    "Conversation memory needs the CSM backend: the " + (health.backend || "running") + " voice speaks each request on its own.";
  const clones = health.backend === "csm";
  $("clone").disabled = !clones;
  $("clone-note").textContent = clones ? "10–20 s of one person speaking clearly works best (1–30 s accepted). " +
    "The transcript is optional; it helps." : "Voice cloning needs the CSM backend (Apple Silicon); this server runs " +
    (health.backend || "another") + ".";
}

// s16le bytes -> Float32 samples; a chunk may end in the middle of a sample.
function pcmDecoder() {
  let carry = new Uint8Array(0);
  return (chunk) => {
    const bytes = new Uint8Array(carry.length + chunk.length);
    bytes.set(carry); bytes.set(chunk, carry.length);
    const whole = bytes.length - (bytes.length % 2);
    carry = bytes.slice(whole);
    const view = new DataView(bytes.buffer, 0, whole);
    const out = new Float32Array(whole / 2);
    for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 32768;
    return out;
  };
}

function wavBlob(chunks, rate) {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const buffer = new ArrayBuffer(44 + 2 * length), v = new DataView(buffer);
  const text = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  text(0, "RIFF"); v.setUint32(4, 36 + 2 * length, true); text(8, "WAVEfmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, 2 * rate, true); v.setUint16(32, 2, true);
  v.setUint16(34, 16, true); text(36, "data"); v.setUint32(40, 2 * length, true);
  let o = 44;
  for (const c of chunks) for (const s of c) { v.setInt16(o, Math.max(-1, Math.min(1, s)) * 32767, true); o += 2; }
  return new Blob([buffer], {type: "audio/wav"});
}

// Dialogue mode: one line per turn; "B:" lines are the second voice's, the rest the first's.
function dialogueInputs(text) {
  return text.split("\n").map((line) => line.trim()).filter((line) => line).map((line) => {
    const second = /^B\s*:/i.test(line);
    return {text: line.replace(/^[AB]\s*:\s*/i, ""), voice_id: $(second ? "voice2" : "voice").value};
  });
}

function speechRequest(signal, extra) {
  if ($("dialogue").checked) {
    return fetch(api("/v1/text-to-dialogue/stream?output_format=pcm_24000"), {
      method: "POST", signal, headers: headers(extra),
      body: JSON.stringify({inputs: dialogueInputs($("text").value), model_id: "eleven_v3"}),
    });
  }
  return fetch(api("/v1/audio/speech"), {
    method: "POST", signal, headers: headers(extra),
    body: JSON.stringify({model: "tts-1", voice: $("voice").value, input: $("text").value,
                          response_format: "pcm", speed: parseFloat($("speed").value)}),
  });
}

// What the voice says for the text (markdown, numbers, links... normalized), shown under it.
async function showSpoken(text) {
  const response = await fetch(api("/v1/text/normalize"), {
    method: "POST", headers: headers({"Content-Type": "application/json"}), body: JSON.stringify({text, voice_id: $("voice").value}),
  }).catch(() => null);
  if (!response || !response.ok) return;
  const body = await response.json();
  $("spoken").textContent = body.changed ? "Spoken as: " + body.spoken : "";
  $("spoken").hidden = !body.changed;
}

async function speak() {
  stop();
  if (!$("dialogue").checked) showSpoken($("text").value);
  const controller = new AbortController();
  const context = new AudioContext({sampleRate: SAMPLE_RATE});
  const current = {controller, context, timer: null};
  playback = current;
  $("speak").disabled = true; $("stop").disabled = false; $("download").hidden = true;
  const started = performance.now();
  const extra = {"Content-Type": "application/json"};
  if ($("conversation").checked) extra["X-Session-Id"] = session();
  const stats = $("stats");
  stats.textContent = "Generating…";
  try {
    const response = await speechRequest(controller.signal, extra);
    if (response.status === 401) {
      stop();
      askForKey("This server wants its API key: enter it above, then Speak again.");
      return;
    }
    if (!response.ok) throw new Error(await errorText(response));
    const info = "request " + response.headers.get("x-request-id") +
      "\ncontext turns: " + response.headers.get("x-context-turns") +
      ", tokens prefilled: " + response.headers.get("x-prefill-tokens");
    const decode = pcmDecoder(), chunks = [];
    const reader = response.body.getReader();
    let at = context.currentTime + 0.05, first = null;
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      const samples = decode(value);
      if (!samples.length) continue;
      if (first === null) first = performance.now() - started;
      chunks.push(samples);
      const buffer = context.createBuffer(1, samples.length, SAMPLE_RATE);
      buffer.copyToChannel(samples, 0);
      const source = context.createBufferSource();
      source.buffer = buffer; source.connect(context.destination);
      at = Math.max(at, context.currentTime); source.start(at); at += buffer.duration;
      const seconds = chunks.reduce((n, c) => n + c.length, 0) / SAMPLE_RATE;
      stats.textContent = "first audio after " + Math.round(first) + " ms · " + seconds.toFixed(1) + " s of audio\n" + info;
    }
    $("download").href = URL.createObjectURL(wavBlob(chunks, SAMPLE_RATE));
    $("download").hidden = !chunks.length;
    // The download is over, the playback is not: Stop stays until the last sample has played.
    if (playback === current) {
      current.timer = setTimeout(() => { if (playback === current) stop(); },
                                 Math.max(0, at - context.currentTime) * 1000 + 100);
    }
  } catch (err) {
    if (err.name !== "AbortError") {
      const message = document.createElement("span");
      message.className = "error";
      message.textContent = String(err.message || err);
      stats.replaceChildren(message);
      if (playback === current) stop();
    }
  } finally {
    $("speak").disabled = false;
  }
}

function stop() {
  if (!playback) return;
  clearTimeout(playback.timer);
  playback.controller.abort();  // the server cancels the generation when the connection drops
  playback.context.close();  // silences what was already scheduled
  playback = null;
  $("speak").disabled = false; $("stop").disabled = true;
}

async function cloneVoice(event) {
  event.preventDefault();
  const out = $("clone-result");
  out.textContent = "Uploading…";
  const response = await fetch(api("/v1/voices/add"), {method: "POST", headers: headers(), body: new FormData(event.target)});
  if (!response.ok) { out.textContent = "Failed: " + await errorText(response); return; }
  const {voice_id} = await response.json();
  out.textContent = "Added voice " + voice_id;
  await loadVoices();
  $("voice").value = voice_id;
}

$("speed").addEventListener("input", () => { $("speed-value").textContent = parseFloat($("speed").value).toFixed(2); });
$("speak").addEventListener("click", speak);
$("stop").addEventListener("click", stop);
$("new-conversation").addEventListener("click", () => { newSession(); $("stats").textContent = "New conversation."; });
$("clone-form").addEventListener("submit", cloneVoice);
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("key").value.trim();
  globalThis.playgroundReady = loadVoices();
});
$("dialogue").addEventListener("change", () => {
  $("voice2-label").hidden = $("dialogue-help").hidden = !$("dialogue").checked;
});
globalThis.playgroundReady = loadVoices();  // (tests await it)
