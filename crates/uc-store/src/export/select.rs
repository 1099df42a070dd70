//! Which tensors an export writes, under which names and in which dtype.

use super::ExportOptions;
use crate::error::{Result, StoreError};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use uc_schema::{DType, Role, TensorMeta};

/// One tensor to export: where it comes from, its output name, dtype and size.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// The tensor as the source lists it (full logical shape).
    pub src: TensorMeta,
    /// Name in the safetensors files and the index.
    pub name: String,
    /// Output element type.
    pub dtype: DType,
    /// Output data bytes.
    pub bytes: u64,
}

/// The name a checkpoint's tensor is exported under before `--rename`: the checkpoint's own name,
/// less the `model.` prefix PyTorch DCP state dicts (`{"model": …, "optim": …}`) put on weights.
pub fn weight_name<'a>(format: &str, name: &'a str) -> &'a str {
    match format {
        "dcp" => name.strip_prefix("model.").unwrap_or(name),
        _ => name,
    }
}

/// Preference among a parameter's tensors: fp32 master, else working weights, else a buffer;
/// `None` for optimizer state (never exported).
fn preference(role: &Role) -> Option<u8> {
    match role {
        Role::Fp32Master => Some(0),
        Role::Param => Some(1),
        Role::Buffer => Some(2),
        _ => None,
    }
}

/// One tensor per name (the preferred role), in the source's order (DeepSpeed: buffers, then frozen
/// parameters, then trained ones, as `zero_to_fp32` orders them), filtered, renamed and typed.
/// Names in `skip` (aliases of other tensors) are left out.
pub(crate) fn select(
    metas: &[TensorMeta],
    format: &str,
    skip: &BTreeSet<String>,
    opts: &ExportOptions,
    input: &Path,
) -> Result<Vec<Item>> {
    let mut best: HashMap<&str, usize> = HashMap::new();
    let mut order = Vec::new();
    for (i, m) in metas.iter().enumerate() {
        let Some(p) = preference(&m.role) else {
            continue;
        };
        if skip.contains(&m.name) {
            continue;
        }
        match best.get(m.name.as_str()) {
            Some(&j) if preference(&metas[j].role) <= Some(p) => {}
            Some(_) => {
                best.insert(&m.name, i);
            }
            None => {
                best.insert(&m.name, i);
                order.push(m.name.as_str());
            }
        }
    }
    let candidates = order.len();
    let mut items = Vec::with_capacity(candidates);
    let mut taken: HashMap<String, String> = HashMap::new();
    for name in order {
        let m = &metas[best[name]];
        let base = weight_name(format, &m.name);
        if opts.only.as_ref().is_some_and(|re| !re.is_match(base)) {
            continue;
        }
        let out = opts.rename.iter().fold(base.to_string(), |n, (re, to)| {
            re.replace_all(&n, to.as_str()).into_owned()
        });
        let bad = |why: String| StoreError::BadTensor {
            path: input.to_path_buf(),
            tensor: m.name.clone(),
            why,
        };
        if out.is_empty() {
            return Err(bad("--rename leaves an empty name".into()));
        }
        if let Some(other) = taken.insert(out.clone(), m.name.clone()) {
            return Err(bad(format!(
                "exported as `{out}`, the name `{other}` gets too"
            )));
        }
        let dtype = if m.dtype.is_float() {
            opts.dtype
        } else {
            m.dtype
        };
        let bytes = m
            .shape
            .iter()
            .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {:?} overflows u64 bytes", m.shape)))?;
        items.push(Item {
            src: m.clone(),
            name: out,
            dtype,
            bytes,
        });
    }
    if format == "deepspeed" {
        // zero_to_fp32's state-dict order (it decides the sharding): buffers, frozen, trained.
        items.sort_by_key(|i| match i.src.role {
            Role::Buffer => 0,
            Role::Param => 1,
            _ => 2,
        });
    }
    if items.is_empty() {
        let why = match &opts.only {
            Some(re) => format!("--only `{re}` matches none of the {candidates} weights"),
            None => "the checkpoint holds no weights to export".into(),
        };
        return Err(StoreError::Format {
            path: input.to_path_buf(),
            why,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn m(n: &str, dtype: DType, role: Role) -> TensorMeta {
        TensorMeta::new(n, dtype, vec![2, 3], role)
    }

    #[test]
    fn prefers_masters_and_skips_moments() {
        let metas = vec![
            m("model.a", DType::BF16, Role::Param),
            m("model.a", DType::F32, Role::Fp32Master),
            m("model.a", DType::F32, Role::ExpAvg),
            m("model.b", DType::I64, Role::Buffer),
            m("c", DType::F32, Role::ExpAvgSq),
        ];
        let opts = ExportOptions {
            dtype: DType::BF16,
            ..Default::default()
        };
        let items = select(&metas, "dcp", &BTreeSet::new(), &opts, Path::new("x")).unwrap();
        let got: Vec<_> = items
            .iter()
            .map(|i| (i.name.as_str(), i.src.role.clone(), i.dtype, i.bytes))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", Role::Fp32Master, DType::BF16, 12),
                ("b", Role::Buffer, DType::I64, 48),
            ]
        );
        let items = select(&metas, "deepspeed", &BTreeSet::new(), &opts, Path::new("x")).unwrap();
        let names: Vec<_> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, vec!["model.b", "model.a"]); // zero_to_fp32's order: buffers first
        let skip = BTreeSet::from(["model.b".to_string()]);
        let items = select(&metas, "deepspeed", &skip, &opts, Path::new("x")).unwrap();
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn only_and_rename() {
        let metas = vec![
            m("layers.0.w", DType::F32, Role::Fp32Master),
            m("layers.1.w", DType::F32, Role::Fp32Master),
            m("head.w", DType::F32, Role::Fp32Master),
        ];
        let opts = ExportOptions {
            only: Some(Regex::new(r"^layers\.").unwrap()),
            rename: vec![(
                Regex::new(r"^layers\.(\d+)\.").unwrap(),
                "model.layers.$1.".into(),
            )],
            ..Default::default()
        };
        let items = select(&metas, "deepspeed", &BTreeSet::new(), &opts, Path::new("x")).unwrap();
        let names: Vec<_> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, vec!["model.layers.0.w", "model.layers.1.w"]);

        let clash = ExportOptions {
            rename: vec![(Regex::new(r"\d").unwrap(), "N".into())],
            ..Default::default()
        };
        let e = select(
            &metas,
            "deepspeed",
            &BTreeSet::new(),
            &clash,
            Path::new("x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("layers.N.w"), "{e}");
        let none = ExportOptions {
            only: Some(Regex::new("nothing").unwrap()),
            ..Default::default()
        };
        let e = select(&metas, "deepspeed", &BTreeSet::new(), &none, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("matches none of the 3"), "{e}");
    }
}
