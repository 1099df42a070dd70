//! `loss.csv` and a self-contained `loss.svg` of the loss curves.

use std::fmt::Write;

/// One curve: run name, colour, `(step, loss)` points.
pub struct Curve<'a> {
    pub run: &'a str,
    pub color: &'a str,
    pub points: &'a [(u64, f64)],
}

/// `step,run,loss` rows of every curve.
pub fn csv(curves: &[Curve]) -> String {
    let mut s = String::from("step,run,loss\n");
    for c in curves {
        for (step, loss) in c.points {
            let _ = writeln!(s, "{step},{},{loss:.9}", c.run);
        }
    }
    s
}

/// An SVG line plot of the curves (later curves drawn dashed on top), with a marker at step `mark`.
pub fn svg(title: &str, curves: &[Curve], mark: Option<u64>) -> String {
    let (w, h, l, r, t, b) = (720.0, 420.0, 60.0, 20.0, 40.0, 50.0);
    let all = curves.iter().flat_map(|c| c.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x as f64);
        x1 = x1.max(x as f64);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (xs, ys) = ((x1 - x0).max(1e-9), (y1 - y0).max(1e-9));
    let px = |x: f64| l + (x - x0) / xs * (w - l - r);
    let py = |y: f64| h - b - (y - y0) / ys * (h - t - b);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14">{title}</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{l}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><line x1="{l}" y1="{t}" x2="{l}" y2="{0}" stroke="black"/>"#,
        h - b,
        w - r
    );
    for i in 0..=4 {
        let (fx, fy) = (x0 + xs * i as f64 / 4.0, y0 + ys * i as f64 / 4.0);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{fx:.0}</text>"#,
            px(fx),
            h - b + 18.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{fy:.3}</text>"#,
            l - 6.0,
            py(fy) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (l + w - r) / 2.0,
        h - 10.0
    );
    if let Some(m) = mark {
        let x = px(m as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{0}" stroke="#888" stroke-dasharray="2 3"/><text x="{1:.1}" y="{2}" fill="#555">save / resume</text>"##,
            h - b,
            x + 4.0,
            h - b - 8.0
        );
    }
    for (i, c) in curves.iter().enumerate() {
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x as f64), py(y)))
            .collect();
        let dash = if i == 0 {
            ""
        } else {
            r#" stroke-dasharray="6 4""#
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            c.color,
            pts.join(" ")
        );
        let ly = t + 16.0 * i as f64 + 8.0;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{2}" stroke-width="2"{dash}/><text x="{3}" y="{4}">{5}</text>"#,
            w - 200.0,
            w - 170.0,
            c.color,
            w - 164.0,
            ly + 4.0,
            c.run
        );
    }
    s.push_str("</svg>\n");
    s
}
