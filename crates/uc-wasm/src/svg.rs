//! A tiny deterministic SVG writer: escaped attributes, fixed number formatting, rank colours.

use std::fmt::Write;

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A coordinate with at most two decimals and no trailing zeros (`12`, `3.5`, `0.25`).
pub fn num(x: f64) -> String {
    let x = if x.is_finite() { x } else { 0.0 };
    let s = format!("{:.2}", (x * 100.0).round() / 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match s {
        "-0" | "" => "0".into(),
        s => s.into(),
    }
}

/// Fill colour of a rank: ten Tableau colours, then golden-angle hues.
pub fn color(rank: u32) -> String {
    const P: [&str; 10] = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac",
    ];
    match P.get(rank as usize) {
        Some(c) => (*c).into(),
        None => format!(
            "hsl({},55%,58%)",
            num((rank as f64 * 137.508).rem_euclid(360.0))
        ),
    }
}

/// Ranks as a short label: `r0`, `r0,r2`, `r0–r3`, `r0,r2,…(8)`.
pub fn ranks_label(ranks: &[u32]) -> String {
    match ranks {
        [] => String::new(),
        [r] => format!("r{r}"),
        _ if ranks.len() > 2 && ranks.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("r{}–r{}", ranks[0], ranks[ranks.len() - 1])
        }
        _ if ranks.len() <= 3 => ranks
            .iter()
            .map(|r| format!("r{r}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => format!("r{},r{},…({})", ranks[0], ranks[1], ranks.len()),
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3 MiB`.
pub fn bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < U.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{} {}", num((v * 10.0).round() / 10.0), U[u])
    }
}

/// An SVG document being written.
#[derive(Debug, Default)]
pub struct Svg {
    out: String,
}

/// Attribute list: `(name, value)`; values are escaped on output.
pub type Attrs<'a> = &'a [(&'a str, String)];

impl Svg {
    /// Starts `<svg>` of the given size with the shared styles and the padding hatch.
    pub fn new(w: f64, h: f64, attrs: Attrs) -> Svg {
        let mut s = Svg::default();
        let mut all: Vec<(&str, String)> = vec![
            ("xmlns", "http://www.w3.org/2000/svg".into()),
            ("class", "uc".into()),
            ("width", num(w)),
            ("height", num(h)),
            ("viewBox", format!("0 0 {} {}", num(w), num(h))),
        ];
        all.extend_from_slice(attrs);
        s.open("svg", &all);
        s.out.push_str(STYLE);
        s
    }

    /// `<tag attrs>`.
    pub fn open(&mut self, tag: &str, attrs: Attrs) {
        self.tag(tag, attrs, false);
    }

    /// `</tag>`.
    pub fn close(&mut self, tag: &str) {
        let _ = write!(self.out, "</{tag}>");
    }

    /// `<tag attrs/>`.
    pub fn leaf(&mut self, tag: &str, attrs: Attrs) {
        self.tag(tag, attrs, true);
    }

    /// `<tag attrs>text</tag>`.
    pub fn text(&mut self, tag: &str, attrs: Attrs, text: &str) {
        self.tag(tag, attrs, false);
        self.out.push_str(&esc(text));
        self.close(tag);
    }

    fn tag(&mut self, tag: &str, attrs: Attrs, empty: bool) {
        let _ = write!(self.out, "<{tag}");
        for (k, v) in attrs {
            let _ = write!(self.out, " {k}=\"{}\"", esc(v));
        }
        self.out.push_str(if empty { "/>" } else { ">" });
    }

    /// Closes `<svg>` and returns the text.
    pub fn finish(mut self) -> String {
        self.close("svg");
        self.out
    }
}

/// Styles and the hatch pattern every diagram shares (inline, so a lone SVG file looks the same;
/// a page of many diagrams may hold them once).
pub const STYLE: &str = concat!(
    "<defs><pattern id=\"uc-hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" ",
    "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#f4f4f4\"/>",
    "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#888\" stroke-width=\"2\"/></pattern>",
    "<pattern id=\"uc-read\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\" ",
    "patternTransform=\"rotate(-45)\"><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"5\" stroke=\"#000\" ",
    "stroke-opacity=\"0.45\" stroke-width=\"1.5\"/></pattern></defs>",
    "<style>",
    ".uc text{font-family:system-ui,sans-serif;fill:#222}",
    ".uc .frame{fill:#fafafa;stroke:#333;stroke-width:1}",
    ".uc .pc rect{stroke:#fff;stroke-width:0.6;fill-opacity:0.92}",
    ".uc .pc text{fill:#111;text-anchor:middle;dominant-baseline:central;pointer-events:none}",
    ".uc .pad rect{fill:url(#uc-hatch);stroke:#888;stroke-width:0.5}",
    ".uc .pad text{fill:#555;text-anchor:middle;dominant-baseline:central}",
    ".uc .sub rect{fill:none;stroke:#111;stroke-width:2;stroke-dasharray:6 3}",
    ".uc .sub text{font-weight:700;font-size:12px}",
    ".uc .exp rect{fill:none;stroke:#222;stroke-width:1.5}",
    ".uc .exp text{font-size:10px;fill:#222}",
    ".uc .read{display:none}",
    ".uc .read.on{display:inline}",
    ".uc .read rect{fill:url(#uc-read);stroke:#000;stroke-width:2}",
    ".uc .read text{font-weight:700;text-anchor:end;dominant-baseline:central;paint-order:stroke;stroke:#fff;stroke-width:3px}",
    ".uc .hdr{font-size:13px;font-weight:600}",
    ".uc .sm{font-size:11px;fill:#444}",
    "</style>"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short_and_stable() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(3.5), "3.5");
        assert_eq!(num(1.0 / 3.0), "0.33");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(f64::NAN), "0");
    }

    #[test]
    fn labels_and_units() {
        assert_eq!(ranks_label(&[3]), "r3");
        assert_eq!(ranks_label(&[0, 2]), "r0,r2");
        assert_eq!(ranks_label(&[0, 1, 2, 3]), "r0–r3");
        assert_eq!(ranks_label(&[0, 2, 4, 6]), "r0,r2,…(4)");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
