// Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
// The exported image processor's transform (preprocessor_config.json) in JavaScript, written to give the Python
// processor's pixel_values: the shorter side resized with Pillow's resampling (same filters, same support, same
// fixed-point rounding, horizontal pass then vertical), the center crop (DiffCLIP: offsets rounded; CLIP: floored),
// rescale and normalise in float32, channels first.

const PRECISION_BITS = 32 - 8 - 2; // Pillow's ImagingResample for 8-bit images

const FILTERS = {
  // Pillow's resample codes: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming
  2: { support: 1.0, weight: (x) => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; } },
  3: {
    support: 2.0,
    weight: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
  4: { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0) },
  5: { support: 1.0, weight: (x) => { x = Math.abs(x); return x < 1.0 ? 0.54 + 0.46 * Math.cos(Math.PI * x) : 0.0; } },
  1: {
    support: 3.0,
    weight: (x) => {
      const sinc = (t) => (t === 0.0 ? 1.0 : Math.sin(Math.PI * t) / (Math.PI * t));
      return x > -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
    },
  },
};

/** Pillow's precompute_coeffs: for each output position, the first input index and the fixed-point weights. */
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1.0);
  const support = filter.support * filterScale;
  const bounds = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterScale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const k = new Float64Array(xmax);
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.weight((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    const fixed = new Float64Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      // (int)(w * (1 << PRECISION_BITS) + (w < 0 ? -0.5 : 0.5)), truncated toward zero as C does
      fixed[x] = Math.trunc(w * (1 << PRECISION_BITS) + (w < 0 ? -0.5 : 0.5));
    }
    bounds.push({ xmin, fixed });
  }
  return bounds;
}

function clip8(value) {
  const shifted = Math.floor(value / (1 << PRECISION_BITS));
  return shifted < 0 ? 0 : shifted > 255 ? 255 : shifted;
}

/** One separable pass of Pillow's resampling over an interleaved uint8 RGB image. */
function resamplePass(data, width, height, outSize, filter, horizontal) {
  const inSize = horizontal ? width : height;
  const coeffs = coefficients(inSize, outSize, filter);
  const outWidth = horizontal ? outSize : width;
  const outHeight = horizontal ? height : outSize;
  const out = new Uint8ClampedArray(outWidth * outHeight * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const { xmin, fixed } = coeffs[horizontal ? x : y];
      for (let c = 0; c < 3; c++) {
        let ss = half;
        for (let i = 0; i < fixed.length; i++) {
          const index = horizontal ? (y * width + xmin + i) * 3 + c : ((xmin + i) * width + x) * 3 + c;
          ss += data[index] * fixed[i];
        }
        out[(y * outWidth + x) * 3 + c] = clip8(ss);
      }
    }
  }
  return out;
}

/** Resize an interleaved RGB uint8 image as Pillow's Image.resize((width, height), resample) does. */
export function resizeLikePillow(rgb, width, height, newWidth, newHeight, resample) {
  const filter = FILTERS[resample];
  if (!filter) throw new Error(`resample ${resample} is not supported by the page (use 1-5)`);
  let data = rgb;
  let w = width;
  if (newWidth !== width) {
    data = resamplePass(data, width, height, newWidth, filter, true);
    w = newWidth;
  }
  if (newHeight !== height) data = resamplePass(data, w, height, newHeight, filter, false);
  return data;
}

/**
 * pixel_values (Float32Array, 3 x height x width) of one image given as interleaved RGB uint8, following the
 * exported preprocessor_config.json; returns { data, dims }.
 */
export function pixelValues(rgb, width, height, settings) {
  let data = rgb;
  let w = width;
  let h = height;
  if (settings.do_resize ?? true) {
    const size = settings.size.shortest_edge;
    const [short, long] = w <= h ? [w, h] : [h, w];
    const newShort = size;
    const newLong = Math.trunc((size * long) / short);
    const [nw, nh] = w <= h ? [newShort, newLong] : [newLong, newShort];
    data = resizeLikePillow(data, w, h, nw, nh, settings.resample ?? 3);
    w = nw;
    h = nh;
  }
  let top = 0;
  let left = 0;
  let cw = w;
  let ch = h;
  if (settings.do_center_crop ?? true) {
    ch = settings.crop_size.height;
    cw = settings.crop_size.width;
    if (settings.image_processor_type === "DiffCLIPImageProcessor") {
      // torchvision's rounding (Python's round: halves to even)
      top = roundHalfEven((h - ch) / 2.0);
      left = roundHalfEven((w - cw) / 2.0);
    } else {
      top = Math.floor((h - ch) / 2);
      left = Math.floor((w - cw) / 2);
    }
  }
  const rescale = (settings.do_rescale ?? true) ? Math.fround(settings.rescale_factor ?? 1 / 255) : 1.0;
  const normalize = settings.do_normalize ?? true;
  const mean = normalize ? settings.image_mean.map(Math.fround) : [0, 0, 0];
  const std = normalize ? settings.image_std.map(Math.fround) : [1, 1, 1];
  const out = new Float32Array(3 * ch * cw);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) {
        const value = Math.fround(data[((top + y) * w + left + x) * 3 + c] * rescale);
        out[(c * ch + y) * cw + x] = Math.fround(Math.fround(value - mean[c]) / std[c]);
      }
    }
  }
  return { data: out, dims: [1, 3, ch, cw] };
}

function roundHalfEven(value) {
  const floor = Math.floor(value);
  const diff = value - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}
