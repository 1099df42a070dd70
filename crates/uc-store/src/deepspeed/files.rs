//! Finding a DeepSpeed checkpoint's files: `latest`, the tag folder, and every rank's file by name.

use crate::error::{io_err, Result, StoreError};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The files of one DeepSpeed checkpoint tag, classified by name.
#[derive(Debug, Clone, Default)]
pub struct DsFiles {
    /// The tag folder (`.../global_step3`).
    pub dir: PathBuf,
    pub tag: String,
    /// `mp_rank_<m>_model_states.pt` by model-parallel rank.
    pub model: BTreeMap<u32, PathBuf>,
    /// `[bf16_]zero_pp_rank_<d>_mp_rank_<m>_optim_states.pt` by (m, d).
    pub optim: BTreeMap<(u32, u32), PathBuf>,
    /// ZeRO-3 `zero_pp_rank_<d>_mp_rank_<m>_model_states.pt` by (m, d).
    pub zero3_model: BTreeMap<(u32, u32), PathBuf>,
    /// Pipeline `layer_<i>-model_states.pt` / `layer_<i>-model_<t>-model_states.pt` by (layer, tp).
    pub layers: BTreeMap<(u32, u32), PathBuf>,
    /// AutoEP `layer_<l>_expert_<e>_mp_rank_<m>_model_states.pt` by (l, e, m).
    pub experts: BTreeMap<(u32, u32, u32), PathBuf>,
    /// Native DeepSpeed MoE without ZeRO: `expp_rank_<e>_mp_rank_<m>_optim_states.pt` by (m, e).
    pub expp: BTreeMap<(u32, u32), PathBuf>,
    /// True when optimizer files carry the `bf16_` prefix (BF16 optimizer).
    pub bf16: bool,
}

fn num(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Splits `a_<x>_b_<y>` style names: returns the numbers after each expected prefix.
fn fields(name: &str, parts: &[&str], suffix: &str) -> Option<Vec<u32>> {
    let mut rest = name.strip_suffix(suffix)?;
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        rest = rest.strip_prefix(p)?;
        let end = match parts.get(i + 1) {
            Some(next) => rest.find(next)?,
            None => rest.len(),
        };
        out.push(num(&rest[..end])?);
        rest = &rest[end..];
    }
    rest.is_empty().then_some(out)
}

impl DsFiles {
    /// Finds the checkpoint at `path`: a folder with a `latest` file (its tag is used unless `tag`
    /// is given) or a tag folder itself.
    pub fn discover(path: &Path, tag: Option<&str>) -> Result<DsFiles> {
        let dir = match tag {
            Some(t) => path.join(t),
            None if path.join("latest").is_file() => {
                let t = String::from_utf8(uc_torch::lazy::read(&path.join("latest"))?).map_err(
                    |_| io_err(path.join("latest"))(std::io::ErrorKind::InvalidData.into()),
                )?;
                path.join(t.trim())
            }
            None => path.to_path_buf(),
        };
        let mut f = DsFiles {
            tag: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: dir.clone(),
            ..DsFiles::default()
        };
        let entries = fs::read_dir(&dir).map_err(io_err(&dir))?;
        for e in entries {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if let Some(v) = fields(&name, &["mp_rank_"], "_model_states.pt") {
                f.model.insert(v[0], p);
            } else if let Some(v) =
                fields(&name, &["zero_pp_rank_", "_mp_rank_"], "_optim_states.pt")
            {
                f.optim.insert((v[1], v[0]), p);
            } else if let Some(v) = fields(
                &name,
                &["bf16_zero_pp_rank_", "_mp_rank_"],
                "_optim_states.pt",
            ) {
                f.bf16 = true;
                f.optim.insert((v[1], v[0]), p);
            } else if let Some(v) = fields(&name, &["expp_rank_", "_mp_rank_"], "_optim_states.pt")
            {
                f.expp.insert((v[1], v[0]), p);
            } else if let Some(v) =
                fields(&name, &["zero_pp_rank_", "_mp_rank_"], "_model_states.pt")
            {
                f.zero3_model.insert((v[1], v[0]), p);
            } else if let Some(v) = fields(
                &name,
                &["layer_", "_expert_", "_mp_rank_"],
                "_model_states.pt",
            ) {
                f.experts.insert((v[0], v[1], v[2]), p);
            } else if let Some(v) = fields(&name, &["layer_", "-model_"], "-model_states.pt") {
                f.layers.insert((v[0], v[1]), p);
            } else if let Some(v) = fields(&name, &["layer_"], "-model_states.pt") {
                f.layers.insert((v[0], 0), p);
            }
        }
        if f.model.is_empty() && f.zero3_model.is_empty() {
            return Err(StoreError::Format {
                path: dir,
                why: "no DeepSpeed model states (`mp_rank_*_model_states.pt` or `zero_pp_rank_*_mp_rank_*_model_states.pt`) here; \
                      point at the checkpoint folder holding `latest` or at a tag folder"
                    .into(),
            });
        }
        Ok(f)
    }

    /// The expected name of an optimizer file (for errors about missing ranks).
    pub fn optim_name(&self, m: u32, d: u32) -> PathBuf {
        let prefix = if self.bf16 { "bf16_" } else { "" };
        self.dir.join(format!(
            "{prefix}zero_pp_rank_{d}_mp_rank_{m:02}_optim_states.pt"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::fields;

    #[test]
    fn names() {
        assert_eq!(
            fields(
                "zero_pp_rank_1_mp_rank_01_optim_states.pt",
                &["zero_pp_rank_", "_mp_rank_"],
                "_optim_states.pt"
            ),
            Some(vec![1, 1])
        );
        assert_eq!(
            fields("layer_03-model_states.pt", &["layer_"], "-model_states.pt"),
            Some(vec![3])
        );
        assert_eq!(
            fields(
                "layer_0_expert_3_mp_rank_00_model_states.pt",
                &["layer_", "_expert_", "_mp_rank_"],
                "_model_states.pt"
            ),
            Some(vec![0, 3, 0])
        );
        assert_eq!(
            fields(
                "mp_rank_x_model_states.pt",
                &["mp_rank_"],
                "_model_states.pt"
            ),
            None
        );
    }
}
