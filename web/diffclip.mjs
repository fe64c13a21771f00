// Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
// An exported DiffCLIP/CLIP folder (`diffclip export onnx`) run in the browser: the two ONNX graphs with
// onnxruntime-web (single-threaded wasm, served from this page's folder: nothing from a CDN), the tokenizer and the
// image decoding with transformers.js, the image transform in preprocess.mjs. Zero-shot answers are
// `diffclip zero-shot`'s: one template per label, logits = exp(logit_scale) * cosine, softmax over the labels.

import * as ort from "onnxruntime-web";
import { CLIPTokenizer, RawImage, env } from "@huggingface/transformers";
import { pixelValues } from "./preprocess.mjs";

const RUNTIME = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.wasmPaths = RUNTIME;
ort.env.wasm.numThreads = 1; // no cross-origin isolation needed
ort.env.wasm.proxy = false;
env.allowRemoteModels = false; // the page fetches the model's files itself
env.backends.onnx.wasm.wasmPaths = RUNTIME;

export const GRAPH_SUFFIXES = { fp32: "", int8: "_quantized", fp16: "_fp16" };
export const DEFAULT_TEMPLATE = "a photo of a {}.";

async function fetchJSON(base, name) {
  const response = await fetch(new URL(name, base));
  if (!response.ok) throw new Error(`${new URL(name, base)}: HTTP ${response.status}`);
  return response.json();
}

/** CLIP's text cleaning as the Python reader does it for DiffCLIP (HTML entities, whitespace, lower case). */
function cleanText(text) {
  const unescape = (t) => new DOMParser().parseFromString(`<!doctype html><body>${t}`, "text/html").body.textContent;
  return unescape(unescape(text)).replace(/\s+/g, " ").trim().toLowerCase();
}

/** Labels from a comma-separated string, as `diffclip zero-shot --labels` reads them (CSV quoting for commas). */
export function parseLabels(text) {
  const labels = [];
  let current = "";
  let quoted = false;
  let start = true;
  for (const char of text) {
    if (start && char === " ") continue;
    start = false;
    if (char === '"') quoted = !quoted;
    else if (char === "," && !quoted) {
      labels.push(current);
      current = "";
      start = true;
    } else current += char;
  }
  labels.push(current);
  return labels.map((l) => l.trim()).filter((l) => l);
}

function unit(vector) {
  let norm = 0;
  for (const v of vector) norm += v * v;
  norm = Math.sqrt(norm);
  return Array.from(vector, (v) => v / norm);
}

export class ExportedCLIP {
  static async load(base, precision = "fp32") {
    base = new URL(base, location.href).href;
    if (!base.endsWith("/")) base += "/";
    const [config, imageConfig, tokenizerJSON, tokenizerConfig] = await Promise.all([
      fetchJSON(base, "export_config.json"),
      fetchJSON(base, "preprocessor_config.json"),
      fetchJSON(base, "tokenizer.json"),
      fetchJSON(base, "tokenizer_config.json"),
    ]);
    if (!config.precisions.includes(precision)) {
      throw new Error(`this export has no ${precision} graphs (it has ${config.precisions.join(", ")})`);
    }
    const options = { executionProviders: ["wasm"] };
    const suffix = GRAPH_SUFFIXES[precision];
    const [vision, text] = await Promise.all([
      ort.InferenceSession.create(new URL(`onnx/vision_model${suffix}.onnx`, base).href, options),
      ort.InferenceSession.create(new URL(`onnx/text_model${suffix}.onnx`, base).href, options),
    ]);
    const tokenizer = new CLIPTokenizer(tokenizerJSON, tokenizerConfig);
    return new ExportedCLIP(base, config, imageConfig, tokenizer, vision, text);
  }

  constructor(base, config, imageConfig, tokenizer, vision, text) {
    Object.assign(this, { base, config, imageConfig, tokenizer, vision, text });
    this.clean = config.model_type === "diffclip";
  }

  /** pixel_values of one image (a URL, a Blob or a File): { data: Float32Array, dims }. */
  async pixelValues(source) {
    const image = source instanceof Blob ? await RawImage.fromBlob(source) : await RawImage.fromURL(source);
    const rgb = image.rgb();
    return pixelValues(rgb.data, rgb.width, rgb.height, this.imageConfig);
  }

  async imageEmbedding(pixels) {
    const input = new ort.Tensor("float32", pixels.data, pixels.dims);
    const output = await this.vision.run({ pixel_values: input });
    return unit(output.image_embeds.data);
  }

  /** Unit text embeddings of `texts`, one batch, right padded with the export's pad id. */
  async textEmbeddings(texts) {
    const max = this.config.max_text_length;
    const encoded = texts.map((t) => {
      const ids = this.tokenizer.encode(this.clean ? cleanText(t) : t);
      return ids.length > max ? [...ids.slice(0, max - 1), ids[ids.length - 1]] : ids;
    });
    const width = Math.max(...encoded.map((ids) => ids.length));
    const inputIds = new BigInt64Array(texts.length * width).fill(BigInt(this.config.pad_token_id));
    const mask = new BigInt64Array(texts.length * width);
    encoded.forEach((ids, row) => ids.forEach((id, i) => {
      inputIds[row * width + i] = BigInt(id);
      mask[row * width + i] = 1n;
    }));
    const output = await this.text.run({
      input_ids: new ort.Tensor("int64", inputIds, [texts.length, width]),
      attention_mask: new ort.Tensor("int64", mask, [texts.length, width]),
    });
    const dim = output.text_embeds.dims[1];
    return texts.map((_, row) => unit(output.text_embeds.data.subarray(row * dim, (row + 1) * dim)));
  }

  /**
   * Zero-shot classification and similarity of one image against `labels`: per label, the cosine of the image to
   * the label's prompt and the softmax probability over the labels; sorted by probability. Also returns the
   * pixel tensor the graph saw.
   */
  async classify(source, labels, template = DEFAULT_TEMPLATE) {
    const pixels = await this.pixelValues(source);
    const image = await this.imageEmbedding(pixels);
    const prompts = labels.map((label) => (template ? template.replaceAll("{}", label) : label));
    const classes = await this.textEmbeddings(prompts);
    const scale = Math.exp(this.config.logit_scale);
    const cosines = classes.map((c) => c.reduce((sum, v, i) => sum + v * image[i], 0));
    const logits = cosines.map((c) => scale * c);
    const top = Math.max(...logits);
    const exps = logits.map((l) => Math.exp(l - top));
    const total = exps.reduce((a, b) => a + b, 0);
    const predictions = labels.map((label, i) => ({ label, score: exps[i] / total, cosine: cosines[i] }));
    predictions.sort((a, b) => b.score - a.score);
    return { predictions, pixels };
  }
}
