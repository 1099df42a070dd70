//! unicheck viewer: checkpoint metadata JSON → SVG partition diagrams, natively or in the browser.
//! Draws with the converter's own geometry (uc-schema layouts, uc-merge pieces and plans).
//!
//! - [`Doc`]: a `uc.json` manifest (optionally with a [`dcp`] section: chunks and writer ranks),
//!   DeepSpeed `universal_checkpoint_info` + local shapes, or a
//!   [model description](model); [`relayout::layouts`] lays its tensors out on any [`Topo`].
//! - [`view`]: the SVG diagrams and JSON summaries; [`fold`], [`draw`], [`svg`]: how they are drawn.
//! - [`Viewer`]: what the page holds; [`bindings`]: its wasm-bindgen API.
//! - [`page::write`]: the page `uc view` writes by default, every diagram pre-rendered as SVG (no
//!   wasm); [`html::standalone`]: the interactive viewer in one file (`uc view --pkg`).

pub mod bindings;
pub mod cut;
pub mod dcp;
pub mod deepspeed;
pub mod doc;
pub mod draw;
mod error;
pub mod fold;
pub mod html;
pub mod input;
pub mod model;
pub mod page;
pub mod relayout;
pub mod svg;
pub mod topo;
pub mod view;
pub mod viewer;

pub use doc::{Doc, Format, Item};
pub use error::{Result, ViewError};
pub use topo::Topo;
pub use view::View;
pub use viewer::Viewer;
