//! One tensor drawn as a panel: its global (stored) shape folded to 2-D, cut into pieces coloured by
//! rank, with sub-parameter outlines, hatched padding and expert blocks.
//!
//! Every element carries data attributes: `data-kind` (`panel`, `piece`, `label`, `padding`,
//! `subparam`, `expert`), `data-rank` / `data-ranks`, and `data-box` = `off,…:len,…` in elements.

use crate::cut::Cut;
use crate::fold::{Cell, Fold};
use crate::svg::{color, num, ranks_label, Svg};
use uc_merge::{layout_pieces, Piece, Region};
use uc_schema::{Layout, TensorMeta};

/// `off,…:len,…` of a box.
pub fn box_attr(r: &Region) -> String {
    let j = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    format!("{}:{}", j(&r.off), j(&r.len))
}

/// Height of a 1-D bar, and the smallest and default largest panel heights.
pub const BAR_H: f64 = 36.0;
const MIN_H: f64 = 60.0;

/// Where a tensor is drawn and how it is folded.
#[derive(Debug, Clone)]
pub struct Panel {
    pub fold: Fold,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Panel {
    /// A panel of width `w` at `(x, y)` for the stored shape of `meta`, folded to draw `boxes` simply.
    pub fn new(meta: &TensorMeta, boxes: &[&Region], x: f64, y: f64, w: f64, max_h: f64) -> Panel {
        let fold = Fold::new(meta.stored_shape(), boxes);
        let h = if fold.rows <= 1 {
            BAR_H
        } else {
            (w * fold.rows as f64 / fold.cols as f64).clamp(MIN_H, max_h.max(MIN_H))
        };
        Panel { fold, x, y, w, h }
    }

    /// Pixel rectangle `(x, y, w, h)` of a grid cell.
    pub fn rect(&self, c: &Cell) -> (f64, f64, f64, f64) {
        let sx = self.w / self.fold.cols as f64;
        let sy = self.h / self.fold.rows as f64;
        (
            self.x + c.col as f64 * sx,
            self.y + c.row as f64 * sy,
            c.cols as f64 * sx,
            c.rows as f64 * sy,
        )
    }

    /// Writes `<rect>`s for a box; returns the largest one (for a label), if any.
    pub fn rects(&self, svg: &mut Svg, b: &Region) -> Option<(f64, f64, f64, f64)> {
        let (cells, approx) = self.fold.cells(b);
        let mut best: Option<(f64, f64, f64, f64)> = None;
        for c in &cells {
            let r = self.rect(c);
            let mut a = vec![
                ("x", num(r.0)),
                ("y", num(r.1)),
                ("width", num(r.2)),
                ("height", num(r.3)),
            ];
            if approx {
                a.push(("data-approx", "1".into()));
            }
            svg.leaf("rect", &a);
            if best.is_none_or(|b| r.2 * r.3 > b.2 * b.3) {
                best = Some(r);
            }
        }
        best
    }

    /// Opens the panel group and draws its frame.
    pub fn open(&self, svg: &mut Svg, side: &str, meta: &TensorMeta) {
        let shape = |s: &[u64]| s.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        svg.open(
            "g",
            &[
                ("data-kind", "panel".into()),
                ("data-side", side.into()),
                ("data-x", num(self.x)),
                ("data-y", num(self.y)),
                ("data-w", num(self.w)),
                ("data-h", num(self.h)),
                ("data-rows", self.fold.rows.to_string()),
                ("data-cols", self.fold.cols.to_string()),
                ("data-fold", self.fold.k.to_string()),
                ("data-shape", shape(meta.stored_shape())),
                ("data-logical", shape(&meta.shape)),
            ],
        );
        svg.leaf(
            "rect",
            &[
                ("class", "frame".into()),
                ("x", num(self.x)),
                ("y", num(self.y)),
                ("width", num(self.w)),
                ("height", num(self.h)),
            ],
        );
    }
}

/// A text label centred in `r`, sized to fit `text` (6–14 px).
pub fn label(svg: &mut Svg, r: (f64, f64, f64, f64), text: &str, attrs: &[(&str, String)]) {
    let chars = text.chars().count().max(1) as f64;
    let fs = (r.3 * 0.7).min(r.2 / (chars * 0.62)).clamp(6.0, 14.0);
    let mut a = vec![
        ("x", num(r.0 + r.2 / 2.0)),
        ("y", num(r.1 + r.3 / 2.0)),
        ("font-size", num(fs)),
    ];
    a.extend_from_slice(attrs);
    svg.text("text", &a, text);
}

/// Pieces grouped by identical box (replicas share one group), in box order.
pub fn groups(pieces: &[Piece]) -> Vec<(Region, Vec<&Piece>)> {
    let mut g: Vec<(Region, Vec<&Piece>)> = Vec::new();
    let mut sorted: Vec<&Piece> = pieces.iter().filter(|p| !p.global.is_empty()).collect();
    sorted.sort_by(|a, b| (&a.global, a.rank, a.buffer).cmp(&(&b.global, b.rank, b.buffer)));
    for p in sorted {
        match g.last_mut() {
            Some((r, v)) if *r == p.global => v.push(p),
            _ => g.push((p.global.clone(), vec![p])),
        }
    }
    g
}

/// True when a ZeRO partition is part of the layout.
fn has_zero(l: &Layout) -> bool {
    match l {
        Layout::ZeroFlat { .. } | Layout::Zero3 { .. } => true,
        Layout::Nested { outer, inner } => has_zero(outer) || inner.iter().any(has_zero),
        _ => false,
    }
}

/// Draws the pieces of `meta` (from [`uc_merge::pieces`]) with all overlays, inside an open panel.
pub fn tensor(svg: &mut Svg, p: &Panel, meta: &TensorMeta, pieces: &[Piece]) {
    let zero = has_zero(&meta.layout);
    for (b, ps) in groups(pieces) {
        let mut ranks: Vec<u32> = ps.iter().map(|p| p.rank).collect();
        ranks.dedup();
        let first = ps[0];
        let text = ranks_label(&ranks);
        let title = format!(
            "{text}: box {} · local offset {} in buffer {}",
            box_attr(&b),
            first.offset,
            first.buffer
        );
        let mut a = vec![
            ("data-kind", "piece".into()),
            ("class", "pc".into()),
            ("data-rank", first.rank.to_string()),
            (
                "data-ranks",
                ranks
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("data-box", box_attr(&b)),
            ("data-buffer", first.buffer.to_string()),
            ("data-offset", first.offset.to_string()),
            ("fill", color(first.rank)),
        ];
        if zero {
            a.push(("data-zero", "1".into()));
        }
        svg.open("g", &a);
        svg.text("title", &[], &title);
        if let Some(r) = p.rects(svg, &b) {
            label(
                svg,
                r,
                &text,
                &[
                    ("data-kind", "label".into()),
                    ("data-rank", first.rank.to_string()),
                ],
            );
        }
        svg.close("g");
    }
    padding(svg, p, meta);
    overlays(svg, p, meta);
}

/// Hatched padding boxes (stored but not logical), tagged with the rank that stores them.
fn padding(svg: &mut Svg, p: &Panel, meta: &TensorMeta) {
    let Some(stored) = meta.padded_shape.as_ref() else {
        return;
    };
    if stored.len() != meta.shape.len() {
        return;
    }
    let mut raw = Vec::new();
    layout_pieces(stored, &meta.layout, &mut raw);
    for d in 0..stored.len() {
        if stored[d] <= meta.shape[d] {
            continue;
        }
        let mut pad = Region::full(stored);
        pad.off[d] = meta.shape[d];
        pad.len[d] = stored[d] - meta.shape[d];
        let mut owners: Vec<(Region, u32)> = raw
            .iter()
            .filter_map(|q| q.global.intersect(&pad).map(|i| (i, q.rank)))
            .collect();
        owners.sort();
        owners.dedup_by(|a, b| a.0 == b.0);
        if owners.is_empty() {
            owners.push((pad, u32::MAX));
        }
        for (b, rank) in owners {
            let r = if rank == u32::MAX {
                String::new()
            } else {
                rank.to_string()
            };
            svg.open(
                "g",
                &[
                    ("data-kind", "padding".into()),
                    ("class", "pad".into()),
                    ("data-rank", r.clone()),
                    ("data-box", box_attr(&b)),
                ],
            );
            svg.text(
                "title",
                &[],
                &format!(
                    "padding {} (stored on r{r}, belongs to no element)",
                    box_attr(&b)
                ),
            );
            if let Some(rr) = p.rects(svg, &b) {
                label(svg, rr, "pad", &[]);
            }
            svg.close("g");
        }
    }
}

/// Sub-parameter outlines (Q/K/V) and expert blocks.
fn overlays(svg: &mut Svg, p: &Panel, meta: &TensorMeta) {
    let stored = meta.stored_shape();
    match Cut::of(&meta.layout) {
        Cut::Fused { dim, subs } if dim < stored.len() => {
            let mut start = 0;
            for s in subs {
                let mut b = Region::full(stored);
                b.off[dim] = start;
                b.len[dim] = s.size;
                start += s.size;
                svg.open(
                    "g",
                    &[
                        ("data-kind", "subparam".into()),
                        ("class", "sub".into()),
                        ("data-sub", s.name.clone()),
                        ("data-box", box_attr(&b)),
                    ],
                );
                if let Some(r) = p.rects(svg, &b) {
                    svg.text(
                        "text",
                        &[
                            ("data-kind", "sublabel".into()),
                            ("x", num(r.0 + 4.0)),
                            ("y", num(r.1 + 14.0)),
                        ],
                        &s.name,
                    );
                }
                svg.close("g");
            }
        }
        Cut::Experts { num_experts, .. } if !stored.is_empty() && num_experts == stored[0] => {
            for e in 0..num_experts.min(1024) {
                let mut b = Region::full(stored);
                b.off[0] = e;
                b.len[0] = 1;
                svg.open(
                    "g",
                    &[
                        ("data-kind", "expert".into()),
                        ("class", "exp".into()),
                        ("data-expert", e.to_string()),
                        ("data-box", box_attr(&b)),
                    ],
                );
                if let Some(r) = p.rects(svg, &b) {
                    svg.text(
                        "text",
                        &[("x", num(r.0 + 3.0)), ("y", num(r.1 + 11.0))],
                        &format!("e{e}"),
                    );
                }
                svg.close("g");
            }
        }
        _ => {}
    }
}
