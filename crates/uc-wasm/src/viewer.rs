//! A loaded document plus the target layouts of the last topology asked for (what the page holds).

use crate::doc::Doc;
use crate::error::{Result, ViewError};
use crate::relayout::{layouts, stages};
use crate::topo::Topo;
use crate::view::{reshard_view, tensor_view, View};
use serde_json::{json, Value as J};
use std::cell::RefCell;
use uc_schema::TensorMeta;

/// Target layouts of every tensor on one topology.
type Targets = (Topo, Vec<Result<TensorMeta>>);

/// The viewer's state: one document and a cache of its target layouts.
#[derive(Debug)]
pub struct Viewer {
    pub doc: Doc,
    cache: RefCell<Option<Targets>>,
}

impl Viewer {
    /// Parses metadata JSON (any supported format).
    pub fn new(json: &str) -> Result<Viewer> {
        Ok(Viewer {
            doc: Doc::parse(json)?,
            cache: RefCell::new(None),
        })
    }

    /// The document: format, source topology, notes and every tensor with its layout or error.
    pub fn summary(&self) -> J {
        let d = &self.doc;
        let stage = stages(&d.items, d.source.pp);
        let tensors: Vec<J> = d
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let (cut, layout, ranks, error) = match &it.source {
                    Ok(m) => (
                        it.cut.label(),
                        J::from(m.layout.kind()),
                        J::from(m.layout.ranks()),
                        J::Null,
                    ),
                    Err(e) => ("invalid".into(), J::Null, J::Null, J::from(e.to_string())),
                };
                json!({"index": i, "name": it.name, "role": it.role.key(), "dtype": it.dtype.name(),
                       "shape": it.shape, "cut": cut, "layout": layout, "ranks": ranks,
                       "stage": stage[i], "error": error,
                       "dcp": it.dcp.as_ref().map(|d| d.label())})
            })
            .collect();
        let errors: Vec<J> = d
            .items
            .iter()
            .filter_map(|it| it.source.as_ref().err().map(|e| J::from(e.to_string())))
            .collect();
        json!({"format": d.format.name(), "source": d.source, "notes": d.notes,
               "tensors": tensors, "errors": errors})
    }

    /// One tensor on its source layout.
    pub fn tensor(&self, index: usize) -> Result<View> {
        tensor_view(&self.doc, index)
    }

    /// The target layout of tensor `index` on `target` (cached per topology).
    pub fn target(&self, index: usize, target: &Topo) -> Result<TensorMeta> {
        self.doc.item(index)?;
        let mut c = self.cache.borrow_mut();
        if c.as_ref().is_none_or(|(t, _)| t != target) {
            *c = Some((*target, layouts(&self.doc.items, target)?));
        }
        let (_, metas) = c.as_ref().ok_or(ViewError::Unknown)?;
        metas
            .get(index)
            .cloned()
            .unwrap_or(Err(ViewError::NoTensor {
                index,
                count: metas.len(),
            }))
    }

    /// Source vs target for tensor `index`, showing the reads of target rank `focus` (`None`: all).
    pub fn reshard(&self, index: usize, target: &Topo, focus: Option<u32>) -> Result<View> {
        let meta = self.target(index, target)?;
        reshard_view(&self.doc, index, target, &meta, focus)
    }
}
