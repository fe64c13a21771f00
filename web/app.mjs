// Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
// The page's controls. The model folder comes from ?model=URL (default: the folder the page is served from) and
// ?precision=fp32|int8|fp16. The last result is kept on window.diffclip for scripts and the tests.

import { DEFAULT_TEMPLATE, ExportedCLIP, parseLabels } from "./diffclip.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { model: null, last: null, error: null };
window.diffclip = state;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
  if (error) state.error = text;
}

async function load() {
  const base = $("model").value.trim() || "./";
  const precision = $("precision").value;
  $("classify").disabled = true;
  status(`Loading ${base} (${precision})…`);
  try {
    state.model = await ExportedCLIP.load(base, precision);
    status(`Ready: ${state.model.config.model} (${state.model.config.model_type}, ${precision}), in this browser.`);
    $("classify").disabled = false;
  } catch (error) {
    status(`Could not load the model: ${error.message}`, true);
  }
}

function show(file) {
  const url = URL.createObjectURL(file);
  $("preview").src = url;
  $("preview").hidden = false;
}

async function classify() {
  const file = $("image").files[0];
  const labels = parseLabels($("labels").value);
  if (!file) return status("Choose an image first.", true);
  if (!labels.length) return status("Give comma-separated labels, such as 'cat, dog'.", true);
  $("classify").disabled = true;
  status("Running…");
  try {
    const started = performance.now();
    const result = await state.model.classify(file, labels, $("template").value);
    const ms = performance.now() - started;
    state.last = { image: file.name, predictions: result.predictions, pixels: Array.from(result.pixels.data), ms };
    const rows = result.predictions.map((p) => {
      const bar = `<span class="bar" style="width:${(100 * p.score).toFixed(1)}%"></span>`;
      return `<tr><td>${escape(p.label)}</td><td class="num">${p.score.toFixed(4)}</td><td class="wide">${bar}</td>` +
        `<td class="num">${p.cosine.toFixed(4)}</td></tr>`;
    });
    $("results").innerHTML = `<tr><th>label</th><th>probability</th><th></th><th>cosine</th></tr>${rows.join("")}`;
    $("results").dataset.json = JSON.stringify(result.predictions);
    status(`${file.name}: ${ms.toFixed(0)} ms in this browser.`);
  } catch (error) {
    status(`Failed: ${error.message}`, true);
  } finally {
    $("classify").disabled = false;
  }
}

function escape(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

$("model").value = params.get("model") ?? "./";
$("precision").value = params.get("precision") ?? "fp32";
$("template").value = params.get("template") ?? DEFAULT_TEMPLATE;
$("load").addEventListener("click", load);
$("image").addEventListener("change", () => $("image").files[0] && show($("image").files[0]));
$("classify").addEventListener("click", classify);
load();
