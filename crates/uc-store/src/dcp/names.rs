//! What a torch DCP flat key holds: a model tensor, a per-parameter optimizer state, a param-group
//! hyper-parameter, or something else — from `planner_data` when written, else from the key text.
//!
//! `get_state_dict` names model tensors by FQN and optimizer state as `state.<fqn>.<state>` and
//! `param_groups.<g>.<hp>`; saved as `{"model": msd, "optim": osd}` they gain `model.` / `optim.`.

use uc_torch::dcp_metadata::PathSeg;

/// The meaning of one flat key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// A model tensor (parameter or buffer) by FQN.
    Model(String),
    /// `state.<fqn>.<state>`: a per-parameter optimizer state (`exp_avg`, `exp_avg_sq`, `step`, …).
    OptimState { fqn: String, state: String },
    /// `param_groups.<g>.<hp>`: a hyper-parameter of group `g` (`params` lists the group's FQNs).
    ParamGroup { group: usize, hp: String },
    /// Anything else (trainer state, scheduler, …), kept by its flat key.
    Other,
}

/// How the keys of a checkpoint without `planner_data` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `model.<fqn>` and `optim.state…` / `optim.param_groups…`.
    Nested,
    /// Bare FQNs and `state…` / `param_groups…`.
    Flat,
}

impl KeyStyle {
    /// Nested when some key starts with `optim.` and every key starts with `model.` or `optim.`.
    pub fn guess<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> KeyStyle {
        let nested = keys.clone().any(|k| k.starts_with("optim."))
            && keys
                .into_iter()
                .all(|k| k.starts_with("model.") || k.starts_with("optim."));
        if nested {
            KeyStyle::Nested
        } else {
            KeyStyle::Flat
        }
    }
}

/// Classifies a key by its `planner_data` path.
pub fn from_path(path: &[PathSeg]) -> KeyKind {
    use PathSeg::{Index, Key};
    let rest = match path {
        [Key(m), rest @ ..] if m == "optim" && !rest.is_empty() => rest,
        [Key(m), Key(fqn)] if m == "model" => return KeyKind::Model(fqn.clone()),
        [Key(fqn)] => return KeyKind::Model(fqn.clone()),
        other => other,
    };
    match rest {
        [Key(s), Key(fqn), Key(state)] if s == "state" => KeyKind::OptimState {
            fqn: fqn.clone(),
            state: state.clone(),
        },
        [Key(g), Index(i), Key(hp)] if g == "param_groups" && *i >= 0 => KeyKind::ParamGroup {
            group: *i as usize,
            hp: hp.clone(),
        },
        _ => KeyKind::Other,
    }
}

/// Classifies a key by its text.
pub fn from_text(key: &str, style: KeyStyle) -> KeyKind {
    let optim = match style {
        KeyStyle::Nested => match key.strip_prefix("model.") {
            Some(fqn) => return KeyKind::Model(fqn.to_string()),
            None => key.strip_prefix("optim."),
        },
        KeyStyle::Flat => Some(key),
    };
    let Some(o) = optim else {
        return KeyKind::Other;
    };
    if let Some((fqn, state)) = o.strip_prefix("state.").and_then(|r| r.rsplit_once('.')) {
        return KeyKind::OptimState {
            fqn: fqn.to_string(),
            state: state.to_string(),
        };
    }
    if let Some((g, hp)) = o
        .strip_prefix("param_groups.")
        .and_then(|r| r.split_once('.'))
    {
        if let Ok(group) = g.parse::<usize>() {
            return KeyKind::ParamGroup {
                group,
                hp: hp.to_string(),
            };
        }
    }
    match style {
        KeyStyle::Flat => KeyKind::Model(key.to_string()),
        KeyStyle::Nested => KeyKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_path_agree() {
        let k = |s: &str| PathSeg::Key(s.into());
        assert_eq!(
            from_path(&[k("optim"), k("state"), k("a.w"), k("exp_avg")]),
            from_text("optim.state.a.w.exp_avg", KeyStyle::Nested)
        );
        assert_eq!(
            from_text("state.a.w.step", KeyStyle::Flat),
            KeyKind::OptimState {
                fqn: "a.w".into(),
                state: "step".into()
            }
        );
        assert_eq!(
            from_path(&[k("optim"), k("param_groups"), PathSeg::Index(1), k("lr")]),
            KeyKind::ParamGroup {
                group: 1,
                hp: "lr".into()
            }
        );
        assert_eq!(
            from_text("model.a.w", KeyStyle::Nested),
            KeyKind::Model("a.w".into())
        );
        assert_eq!(
            from_text("model.a.w", KeyStyle::Flat),
            KeyKind::Model("model.a.w".into())
        );
        assert_eq!(from_text("sched.x", KeyStyle::Nested), KeyKind::Other);
    }
}
