//! The JavaScript API (wasm-bindgen): JSON text in, JSON text out, errors as `Error(message)`.
//!
//! ```js
//! import init, { Viewer } from './pkg/uc_wasm.js';
//! await init();
//! const v = new Viewer(text);                 // throws Error("tensor `x`: …") on invalid metadata
//! const doc = JSON.parse(v.summary());        // {format, source, notes, tensors: [...], errors}
//! const t = JSON.parse(v.tensor(0));          // {svg, summary}
//! const r = JSON.parse(v.reshard(0, JSON.stringify({tp: 3}), 0));  // focus target rank 0; -1 = all
//! ```

use crate::topo::Topo;
use crate::view::View;
use crate::viewer;
use wasm_bindgen::prelude::*;

fn js(e: crate::ViewError) -> JsError {
    JsError::new(&e.to_string())
}

fn out(v: View) -> String {
    serde_json::json!({"svg": v.svg, "summary": v.summary}).to_string()
}

/// A loaded metadata document.
#[wasm_bindgen]
pub struct Viewer(viewer::Viewer);

#[wasm_bindgen]
impl Viewer {
    /// Parses `uc.json`, DeepSpeed or model-description JSON.
    #[wasm_bindgen(constructor)]
    pub fn new(json: &str) -> Result<Viewer, JsError> {
        viewer::Viewer::new(json).map(Viewer).map_err(js)
    }

    /// The document summary as JSON.
    pub fn summary(&self) -> String {
        self.0.summary().to_string()
    }

    /// `{svg, summary}` of tensor `index` on its source layout.
    pub fn tensor(&self, index: usize) -> Result<String, JsError> {
        self.0.tensor(index).map(out).map_err(js)
    }

    /// `{svg, summary}` of tensor `index` resharded to `target` (JSON topology); `focus` < 0: all ranks.
    pub fn reshard(&self, index: usize, target: &str, focus: i32) -> Result<String, JsError> {
        let t = Topo::from_json(target).map_err(js)?;
        let f = u32::try_from(focus).ok();
        self.0.reshard(index, &t, f).map(out).map_err(js)
    }
}

/// The crate version, for the page footer.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
