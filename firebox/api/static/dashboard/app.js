// firebox dashboard: sign in with an API key, chart usage, and chat with a model over SSE.
(function () {
  "use strict";
  const KEY_STORAGE = "firebox.apiKey";
  const HOUR = 3600 * 1000, DAY = 24 * HOUR;
  const RANGES = {
    "24h": { span: 24 * HOUR, step: HOUR, granularity: "hour" },
    "7d": { span: 7 * DAY, step: DAY, granularity: "day" },
    "30d": { span: 30 * DAY, step: DAY, granularity: "day" },
  };
  const COLORS = { prompt: "#1c7ed6", cached: "#2f9e44", completion: "#e8590c", p50: "#1c7ed6",
                   p99: "#ae3ec9", lat50: "#e8590c", lat99: "#2f9e44" };
  const $ = (id) => document.getElementById(id);
  let history = [];
  let streamAbort = null;

  function apiKey() { return sessionStorage.getItem(KEY_STORAGE); }

  async function api(path, options) {
    const headers = Object.assign({ Authorization: "Bearer " + apiKey() }, (options || {}).headers);
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (!response.ok) throw new Error(await errorMessage(response));
    return response;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || JSON.stringify(body);
    } catch (_) {
      return response.status + " " + response.statusText;
    }
  }

  // ---- sign in -------------------------------------------------------------------------------
  async function signIn(key) {
    sessionStorage.setItem(KEY_STORAGE, key);
    try {
      const accounts = (await (await api("/v1/accounts")).json()).accounts || [];
      $("account").replaceChildren(...accounts.map((a) => new Option(a.name.split("/").pop())));
    } catch (error) {
      sessionStorage.removeItem(KEY_STORAGE);
      $("sign-in-error").textContent = "Sign-in failed: " + error.message;
      return;
    }
    $("sign-in").hidden = true;
    $("main").hidden = false;
    $("toolbar").hidden = false;
    await Promise.all([loadUsage(), loadModels()]);
  }

  function signOut() {
    sessionStorage.removeItem(KEY_STORAGE);
    location.reload();
  }

  // ---- usage ---------------------------------------------------------------------------------
  function bucketStarts(range, end) {
    const first = Math.floor((end - range.span) / range.step) * range.step + range.step;
    const starts = [];
    for (let t = first; t <= end; t += range.step) starts.push(t);
    return starts;
  }

  function label(time, range) {
    const d = new Date(time);
    const pad = (n) => String(n).padStart(2, "0");
    if (range.granularity === "hour") return pad(d.getUTCHours()) + ":00";
    return pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
  }

  async function fetchUsage(params) {
    const account = encodeURIComponent($("account").value);
    const query = new URLSearchParams(params).toString();
    return (await (await api("/v1/accounts/" + account + "/usage?" + query)).json()).data;
  }

  async function loadUsage() {
    const range = RANGES[$("range").value];
    const end = Date.now();
    const starts = bucketStarts(range, end);
    const timeRange = { start: new Date(starts[0]).toISOString(), end: new Date(end).toISOString() };
    try {
      const [series, perModel] = await Promise.all([
        fetchUsage(Object.assign({ granularity: range.granularity }, timeRange)),
        fetchUsage(Object.assign({ granularity: "all", group_by: "model" }, timeRange)),
      ]);
      drawCharts(starts, range, series);
      fillModelTable(perModel);
      $("usage-error").textContent = "";
    } catch (error) {
      $("usage-error").textContent = "Could not load usage: " + error.message;
    }
  }

  function drawCharts(starts, range, rows) {
    const byStart = new Map(rows.map((row) => [Date.parse(row.start), row]));
    const column = (name) => starts.map((t) => (byStart.has(t) ? byStart.get(t)[name] : null));
    const zeros = (values) => values.map((v) => v || 0);
    const labels = starts.map((t) => label(t, range));
    const charts = window.FireboxCharts;
    charts.barChart($("chart-tokens"), labels, [
      { name: "prompt", color: COLORS.prompt, values: zeros(column("prompt_tokens")) },
      { name: "completion", color: COLORS.completion, values: zeros(column("completion_tokens")) },
    ]);
    charts.barChart($("chart-requests"), labels, [
      { name: "requests", color: COLORS.prompt, values: zeros(column("requests")) },
    ]);
    charts.lineChart($("chart-latency"), labels, [
      { name: "TTFT p50", color: COLORS.p50, values: column("ttft_p50_ms") },
      { name: "TTFT p99", color: COLORS.p99, values: column("ttft_p99_ms") },
      { name: "latency p50", color: COLORS.lat50, values: column("latency_p50_ms") },
      { name: "latency p99", color: COLORS.lat99, values: column("latency_p99_ms") },
    ]);
  }

  function fillModelTable(rows) {
    const fields = ["requests", "prompt_tokens", "cached_tokens", "completion_tokens",
                    "ttft_p50_ms", "ttft_p99_ms", "latency_p50_ms", "latency_p99_ms"];
    const body = $("models-table").querySelector("tbody");
    body.replaceChildren(...rows.map((row) => {
      const tr = document.createElement("tr");
      const name = document.createElement("td");
      name.textContent = String(row.model).split("/").pop();
      name.title = row.model;
      tr.appendChild(name);
      for (const value of fields.map((f) => row[f])) {
        const td = document.createElement("td");
        td.textContent = value === null || value === undefined ? "–" :
          typeof value === "number" ? String(Math.round(value * 10) / 10) : value;
        tr.appendChild(td);
      }
      return tr;
    }));
  }

  // ---- playground ----------------------------------------------------------------------------
  async function loadModels() {
    try {
      const models = (await (await api("/v1/models")).json()).data || [];
      $("model").replaceChildren(...models.map((m) => new Option(m.id)));
    } catch (error) {
      $("chat-error").textContent = "Could not list models: " + error.message;
    }
  }

  function addMessage(role, text) {
    const node = document.createElement("div");
    node.className = "message " + role;
    node.textContent = text;
    $("transcript").appendChild(node);
    return node;
  }

  // Yields the JSON payload of each `data:` event of an SSE body until `[DONE]`.
  async function* sseEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") return;
          yield JSON.parse(data);
        }
      }
    }
  }

  async function sendChat(event) {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text) return;
    $("prompt").value = "";
    $("chat-error").textContent = "";
    history.push({ role: "user", content: text });
    addMessage("user", text);
    const reply = addMessage("assistant", "");
    streamAbort = new AbortController();
    setBusy(true);
    try {
      await streamReply(reply, streamAbort.signal);
    } catch (error) {
      if (error.name !== "AbortError") $("chat-error").textContent = error.message;
    } finally {
      history.push({ role: "assistant", content: reply.textContent });
      setBusy(false);
    }
  }

  async function streamReply(reply, signal) {
    const body = {
      model: $("model").value, messages: history, stream: true,
      max_tokens: Number($("max-tokens").value) || 256,
      temperature: Number($("temperature").value),
    };
    const response = await api("/v1/chat/completions", {
      method: "POST", signal, body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    });
    for await (const chunk of sseEvents(response.body)) {
      if (chunk.error) throw new Error(chunk.error.message || "stream error");
      for (const choice of chunk.choices || []) {
        const delta = (choice.delta && choice.delta.content) || "";
        if (delta) reply.textContent += delta;
      }
      $("transcript").scrollTop = $("transcript").scrollHeight;
    }
  }

  function setBusy(busy) {
    $("send").disabled = busy;
    $("stop").disabled = !busy;
  }

  // ---- wiring --------------------------------------------------------------------------------
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("api-key").value.trim());
  });
  $("sign-out").addEventListener("click", signOut);
  $("refresh").addEventListener("click", loadUsage);
  $("range").addEventListener("change", loadUsage);
  $("account").addEventListener("change", loadUsage);
  $("chat-form").addEventListener("submit", sendChat);
  $("stop").addEventListener("click", () => streamAbort && streamAbort.abort());
  $("clear").addEventListener("click", () => { history = []; $("transcript").replaceChildren(); });
  if (apiKey()) signIn(apiKey());
})();
