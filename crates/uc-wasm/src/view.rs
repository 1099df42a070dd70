//! The diagrams: one tensor on its source layout, and source vs target with uc-merge's plan.
//!
//! Each returns the SVG text and a JSON summary (pieces, copy ops, bytes per rank) built from the
//! same pieces and plan the SVG shows.

use crate::dcp::Dcp;
use crate::doc::{Doc, Item};
use crate::draw::{box_attr, groups, Panel};
use crate::error::Result;
use crate::error::ViewError;
use crate::relayout::stages;
use crate::svg::{bytes, color, num, Svg};
use crate::topo::Topo;
use crate::topo::MAX_RANKS;
use serde_json::{json, Value as J};
use std::collections::BTreeMap;
use uc_merge::{plan, Piece, Plan, ReplicaPolicy};
use uc_schema::{ExpertStorage, Layout, TensorMeta};

/// Width of one panel, margins and gaps, in px.
const PW: f64 = 320.0;
const M: f64 = 16.0;
const GAP: f64 = 64.0;
const TOP: f64 = 58.0;
const MAX_H: f64 = 440.0;
const LINE: f64 = 16.0;
/// Rank lines listed under a panel before `…`.
const MAX_LINES: usize = 16;
/// Copy ops drawn for all target ranks; past it only the focused rank's are drawn.
pub const MAX_READS: usize = 4000;

/// An SVG diagram and its JSON summary.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub svg: String,
    pub summary: J,
}

/// Refuses layouts too large to draw: more than [`MAX_RANKS`] ranks or per-expert buffers, or sizes
/// whose byte count over all ranks does not fit in u64.
pub fn check_drawable(meta: &TensorMeta) -> Result<()> {
    let err = |why: String| ViewError::TooLarge {
        tensor: meta.name.clone(),
        why,
    };
    let ranks = meta.layout.ranks();
    if ranks > MAX_RANKS {
        return Err(err(format!(
            "{ranks} ranks (the viewer draws up to {MAX_RANKS})"
        )));
    }
    if let Some(e) = per_expert(&meta.layout) {
        if e > MAX_RANKS as u64 {
            return Err(err(format!("{e} per-expert buffers")));
        }
    }
    meta.stored_shape()
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(meta.dtype.size() as u64))
        .and_then(|n| n.checked_mul(ranks.max(1) as u64 + 1))
        .map(|_| ())
        .ok_or_else(|| {
            err(format!(
                "shape {:?} overflows a byte count",
                meta.stored_shape()
            ))
        })
}

/// Number of experts of a per-expert-buffer layout, if any.
fn per_expert(l: &Layout) -> Option<u64> {
    match l {
        Layout::Experts {
            num_experts,
            storage: ExpertStorage::PerExpert,
            ..
        } => Some(*num_experts),
        Layout::Nested { outer, inner } => {
            per_expert(outer).or_else(|| inner.iter().find_map(per_expert))
        }
        _ => None,
    }
}

/// The source pieces of an item: its DCP chunks by writer rank when known, else its layout's.
fn source_pieces(it: &Item, meta: &TensorMeta) -> Result<Vec<Piece>> {
    match &it.dcp {
        Some(d) => {
            meta.validate()?;
            Ok(d.pieces())
        }
        None => Ok(uc_merge::pieces(meta)?),
    }
}

/// The source panel heading of a tensor with DCP chunks:
/// `source · DCP, 4 ranks wrote files` / `mesh (2, 2) · (Shard(0), Shard(1)) · 4 chunks · mesh`.
fn dcp_heading(svg: &mut Svg, x: f64, d: &Dcp, meta: &TensorMeta) {
    svg.text(
        "text",
        &[
            ("class", "hdr".into()),
            ("x", num(x)),
            ("y", num(TOP - 24.0)),
        ],
        &format!("source · DCP, {} ranks wrote files", d.world),
    );
    let layout = if d.layout_fits {
        format!(" · layout {}", meta.layout.kind())
    } else {
        String::new()
    };
    svg.text(
        "text",
        &[
            ("class", "sm".into()),
            ("x", num(x)),
            ("y", num(TOP - 8.0)),
            ("data-kind", "dcp-mesh".into()),
        ],
        &format!("{}{layout}", d.label()),
    );
}

/// One line per chunk: `r2 · 16,0:16,32 · __2_0.distcp @6512 +3.2 KiB` (empty chunks too).
fn chunk_lines(d: &Dcp) -> Vec<(u32, u64, String)> {
    d.facts
        .chunks
        .iter()
        .map(|c| {
            let rank = c.rank.unwrap_or(0);
            let who = c
                .rank
                .map_or_else(|| "(not stored)".into(), |r| format!("r{r}"));
            let at = match &c.file {
                Some(f) => format!(" · {f} @{} +{}", c.offset, bytes(c.length)),
                None => String::new(),
            };
            let empty = if c.is_empty() { " (empty)" } else { "" };
            (
                rank,
                c.length,
                format!("{who} · {}{empty}{at}", box_attr(&crate::dcp::region(c))),
            )
        })
        .collect()
}

/// Pieces as JSON: `{"ranks": [..], "box": "off:len", "off": [..], "len": [..]}` per distinct box.
fn pieces_json(pieces: &[Piece]) -> J {
    J::Array(
        groups(pieces)
            .into_iter()
            .map(|(b, ps)| {
                let mut ranks: Vec<u32> = ps.iter().map(|p| p.rank).collect();
                ranks.dedup();
                json!({"ranks": ranks, "box": box_attr(&b), "off": b.off.to_vec(), "len": b.len.to_vec()})
            })
            .collect(),
    )
}

/// Elements each rank holds.
fn held(pieces: &[Piece]) -> BTreeMap<u32, u64> {
    let mut m = BTreeMap::new();
    for p in pieces {
        let e = m.entry(p.rank).or_insert(0u64);
        *e = e.saturating_add(p.global.numel());
    }
    m
}

/// Writes `■ rN  text` lines under a panel; returns the y after them.
fn rank_lines(svg: &mut Svg, x: f64, mut y: f64, side: &str, lines: &[(u32, u64, String)]) -> f64 {
    for (i, (rank, b, text)) in lines.iter().enumerate() {
        if i == MAX_LINES {
            svg.text(
                "text",
                &[("class", "sm".into()), ("x", num(x)), ("y", num(y + 11.0))],
                &format!("… {} more ranks", lines.len() - MAX_LINES),
            );
            return y + LINE;
        }
        svg.open(
            "g",
            &[
                ("data-kind", "bytes".into()),
                ("data-side", side.into()),
                ("data-rank", rank.to_string()),
                ("data-bytes", b.to_string()),
            ],
        );
        svg.leaf(
            "rect",
            &[
                ("x", num(x)),
                ("y", num(y + 2.0)),
                ("width", "11".into()),
                ("height", "11".into()),
                ("fill", color(*rank)),
            ],
        );
        svg.text(
            "text",
            &[
                ("class", "sm".into()),
                ("x", num(x + 16.0)),
                ("y", num(y + 11.5)),
            ],
            text,
        );
        svg.close("g");
        y += LINE;
    }
    y
}

/// Panel heading: `source · tp=2 … · fused q/k/v (dim 0)`.
fn heading(svg: &mut Svg, x: f64, side: &str, topo: &Topo, meta: &TensorMeta, stage: u32) {
    svg.text(
        "text",
        &[
            ("class", "hdr".into()),
            ("x", num(x)),
            ("y", num(TOP - 24.0)),
        ],
        &format!("{side} · {}", topo.label()),
    );
    svg.text(
        "text",
        &[("class", "sm".into()), ("x", num(x)), ("y", num(TOP - 8.0))],
        &format!(
            "{} · {} ranks{}",
            meta.layout.kind(),
            meta.layout.ranks(),
            if topo.pp > 1 {
                format!(" · pipeline stage {stage} of {}", topo.pp)
            } else {
                String::new()
            }
        ),
    );
}

/// Title line of a tensor: `name · role · dtype · [shape] · size`.
fn title(svg: &mut Svg, it: &Item) {
    let shape: Vec<String> = it.shape.iter().map(u64::to_string).collect();
    let n = it
        .shape
        .iter()
        .fold(1u64, |a, &d| a.saturating_mul(d))
        .saturating_mul(it.dtype.size() as u64);
    svg.text(
        "text",
        &[("class", "hdr".into()), ("x", num(M)), ("y", "16".into())],
        &format!(
            "{} · {} · {} · [{}] · {}",
            it.name,
            it.role.key(),
            it.dtype,
            shape.join(", "),
            bytes(n)
        ),
    );
}

/// One tensor on its source layout.
pub fn tensor_view(doc: &Doc, index: usize) -> Result<View> {
    let it = doc.item(index)?;
    let meta = it.source()?;
    check_drawable(meta)?;
    let pieces = source_pieces(it, meta)?;
    let boxes: Vec<_> = pieces.iter().map(|p| &p.global).collect();
    let panel = Panel::new(meta, &boxes, M, TOP, PW + 120.0, MAX_H);
    let esize = meta.dtype.size() as u64;
    let lines: Vec<(u32, u64, String)> = match &it.dcp {
        Some(d) => chunk_lines(d),
        None => held(&pieces)
            .into_iter()
            .map(|(r, n)| (r, n * esize, format!("r{r} holds {}", bytes(n * esize))))
            .collect(),
    };
    let h = TOP + panel.h + 12.0 + LINE * (lines.len().min(MAX_LINES + 1) as f64) + M;
    let mut svg = Svg::new(
        panel.w + 2.0 * M,
        h,
        &[
            ("data-view", "tensor".into()),
            ("data-tensor", it.name.clone()),
        ],
    );
    title(&mut svg, it);
    let stage = stages(&doc.items, doc.source.pp)[index];
    match &it.dcp {
        Some(d) => dcp_heading(&mut svg, M, d, meta),
        None => heading(&mut svg, M, "source", &doc.source, meta, stage),
    }
    panel.open(&mut svg, "source", meta);
    crate::draw::tensor(&mut svg, &panel, meta, &pieces);
    svg.close("g");
    rank_lines(&mut svg, M, TOP + panel.h + 8.0, "source", &lines);
    let summary = json!({
        "tensor": it.name, "role": it.role.key(), "dtype": it.dtype.name(),
        "shape": it.shape, "stored_shape": meta.stored_shape(),
        "layout": meta.layout.kind(), "ranks": meta.layout.ranks(),
        "pieces": pieces_json(&pieces),
        "held_bytes": held(&pieces).into_iter().map(|(r, n)| json!([r, n * esize])).collect::<Vec<_>>(),
        "dcp": it.dcp.as_ref().map(Dcp::summary),
    });
    Ok(View {
        svg: svg.finish(),
        summary,
    })
}

/// The read cells of the plan drawn over one side of the diagram.
fn reads(svg: &mut Svg, panel: &Panel, p: &Plan, side: &str, focus: Option<u32>, esize: u64) {
    let all = p.ops.len() <= MAX_READS;
    for op in &p.ops {
        let (src, dst) = (op.srcs[0].rank, op.dst.rank);
        let on = focus.is_none_or(|f| f == dst);
        if !all && !on {
            continue;
        }
        let replicas: Vec<String> = op.srcs.iter().map(|s| s.rank.to_string()).collect();
        svg.open(
            "g",
            &[
                ("data-kind", "read".into()),
                ("class", if on { "read on" } else { "read" }.into()),
                ("data-side", side.into()),
                ("data-src-rank", src.to_string()),
                ("data-replicas", replicas.join(" ")),
                ("data-dst-rank", dst.to_string()),
                ("data-box", box_attr(&op.global)),
                ("data-bytes", (op.numel() * esize).to_string()),
            ],
        );
        svg.text(
            "title",
            &[],
            &format!(
                "target r{dst} reads {} from source r{src}",
                box_attr(&op.global)
            ),
        );
        if let Some(r) = panel.rects(svg, &op.global) {
            let t = if side == "source" {
                format!("→r{dst}")
            } else {
                format!("←r{src}")
            };
            let fs = (r.3 * 0.8).clamp(6.0, 12.0);
            svg.text(
                "text",
                &[
                    ("x", num(r.0 + r.2 - 4.0)),
                    ("y", num(r.1 + r.3 / 2.0)),
                    ("font-size", num(fs)),
                ],
                &t,
            );
        }
        svg.close("g");
    }
}

/// Source vs target side by side, with what each target rank reads from each source rank.
///
/// `focus` picks the target rank whose reads are shown (`None`: all); the others are in the SVG
/// with class `read` (hidden) so a page can switch without redrawing.
pub fn reshard_view(
    doc: &Doc,
    index: usize,
    target_topo: &Topo,
    target: &TensorMeta,
    focus: Option<u32>,
) -> Result<View> {
    let it = doc.item(index)?;
    let source = it.source()?;
    check_drawable(source)?;
    check_drawable(target)?;
    let src = source_pieces(it, source)?;
    let dst = uc_merge::pieces(target)?;
    let p = plan(&it.name, &it.shape, &src, &dst, ReplicaPolicy::First)?;
    let esize = source.dtype.size() as u64;
    let sb: Vec<_> = src.iter().map(|q| &q.global).collect();
    let db: Vec<_> = dst.iter().map(|q| &q.global).collect();
    let left = Panel::new(source, &sb, M, TOP, PW, MAX_H);
    let right = Panel::new(target, &db, M + PW + GAP, TOP, PW, MAX_H);

    let read = p.read_per_source();
    let written = p.written_per_target();
    let mut by_focus: BTreeMap<u32, u64> = BTreeMap::new();
    let mut matrix: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for op in &p.ops {
        *matrix.entry((op.dst.rank, op.srcs[0].rank)).or_insert(0) += op.numel() * esize;
        if focus == Some(op.dst.rank) {
            *by_focus.entry(op.srcs[0].rank).or_insert(0) += op.numel() * esize;
        }
    }
    let src_ranks: Vec<u32> = held(&src).into_keys().collect();
    let src_lines: Vec<(u32, u64, String)> = src_ranks
        .iter()
        .map(|&r| {
            let b = read.get(&r).copied().unwrap_or(0) * esize;
            let f = match (focus, by_focus.get(&r)) {
                (Some(t), Some(x)) => format!(" ({} by r{t})", bytes(*x)),
                _ => String::new(),
            };
            (r, b, format!("r{r}: {} read from it{f}", bytes(b)))
        })
        .collect();
    let dst_lines: Vec<(u32, u64, String)> = written
        .iter()
        .map(|(&r, &n)| (r, n * esize, format!("r{r} reads {}", bytes(n * esize))))
        .collect();
    let rows = src_lines.len().max(dst_lines.len()).min(MAX_LINES + 1) as f64;
    let ph = left.h.max(right.h);
    let w = 2.0 * PW + GAP + 2.0 * M;
    let h = TOP + ph + 12.0 + LINE * rows + M;
    let mut svg = Svg::new(
        w,
        h,
        &[
            ("data-view", "reshard".into()),
            ("data-tensor", it.name.clone()),
            (
                "data-focus",
                focus.map(|f| f.to_string()).unwrap_or_default(),
            ),
        ],
    );
    title(&mut svg, it);
    let (s0, s1) = (
        stages(&doc.items, doc.source.pp)[index],
        stages(&doc.items, target_topo.pp)[index],
    );
    match &it.dcp {
        Some(d) => dcp_heading(&mut svg, left.x, d, source),
        None => heading(&mut svg, left.x, "source", &doc.source, source, s0),
    }
    heading(&mut svg, right.x, "target", target_topo, target, s1);
    left.open(&mut svg, "source", source);
    crate::draw::tensor(&mut svg, &left, source, &src);
    reads(&mut svg, &left, &p, "source", focus, esize);
    svg.close("g");
    right.open(&mut svg, "target", target);
    crate::draw::tensor(&mut svg, &right, target, &dst);
    reads(&mut svg, &right, &p, "target", focus, esize);
    svg.close("g");
    // An arrow between the panels.
    let ay = TOP + ph / 2.0;
    svg.leaf(
        "path",
        &[
            (
                "d",
                format!(
                    "M{} {ay}h{}m-8 -6l8 6l-8 6",
                    num(M + PW + 10.0),
                    num(GAP - 20.0)
                ),
            ),
            ("fill", "none".into()),
            ("stroke", "#555".into()),
            ("stroke-width", "2".into()),
        ],
    );
    rank_lines(&mut svg, left.x, TOP + ph + 8.0, "source", &src_lines);
    rank_lines(&mut svg, right.x, TOP + ph + 8.0, "target", &dst_lines);

    let ops: Vec<J> = p
        .ops
        .iter()
        .map(|op| {
            json!({"src": op.srcs[0].rank, "replicas": op.srcs.iter().map(|s| s.rank).collect::<Vec<_>>(),
                   "dst": op.dst.rank, "box": box_attr(&op.global), "bytes": op.numel() * esize})
        })
        .collect();
    let pairs = |m: BTreeMap<u32, u64>| -> Vec<J> {
        m.into_iter().map(|(r, n)| json!([r, n * esize])).collect()
    };
    let summary = json!({
        "tensor": it.name, "role": it.role.key(), "dtype": it.dtype.name(), "elem_bytes": esize,
        "shape": it.shape,
        "focus": focus,
        "source": {"topology": doc.source, "layout": source.layout.kind(), "ranks": source.layout.ranks(),
                   "stored_shape": source.stored_shape(), "pieces": pieces_json(&src)},
        "target": {"topology": target_topo, "layout": target.layout.kind(), "ranks": target.layout.ranks(),
                   "stored_shape": target.stored_shape(), "pieces": pieces_json(&dst)},
        "ops": ops,
        "reads_drawn": if p.ops.len() <= MAX_READS { "all" } else { "focus" },
        "read_bytes": pairs(read),
        "written_bytes": pairs(written),
        "matrix": matrix.into_iter().map(|((d, s), b)| json!({"dst": d, "src": s, "bytes": b})).collect::<Vec<_>>(),
        "dcp": it.dcp.as_ref().map(Dcp::summary),
    });
    Ok(View {
        svg: svg.finish(),
        summary,
    })
}
