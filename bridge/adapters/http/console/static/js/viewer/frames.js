// Rendered frames of one series: fetched from the bridge's rendered DICOMweb resources as
// JPEG, decoded off the main thread (createImageBitmap), kept in a bounded cache, and
// prefetched in the background from the shown frame outwards.
import { request } from "../api.js";

const PARALLEL = 4;
const KEEP = 600;

export class FrameSource {
  constructor(base, frames) {
    this.base = base;        // /dicomweb/studies/{s}/series/{se}
    this.frames = frames;    // [{sop, frame}]
    this.cache = new Map();  // key → ImageBitmap
    this.look = { window: null, viewport: null };
    this.controller = new AbortController();
    this.loaded = 0;
    this.onLoaded = () => {};
  }

  key(index, look = this.look) {
    const f = this.frames[index];
    return `${f.sop}/${f.frame}|${look.window || ""}|${look.viewport || "full"}`;
  }

  url(index, look = this.look) {
    const f = this.frames[index];
    const params = new URLSearchParams();
    if (look.viewport) params.set("viewport", look.viewport);
    if (look.window) params.set("window", look.window);
    const text = params.toString();
    return `${this.base}/instances/${f.sop}/frames/${f.frame}/rendered${text ? `?${text}` : ""}`;
  }

  cached(index) { return this.cache.get(this.key(index)) || null; }

  /** Changing the window or the resolution drops what the background was fetching. */
  setLook(look) {
    if (look.window === this.look.window && look.viewport === this.look.viewport) return;
    this.look = { ...look };
    this.controller.abort();
    this.controller = new AbortController();
    this.loaded = [...this.frames.keys()].filter((i) => this.cache.has(this.key(i))).length;
  }

  async load(index, signal = this.controller.signal) {
    const key = this.key(index);
    const have = this.cache.get(key);
    if (have) return have;
    const response = await request(this.url(index), { accept: "image/jpeg", raw: true, signal });
    const bitmap = await createImageBitmap(await response.blob());
    if (!this.cache.has(key)) {
      this.cache.set(key, bitmap);
      this.loaded += 1;
      this.trim();
      this.onLoaded(index);
    }
    return bitmap;
  }

  trim() {
    while (this.cache.size > KEEP) {
      const oldest = this.cache.keys().next().value;
      const bitmap = this.cache.get(oldest);
      this.cache.delete(oldest);
      if (bitmap && bitmap.close) bitmap.close();
    }
  }

  /** Fetch every frame, nearest to ``from`` first, a few at a time. */
  prefetch(from) {
    const signal = this.controller.signal;
    const order = [...this.frames.keys()].sort((a, b) => Math.abs(a - from) - Math.abs(b - from));
    let next = 0;
    const worker = async () => {
      while (!signal.aborted && next < order.length) {
        const index = order[next++];
        if (this.cache.has(this.key(index))) continue;
        try { await this.load(index, signal); } catch (error) {
          if (signal.aborted) return;
        }
      }
    };
    for (let i = 0; i < PARALLEL; i += 1) worker();
  }

  close() {
    this.controller.abort();
    for (const bitmap of this.cache.values()) if (bitmap.close) bitmap.close();
    this.cache.clear();
  }
}
