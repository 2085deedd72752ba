// The page: a drawing canvas, upload, and the model's answer. No libraries, nothing fetched from elsewhere.
"use strict";
(() => {
  const SIZE = 280; // the canvas in CSS pixels; its backing store is SIZE × devicePixelRatio
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const status = $("status");
  let drawing = false;
  let last = null;
  let sent = 0; // requests sent; only the answer to the newest one is shown
  let liveTimer = null;

  function setupCanvas() {
    // Sharp strokes on any screen: the backing store follows devicePixelRatio and drawing happens in
    // CSS pixels through the transform. What was drawn survives a change (zoom, moving the window).
    const dpr = window.devicePixelRatio || 1;
    const px = Math.round(SIZE * dpr);
    if (canvas.width === px && canvas.height === px) return;
    let copy = null;
    if (canvas.width) {
      copy = document.createElement("canvas");
      copy.width = canvas.width;
      copy.height = canvas.height;
      copy.getContext("2d").drawImage(canvas, 0, 0);
    }
    canvas.width = px;
    canvas.height = px;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    blank();
    if (copy) ctx.drawImage(copy, 0, 0, SIZE, SIZE);
  }

  function blank() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, SIZE, SIZE);
  }

  function pos(e) {
    // Client pixels → canvas CSS pixels, also when CSS shrinks the canvas (narrow phones).
    const r = canvas.getBoundingClientRect();
    const x = (e.clientX - r.left - canvas.clientLeft) * (SIZE / canvas.clientWidth);
    const y = (e.clientY - r.top - canvas.clientTop) * (SIZE / canvas.clientHeight);
    return { x, y };
  }

  function pen() {
    ctx.strokeStyle = ctx.fillStyle = "#000";
    ctx.lineWidth = Number($("pen").value);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
  }

  function dot(p) {
    pen();
    ctx.beginPath();
    ctx.arc(p.x, p.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
  }

  function segment(a, b) {
    pen();
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    drawing = true;
    last = pos(e);
    dot(last);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    e.preventDefault();
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) {
      const p = pos(ev);
      segment(last, p);
      last = p;
    }
    if ($("live").checked && liveTimer === null) {
      liveTimer = setTimeout(() => {
        liveTimer = null;
        if (drawing) predictCanvas();
      }, 300);
    }
  });
  const stop = () => {
    if (!drawing) return;
    drawing = false;
    if ($("live").checked) predictCanvas();
  };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);

  function setState(state, text) {
    status.dataset.state = state;
    status.textContent = text || "";
  }

  async function send(body, headers) {
    const mine = ++sent;
    status.dataset.sent = String(sent);
    setState("busy", "predicting…");
    let text = "";
    try {
      const r = await fetch("/api/predict", { method: "POST", body, headers });
      const j = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
      if (mine !== sent) return; // a newer picture was sent meanwhile
      if (r.ok) {
        show(j);
        text = `answered in ${j.time_ms} ms`;
      } else {
        showError(j.error || `HTTP ${r.status}`);
      }
    } catch (err) {
      if (mine === sent) showError(`cannot reach the server (${err})`);
    } finally {
      if (mine === sent) {
        status.dataset.done = String(mine);
        setState("done", text);
      }
    }
  }

  function predictCanvas() {
    send(JSON.stringify({ image: canvas.toDataURL("image/png") }), { "Content-Type": "application/json" });
  }

  function show(j) {
    $("error").textContent = "";
    $("answer").textContent = j.class;
    $("confidence").textContent = `${(100 * j.probability).toFixed(1)}% sure`;
    $("input28").src = j.input;
    $("seen").hidden = false;
    const bars = $("bars");
    bars.replaceChildren();
    for (const name of j.classes) {
      const p = j.probabilities[name];
      const row = document.createElement("div");
      row.className = name === j.class ? "bar top" : "bar";
      row.dataset.class = name;
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      track.append(fill);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = `${(100 * p).toFixed(1)}%`;
      row.append(label, track, pct);
      bars.append(row);
    }
  }

  function showError(message) {
    $("answer").textContent = "?";
    $("confidence").textContent = "";
    $("error").textContent = message;
    $("bars").replaceChildren();
    hideSeen();
  }

  function hideSeen() {
    // No picture yet: hide the figure rather than show a broken-image placeholder.
    $("seen").hidden = true;
    $("input28").removeAttribute("src");
  }

  function clearAll() {
    sent += 1; // answers still on their way are for the old picture
    status.dataset.sent = status.dataset.done = String(sent);
    blank();
    $("answer").textContent = "–";
    $("confidence").textContent = "";
    $("error").textContent = "";
    $("bars").replaceChildren();
    hideSeen();
    $("file").value = "";
    setState("idle", "");
  }

  $("predict").addEventListener("click", predictCanvas);
  $("clear").addEventListener("click", clearAll);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") clearAll();
  });

  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    // The old drawing or photo goes at once: a picture the browser cannot show leaves a blank canvas,
    // not the previous picture beside the new answer.
    blank();
    hideSeen();
    send(form, {});
    // Show the picture on the canvas too, fitted, so the user can see and correct it.
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      blank();
      const s = Math.min(SIZE / img.width, SIZE / img.height);
      const w = img.width * s;
      const h = img.height * s;
      ctx.drawImage(img, (SIZE - w) / 2, (SIZE - h) / 2, w, h);
      URL.revokeObjectURL(url);
    };
    img.onerror = () => URL.revokeObjectURL(url);
    img.src = url;
  });

  window.addEventListener("resize", setupCanvas);
  setupCanvas();
  showSubtitle();

  function hasGlyphs(text) {
    // Whether some installed font draws every character of text. A character no font has is drawn as the
    // same "missing glyph" box as a private-use character, so compare each one's pixels with that box's.
    const c = document.createElement("canvas");
    c.width = c.height = 40;
    const g = c.getContext("2d", { willReadFrequently: true });
    const font = getComputedStyle(document.body).fontFamily;
    const pixels = (ch) => {
      g.clearRect(0, 0, 40, 40);
      g.font = `32px ${font}`;
      g.textBaseline = "top";
      g.fillText(ch, 2, 2);
      return g.getImageData(0, 0, 40, 40).data.join(",");
    };
    // A private-use and an unassigned character: no font should draw either (an icon font may have one).
    const missing = [pixels("\uE000"), pixels("\u0378")];
    const blankCell = (g.clearRect(0, 0, 40, 40), g.getImageData(0, 0, 40, 40).data.join(","));
    return [...text.replace(/\s/g, "")].every((ch) => {
      const p = pixels(ch);
      return !missing.includes(p) && p !== blankCell;
    });
  }

  function showSubtitle() {
    // 给图识物 in Chinese where a font can draw it; its pinyin (Latin letters, drawn by any font) elsewhere.
    const zh = hasGlyphs($("zh").textContent);
    $("zh").hidden = !zh;
    $("zh-latin").hidden = zh;
    $("zh-sep").hidden = false;
    document.documentElement.dataset.cjk = zh ? "yes" : "no";
  }

  fetch("/api/model")
    .then((r) => r.json())
    .then((m) => {
      const acc = m.test_accuracy == null ? "" : ` · test accuracy ${(100 * m.test_accuracy).toFixed(2)}%`;
      $("model-info").textContent =
        `${m.architecture} · ${m.parameters.toLocaleString()} parameters · ${m.dataset}${acc} · ` +
        `${m.kind} preprocessing · classes: ${m.classes.join(", ")}`;
    })
    .catch(() => {
      $("model-info").textContent = "model information unavailable";
    });
})();
