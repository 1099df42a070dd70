//! The top-level checkpoint manifest (`uc.json` of the native format).

use crate::{TensorMeta, Topology, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the manifest format this crate writes; readers accept `1..=MANIFEST_VERSION`.
pub const MANIFEST_VERSION: u32 = 1;

/// Where a tensor's bytes are in a native checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRef {
    /// File path relative to the checkpoint root (`tensors/00000.safetensors`).
    pub file: String,
    /// Key inside that safetensors file.
    pub key: String,
    /// Byte range `[start, end)` of the data inside the file.
    pub start: u64,
    pub end: u64,
}

/// One entry of the manifest: a tensor and where its bytes are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub meta: TensorMeta,
    pub storage: Option<StorageRef>,
}

/// A file of the checkpoint with its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub file: String,
    pub bytes: u64,
    /// Hex digest, `algorithm:hex` (e.g. `sha256:…`).
    pub checksum: String,
}

/// A topology-independent checkpoint: every tensor whole, plus the run it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// The topology the checkpoint was converted from.
    pub source: Topology,
    pub tensors: Vec<Entry>,
    pub files: Vec<FileSum>,
    /// Free-form training state: step, param-group hyper-parameters, scheduler, …
    pub state: BTreeMap<String, Value>,
}

impl Manifest {
    /// An empty manifest of the current version.
    pub fn new(source: Topology) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            source,
            tensors: Vec::new(),
            files: Vec::new(),
            state: BTreeMap::new(),
        }
    }

    /// Finds a tensor by name and role.
    pub fn get(&self, name: &str, role: &crate::Role) -> Option<&Entry> {
        self.tensors
            .iter()
            .find(|e| e.meta.name == name && &e.meta.role == role)
    }
}
