// cxrkit reading view: one film on a canvas, zoom/pan, window/level, invert, and a heatmap layer.
// Windowing runs on the server's 8-bit rendering of the film's full range (see the display answer).
"use strict";

class ReadingView {
  constructor(viewport, onChange) {
    this.viewport = viewport;
    this.stage = viewport.querySelector("#stage");
    this.film = viewport.querySelector("#film");
    this.heat = viewport.querySelector("#heat");
    this.onChange = onChange || (() => {});
    this.grey = null; // Uint8ClampedArray of the rendering, one value per pixel
    this.v = { scale: 1, tx: 0, ty: 0, center: 127.5, width: 255, invert: false };
    this.tool = "pan";
    this.pending = false;
    this.bind();
  }

  async load(pngBase64, width, height) {
    const img = new Image();
    img.src = `data:image/png;base64,${pngBase64}`;
    await img.decode();
    const off = document.createElement("canvas");
    off.width = width;
    off.height = height;
    const ctx = off.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    const rgba = ctx.getImageData(0, 0, width, height).data;
    this.grey = new Uint8ClampedArray(width * height);
    for (let i = 0; i < this.grey.length; i++) this.grey[i] = rgba[4 * i];
    this.film.width = width;
    this.film.height = height;
    this.stage.style.width = `${width}px`;
    this.stage.style.height = `${height}px`;
    this.heat.style.width = `${width}px`;
    this.heat.style.height = `${height}px`;
    this.image = this.film.getContext("2d").createImageData(width, height);
  }

  // quantiles of the rendering (0..1 -> display value), for the presets of films without header windows
  quantile(q) {
    const hist = new Uint32Array(256);
    for (const g of this.grey) hist[g]++;
    let seen = 0;
    const goal = q * this.grey.length;
    for (let v = 0; v < 256; v++) {
      seen += hist[v];
      if (seen >= goal) return v;
    }
    return 255;
  }

  setWindow(center, width) {
    this.v.center = center;
    this.v.width = Math.max(1, width);
    this.draw();
  }

  draw() {
    if (this.pending || !this.grey) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      const { center, width, invert } = this.v;
      const lut = new Uint8ClampedArray(256);
      const low = center - width / 2;
      for (let g = 0; g < 256; g++) {
        const y = Math.round(((g - low) / width) * 255);
        lut[g] = invert ? 255 - y : y;
      }
      const out = this.image.data;
      for (let i = 0, j = 0; i < this.grey.length; i++, j += 4) {
        const y = lut[this.grey[i]];
        out[j] = out[j + 1] = out[j + 2] = y;
        out[j + 3] = 255;
      }
      this.film.getContext("2d").putImageData(this.image, 0, 0);
      this.onChange(this.v);
    });
  }

  place() {
    const { scale, tx, ty } = this.v;
    this.stage.style.transform = `translate(${tx}px, ${ty}px) scale(${scale})`;
    this.onChange(this.v);
  }

  fit() {
    const box = this.viewport.getBoundingClientRect();
    const w = this.film.width, h = this.film.height;
    const scale = Math.min(box.width / w, box.height / h);
    this.v.scale = scale;
    this.v.tx = (box.width - w * scale) / 2;
    this.v.ty = (box.height - h * scale) / 2;
    this.place();
  }

  zoomAt(factor, x, y) {
    const s = Math.min(32, Math.max(0.05, this.v.scale * factor));
    const k = s / this.v.scale;
    this.v.tx = x - (x - this.v.tx) * k;
    this.v.ty = y - (y - this.v.ty) * k;
    this.v.scale = s;
    this.place();
  }

  bind() {
    const vp = this.viewport;
    vp.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = vp.getBoundingClientRect();
      this.zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    vp.addEventListener("dblclick", () => this.fit());
    vp.addEventListener("contextmenu", (e) => e.preventDefault());
    let drag = null;
    vp.addEventListener("pointerdown", (e) => {
      const wl = e.button === 2 || this.tool === "wl";
      drag = { x: e.clientX, y: e.clientY, wl, v: { ...this.v } };
      vp.setPointerCapture(e.pointerId);
    });
    vp.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (drag.wl) {
        // right/left: wider/narrower window; down/up: higher/lower level (display units per pixel)
        this.setWindow(drag.v.center + dy * 0.5, drag.v.width + dx);
      } else {
        this.v.tx = drag.v.tx + dx;
        this.v.ty = drag.v.ty + dy;
        this.place();
      }
    });
    const end = () => { drag = null; };
    vp.addEventListener("pointerup", end);
    vp.addEventListener("pointercancel", end);
    window.addEventListener("resize", () => this.grey && this.fit());
  }
}

window.ReadingView = ReadingView;
