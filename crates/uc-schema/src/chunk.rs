//! One stored chunk of a PyTorch DCP tensor: its box in the global tensor and the storage entry of
//! the rank that wrote it. `uc_store::dcp::layout` infers them; `uc view` shows them.

use serde::{Deserialize, Serialize};

/// A DCP chunk: box (`offsets` + `sizes`), where it is stored and which rank wrote it.
///
/// ```
/// let c: uc_schema::DcpChunk = serde_json::from_str(r#"{"offsets": [3], "sizes": [0]}"#).unwrap();
/// assert!(c.is_empty() && c.rank.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcpChunk {
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
    /// Offsets of the stored chunk in its DCP item (the `storage_data` key; differs for a slice,
    /// e.g. one layer of a Megatron stacked tensor).
    #[serde(default)]
    pub stored_offsets: Vec<u64>,
    /// The rank that wrote it, from the file name `__<rank>_<n>.distcp` (None: not stored).
    #[serde(default)]
    pub rank: Option<u32>,
    /// Data file, byte offset and length of the stored chunk (a torch.save archive).
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub length: u64,
}

impl DcpChunk {
    /// True when some extent is 0 (an empty local shard: no data).
    pub fn is_empty(&self) -> bool {
        self.sizes.contains(&0)
    }
}
