"""The chat web page served at ``GET /``: one HTML file, no build step.

It keeps the conversation in the browser, sends it to ``/v1/chat/completions`` with ``stream: true`` and appends
the streamed deltas as they arrive. An API key field is shown for servers started with ``--api_key``.

The conversation sent to the server always alternates user and assistant turns. An exchange (the user's message
and its answer) joins the history only when it ends:

* the answer finished: both turns are kept;
* Stop: the request is aborted (the server frees its row) and the partial answer shown is kept as the assistant
  turn; stopped before any text arrived, the question is withdrawn (its bubble removed, its text put back in the
  input box);
* Clear: the request is aborted and the history emptied; nothing of the aborted exchange comes back;
* an error: the exchange is dropped (the question's bubble is greyed out) and the error shown.

While an answer streams, Send (and Enter) do nothing and Stop is enabled.
"""

CHAT_PAGE = """<!doctype html>
<html lang="zh">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat · __MODEL__</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 0 auto; padding: 1rem; }
  #log { border: 1px solid #ccc; border-radius: 6px; padding: .5rem; height: 60vh; overflow-y: auto; }
  .msg { white-space: pre-wrap; margin: .4rem 0; padding: .4rem .6rem; border-radius: 6px; }
  .user { background: #e8f0fe; } .assistant { background: #f1f3f4; } .error { color: #b00020; }
  .failed { opacity: .5; } .stopped::after { content: " [已停止 stopped]"; color: #888; font-size: .8rem; }
  form { display: flex; gap: .5rem; margin-top: .5rem; } textarea { flex: 1; min-height: 3rem; }
  .buttons { display: flex; flex-direction: column; gap: .25rem; }
  .settings { display: flex; flex-wrap: wrap; gap: .8rem; font-size: .85rem; margin-top: .5rem; }
  .settings input { width: 5rem; }
</style>
</head>
<body>
<h3>__MODEL__</h3>
<div id="log"></div>
<form id="form">
  <textarea id="input" placeholder="输入消息，Enter 发送，Shift+Enter 换行"></textarea>
  <div class="buttons">
    <button type="submit" id="send">发送 Send</button>
    <button type="button" id="stop" disabled>停止 Stop</button>
    <button type="button" id="clear">清空 Clear</button>
  </div>
</form>
<div class="settings">
  <label>temperature <input id="temperature" type="number" step="0.05" min="0" value="0.85"></label>
  <label>top_p <input id="top_p" type="number" step="0.05" min="0.01" max="1" value="1"></label>
  <label>top_k <input id="top_k" type="number" step="1" min="0" value="10"></label>
  <label>max_tokens <input id="max_tokens" type="number" step="1" min="1" placeholder="what fits" style="width: 6rem"></label>
  <label>API key <input id="key" type="password" style="width: 9rem"></label>
</div>
<script>
const log = document.getElementById("log"), input = document.getElementById("input");
const sendButton = document.getElementById("send"), stopButton = document.getElementById("stop");
// The finished exchanges only: always [system?] user, assistant, user, assistant, ...
let messages = [];
// The exchange being answered: {controller, cleared}; null when idle.
let active = null;

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role; div.textContent = text; log.appendChild(div);
  log.scrollTop = log.scrollHeight; return div;
}
function num(id) { return Number(document.getElementById(id).value); }
function setBusy(busy) { sendButton.disabled = busy; stopButton.disabled = !busy; }

// Reads the SSE stream, calling onText with the answer so far; returns when the server sends [DONE].
async function readAnswer(resp, onText) {
  const reader = resp.body.getReader(), decoder = new TextDecoder(); let buffer = "", answer = "";
  for (;;) {
    const {value, done} = await reader.read(); if (done) return answer;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
      const line = buffer.slice(0, cut).trim(); buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.error) throw new Error(chunk.error.message);
      answer += chunk.choices[0].delta.content || ""; onText(answer);
    }
  }
}

async function send(text) {
  const exchange = {controller: new AbortController(), cleared: false};
  active = exchange; setBusy(true);
  const question = bubble("user", text), out = bubble("assistant", "");
  let answer = "";
  const headers = {"Content-Type": "application/json"};
  const key = document.getElementById("key").value; if (key) headers["Authorization"] = "Bearer " + key;
  const body = {messages: messages.concat([{role: "user", content: text}]), stream: true,
                temperature: num("temperature"), top_p: num("top_p"), top_k: num("top_k")};
  // Left empty, max_tokens is not sent: the server then gives what fits in the context after the prompt.
  if (document.getElementById("max_tokens").value !== "") body.max_tokens = num("max_tokens");
  try {
    const resp = await fetch("/v1/chat/completions", {method: "POST", headers, body: JSON.stringify(body),
                                                      signal: exchange.controller.signal});
    if (!resp.ok) {
      const e = await resp.json().catch(() => ({}));
      throw new Error(resp.status + ": " + (e.error ? e.error.message : resp.statusText));
    }
    answer = await readAnswer(resp, sofar => {
      answer = sofar; out.textContent = sofar; log.scrollTop = log.scrollHeight;
    });
    messages.push({role: "user", content: text}, {role: "assistant", content: answer});
  } catch (err) {
    if (exchange.cleared) {
      // Clear: the log and the history were emptied already.
    } else if (exchange.controller.signal.aborted) {
      if (answer) {  // Stop: the partial answer becomes the assistant turn
        out.classList.add("stopped");
        messages.push({role: "user", content: text}, {role: "assistant", content: answer});
      } else {  // stopped before any text: withdraw the question
        question.remove(); out.remove();
        if (!input.value) input.value = text;
      }
    } else {
      question.classList.add("failed"); out.className = "msg error"; out.textContent = String(err);
    }
  } finally {
    if (active === exchange) { active = null; setBusy(false); }
  }
}

document.getElementById("form").addEventListener("submit", e => {
  e.preventDefault(); if (active) return;
  const text = input.value.trim(); if (!text) return; input.value = ""; send(text);
});
input.addEventListener("keydown", e => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); document.getElementById("form").requestSubmit(); }
});
stopButton.addEventListener("click", () => { if (active) active.controller.abort(); });
document.getElementById("clear").addEventListener("click", () => {
  if (active) { active.cleared = true; active.controller.abort(); active = null; setBusy(false); }
  messages = []; log.innerHTML = "";
});
</script>
</body>
</html>
"""
