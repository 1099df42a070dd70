//! Hugging Face sharding: which tensor goes into which `model-0000i-of-0000N.safetensors`, where in
//! it, and the `model.safetensors.index.json` that maps them (as `huggingface_hub` and `transformers`
//! write them).

use super::select::Item;
use crate::error::{Result, StoreError};
use crate::native::{layout_safetensors, StEntry};
use std::collections::BTreeMap;
use std::path::Path;
use uc_schema::{DType, Role};

/// The single-file name.
pub const WEIGHTS_NAME: &str = "model.safetensors";
/// The index written beside several shards.
pub const INDEX_NAME: &str = "model.safetensors.index.json";
/// Default `--max-shard-size`: `5GB` as `transformers` and `huggingface_hub` default it (10⁹ bytes).
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// One planned output file.
#[derive(Debug)]
pub(crate) struct Shard {
    pub name: String,
    /// Length prefix + JSON header.
    pub header: Vec<u8>,
    /// Total file length.
    pub len: u64,
}

/// Where every item goes: files, and per item (file index, absolute start).
#[derive(Debug)]
pub(crate) struct ShardPlan {
    pub shards: Vec<Shard>,
    pub slots: Vec<(usize, u64)>,
}

/// Parses a shard size: bytes (`1000000`), or a number with a unit, decimal as in `huggingface_hub`
/// (`KB`, `MB`, `GB`, `TB` = 10³…10¹²) or binary (`KiB`, `MiB`, `GiB`, `TiB` = 2¹⁰…2⁴⁰); case-insensitive.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        "TIB" => 1 << 40,
        _ => return None,
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let v: f64 = num.parse().ok()?;
    let bytes = v * mult as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Groups item indices into shards exactly as `huggingface_hub.split_state_dict_into_shards_factory`:
/// in order; a tensor larger than `max` gets a shard of its own (the open shard stays open); a
/// tensor that would push the open shard past `max` closes it first.
pub(crate) fn group(sizes: &[u64], max: u64) -> Vec<Vec<usize>> {
    let mut shards = Vec::new();
    let (mut cur, mut cur_size) = (Vec::new(), 0u64);
    for (i, &n) in sizes.iter().enumerate() {
        if n > max {
            shards.push(vec![i]);
            continue;
        }
        if cur_size.saturating_add(n) > max {
            shards.push(std::mem::take(&mut cur));
            cur_size = 0;
        }
        cur.push(i);
        cur_size += n;
    }
    if !cur.is_empty() {
        shards.push(cur);
    }
    shards
}

/// The file name of shard `i` of `n`: `model.safetensors` alone, else `model-0000i-of-0000n.safetensors`.
pub fn shard_name(i: usize, n: usize) -> String {
    if n == 1 {
        WEIGHTS_NAME.to_string()
    } else {
        format!("model-{:05}-of-{n:05}.safetensors", i + 1)
    }
}

/// The order of safetensors' own writer (`safetensors::tensor::prepare`): dtype descending, then name.
fn st_rank(d: DType) -> safetensors::Dtype {
    use safetensors::Dtype as S;
    match d {
        DType::F64 => S::F64,
        DType::F32 => S::F32,
        DType::F16 => S::F16,
        DType::BF16 => S::BF16,
        DType::I64 => S::I64,
        DType::I32 => S::I32,
        DType::I16 => S::I16,
        DType::I8 => S::I8,
        DType::U8 => S::U8,
        DType::Bool => S::BOOL,
    }
}

/// Plans every file: shard grouping, then each file laid out as `safetensors.torch.save_file`
/// would write it (tensor order, header, `{"format":"pt"}`), so the bytes are identical.
pub(crate) fn plan(items: &[Item], max: u64, out: &Path) -> Result<ShardPlan> {
    let sizes: Vec<u64> = items.iter().map(|i| i.bytes).collect();
    let groups = group(&sizes, max);
    let mut slots = vec![(0, 0); items.len()];
    let mut shards = Vec::with_capacity(groups.len());
    for (fi, g) in groups.iter().enumerate() {
        let mut order = g.clone();
        order.sort_by(|&a, &b| {
            let (a, b) = (&items[a], &items[b]);
            st_rank(b.dtype)
                .cmp(&st_rank(a.dtype))
                .then(a.name.cmp(&b.name))
        });
        let entries: Vec<StEntry> = order
            .iter()
            .map(|&i| StEntry {
                index: i,
                key: &items[i].name,
                dtype: items[i].dtype,
                shape: &items[i].src.shape,
                bytes: items[i].bytes,
            })
            .collect();
        let fl = layout_safetensors(out, &entries)?;
        for (i, start, _) in fl.placed {
            slots[i] = (fi, start);
        }
        shards.push(Shard {
            name: shard_name(fi, groups.len()),
            header: fl.header,
            len: fl.len,
        });
    }
    Ok(ShardPlan { shards, slots })
}

/// `model.safetensors.index.json` as `transformers` writes it: `{"metadata": {"total_parameters": …,
/// "total_size": …}, "weight_map": {name: file}}`, `json.dumps(indent=2, sort_keys=True)` + newline.
pub(crate) fn index_json(items: &[Item], plan: &ShardPlan, out: &Path) -> Result<Vec<u8>> {
    let total_size: u64 = items.iter().map(|i| i.bytes).sum();
    let total_parameters: u64 = items
        .iter()
        .filter(|i| i.src.role != Role::Buffer)
        .map(|i| i.src.numel())
        .sum();
    let weight_map: BTreeMap<&str, &str> = items
        .iter()
        .zip(&plan.slots)
        .map(|(i, &(f, _))| (i.name.as_str(), plan.shards[f].name.as_str()))
        .collect();
    let j = serde_json::json!({
        "metadata": {"total_parameters": total_parameters, "total_size": total_size},
        "weight_map": weight_map,
    });
    let s = serde_json::to_string_pretty(&j).map_err(|e| StoreError::Format {
        path: out.join(INDEX_NAME),
        why: format!("cannot encode the index: {e}"),
    })?;
    let mut s = ascii_json(&s);
    s.push('\n');
    Ok(s.into_bytes())
}

/// Escapes non-ASCII characters as `\uXXXX` (surrogate pairs above U+FFFF), like Python's
/// `json.dumps` with its default `ensure_ascii=True`.
fn ascii_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_huggingface() {
        assert_eq!(parse_size("5GB"), Some(5_000_000_000));
        assert_eq!(parse_size("5gb"), Some(5_000_000_000));
        assert_eq!(parse_size(" 100MB "), Some(100_000_000));
        assert_eq!(parse_size("1.5KB"), Some(1500));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10B"), Some(10));
        for bad in ["", "GB", "5XB", "-1GB", "1e3", "99999999999999999999TB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn grouping_follows_huggingface_hub() {
        // The docstring's example: [6, 6, 2, 6, 2, 2] with max 10 → [6], [6+2], [6+2+2].
        assert_eq!(
            group(&[6, 6, 2, 6, 2, 2], 10),
            vec![vec![0], vec![1, 2], vec![3, 4, 5]]
        );
        // An oversized tensor gets its own shard before the open one, which stays open.
        assert_eq!(group(&[3, 20, 3, 3], 10), vec![vec![1], vec![0, 2, 3]]);
        assert_eq!(group(&[1, 1], 10), vec![vec![0, 1]]);
        assert_eq!(shard_name(0, 1), "model.safetensors");
        assert_eq!(shard_name(1, 3), "model-00002-of-00003.safetensors");
    }

    #[test]
    fn json_is_ascii_like_python() {
        assert_eq!(ascii_json("\"é😀\""), "\"\\u00e9\\ud83d\\ude00\"");
    }
}
