//! The page `uc view` writes by default: every tensor's partition diagram pre-rendered as inline SVG.
//!
//! The diagrams come from [`Viewer::tensor`] — the very code the browser viewer runs as wasm — run
//! natively, so the page needs no wasm, no wasm-bindgen build and no other file: `uc view` works
//! right after `cargo build` / `cargo install`, from any directory, and the page opens offline (a
//! short optional script only filters the tensor list). The interactive viewer (any target
//! topology, reads per rank) is [`crate::html::standalone`], which needs a wasm-bindgen build.

use crate::dcp::{region, Dcp};
use crate::draw::box_attr;
use crate::svg::{bytes, color, esc, STYLE as SVG_STYLE};
use crate::viewer::Viewer;
use std::io::{self, Write};

const STYLE: &str = include_str!("../../../web/style.css");

/// Rules for the static page on top of the viewer's `style.css`.
const PAGE_STYLE: &str = "
#diagram .tensor { margin-bottom: 18px; }
#diagram .tensor h2 { font-size: 14px; margin: 0 0 4px; word-break: break-all; }
#diagram .tensor h2 small { font-weight: 400; color: #666; }
#diagram .tensor table { border-collapse: collapse; background: #fff; font-size: 12px; margin-bottom: 4px; }
#diagram .tensor th, #diagram .tensor td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
#diagram .tensor caption { text-align: left; font-weight: 600; padding: 4px 0; }
#diagram .tensor .sw { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border: 1px solid #0003; vertical-align: -1px; }
#diagram .tensor tr.empty td { color: #999; }
#diagram .err { margin: 0; padding: 8px; border: 1px solid #e57373; background: #ffebee; color: #b71c1c; border-radius: 6px; white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 13px; }
#tensors li a { color: inherit; text-decoration: none; display: block; }
#uc-defs { position: absolute; width: 0; height: 0; overflow: hidden; }
";

/// Filters the list and the diagrams by name; the page works without it.
const SCRIPT: &str = "const f = document.getElementById('filter');
f.hidden = false;
f.addEventListener('input', () => {
  const q = f.value.trim().toLowerCase();
  let n = 0;
  for (const e of document.querySelectorAll('#tensors li, #diagram .tensor')) {
    const hit = !q || e.dataset.name.toLowerCase().includes(q);
    e.hidden = !hit;
    if (hit && e.tagName === 'LI') n += 1;
  }
  document.getElementById('count').textContent = `${n} of ${document.body.dataset.tensors} tensors`;
});
";

/// Writes the page of `viewer`'s document, called `name` (a checkpoint or file name), to `out`.
pub fn write(out: &mut impl Write, viewer: &Viewer, name: &str) -> io::Result<()> {
    let doc = &viewer.doc;
    let n = doc.items.len();
    let summary = viewer.summary();
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · unicheck partition diagrams</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <style>\n{STYLE}{PAGE_STYLE}</style>\n</head>\n<body data-state=\"static\" data-tensors=\"{n}\">\n",
        esc(name)
    )?;
    write!(
        out,
        "<header>\n  <h1>unicheck <span>checkpoint partition diagrams</span></h1>\n  \
         <p class=\"muted\">Every tensor on its source layout, drawn by uc view (uc-wasm {}, natively). \
         For what another topology would read, write the interactive viewer: \
         <code>uc view --pkg web/pkg</code> (built by <code>bash scripts/web-test.sh</code>).</p>\n\
         </header>\n",
        env!("CARGO_PKG_VERSION")
    )?;
    // The styles and patterns every diagram shares, once (each SVG's own copy is dropped below).
    writeln!(
        out,
        "<svg id=\"uc-defs\" class=\"uc\" aria-hidden=\"true\">{SVG_STYLE}</svg>"
    )?;
    aside(out, viewer, name, &summary)?;
    out.write_all(b"<section id=\"content\">\n<div id=\"diagram\">\n")?;
    for i in 0..n {
        tensor(out, viewer, i)?;
    }
    write!(
        out,
        "</div>\n</section>\n</main>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n"
    )
}

/// The document line, notes and the tensor list (links to the diagrams).
fn aside(
    out: &mut impl Write,
    viewer: &Viewer,
    name: &str,
    summary: &serde_json::Value,
) -> io::Result<()> {
    let doc = &viewer.doc;
    let source = match doc.format {
        crate::Format::Dcp => String::new(),
        _ => format!(" · source {}", doc.source.label()),
    };
    write!(
        out,
        "<main>\n<aside>\n<div id=\"docinfo\" class=\"muted\"><div>{} · {}{source} · {} tensors</div><ul>",
        esc(name),
        doc.format.name(),
        doc.items.len()
    )?;
    for note in &doc.notes {
        write!(out, "<li>{}</li>", esc(note))?;
    }
    let errors = summary["errors"].as_array().map_or(0, Vec::len);
    if errors > 0 {
        write!(out, "<li>{errors} tensors have invalid metadata (red)</li>")?;
    }
    out.write_all(
        b"</ul></div>\n<input type=\"search\" id=\"filter\" placeholder=\"filter tensors\" autocomplete=\"off\" hidden>\n\
          <div id=\"count\" class=\"muted\"></div>\n<ul id=\"tensors\">\n",
    )?;
    for (i, it) in doc.items.iter().enumerate() {
        let bad = if it.source.is_err() {
            " class=\"bad\""
        } else {
            ""
        };
        let shape: Vec<String> = it.shape.iter().map(u64::to_string).collect();
        let role = match it.role.key() {
            "param" => String::new(),
            k => format!("{k} "),
        };
        writeln!(
            out,
            "<li{bad} data-name=\"{n}\"><a href=\"#t{i}\">{n} <small>{}[{}] {}</small></a></li>",
            esc(&role),
            shape.join("×"),
            esc(&it.cut.label()),
            n = esc(&it.name)
        )?;
    }
    out.write_all(b"</ul>\n</aside>\n")
}

/// One tensor: a heading, its diagram (its title line names dtype, shape and layout) or why it
/// cannot be drawn, and its DCP chunks.
fn tensor(out: &mut impl Write, viewer: &Viewer, i: usize) -> io::Result<()> {
    let Some(it) = viewer.doc.items.get(i) else {
        return Ok(());
    };
    write!(
        out,
        "<section class=\"tensor\" id=\"t{i}\" data-name=\"{n}\" data-role=\"{r}\">\n\
         <h2>{n} <small>{r}</small></h2>\n",
        n = esc(&it.name),
        r = esc(it.role.key())
    )?;
    match viewer.tensor(i) {
        Ok(v) => writeln!(out, "{}", v.svg.replacen(SVG_STYLE, "", 1))?,
        Err(e) => writeln!(out, "<p class=\"err\">{}</p>", esc(&e.to_string()))?,
    }
    if let Some(d) = &it.dcp {
        chunks(out, d)?;
    }
    out.write_all(b"</section>\n")
}

/// A DCP tensor's chunk table: writer rank, box, where its bytes are (empty chunks too).
fn chunks(out: &mut impl Write, d: &Dcp) -> io::Result<()> {
    write!(
        out,
        "<table class=\"chunks\"><caption>DCP {} · {} · {} ranks wrote files</caption>\n\
         <tr><th>writer</th><th>offsets</th><th>sizes</th><th>stored at</th><th>file</th>\
         <th>byte offset</th><th>length</th></tr>\n",
        esc(&d.facts.key),
        esc(&d.label()),
        d.world
    )?;
    let list = |v: &[u64]| {
        let s: Vec<String> = v.iter().map(u64::to_string).collect();
        format!("[{}]", s.join(", "))
    };
    for c in &d.facts.chunks {
        let (who, sw) = match c.rank {
            Some(r) => (
                format!("r{r}"),
                format!(" style=\"background:{}\"", color(r)),
            ),
            None => ("not stored".into(), String::new()),
        };
        let empty = c.is_empty();
        writeln!(
            out,
            "<tr{} data-box=\"{}\"><th><span class=\"sw\"{sw}></span>{who}</th><td>{}</td>\
             <td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if empty { " class=\"empty\"" } else { "" },
            esc(&box_attr(&region(c))),
            list(&c.offsets),
            list(&c.sizes),
            if empty { " empty" } else { "" },
            list(&c.stored_offsets),
            esc(c.file.as_deref().unwrap_or("")),
            c.offset,
            bytes(c.length)
        )?;
    }
    out.write_all(b"</table>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: &str, name: &str) -> String {
        let v = Viewer::new(json).unwrap();
        let mut out = Vec::new();
        write(&mut out, &v, name).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_tensor_gets_an_inline_diagram_and_nothing_is_loaded() {
        let json = include_str!("../../../web/examples/gqa_tp2_deepspeed.json");
        let html = page(json, "gqa <tp2>");
        let n = Viewer::new(json).unwrap().doc.items.len();
        assert_eq!(html.matches("<svg xmlns=").count(), n);
        assert_eq!(html.matches("<section class=\"tensor\"").count(), n);
        assert!(html.contains("data-tensor=\"blocks.0.qkv.weight\""));
        assert!(html.contains("<title>gqa &lt;tp2&gt; · "));
        // Shared styles once, not per diagram; nothing fetched from anywhere.
        assert_eq!(html.matches("id=\"uc-hatch\"").count(), 1);
        assert!(!html.contains(" src="));
        assert!(html
            .split(" href=\"")
            .skip(1)
            .all(|h| h.starts_with('#') || h.starts_with("data:")));
    }

    #[test]
    fn invalid_tensors_show_their_error_and_dcp_chunks_a_table() {
        // q widths 16 + 17 on the two ranks no longer add up to q's 32 rows.
        let mut j: serde_json::Value =
            serde_json::from_str(include_str!("../../../web/examples/gqa_tp2_deepspeed.json"))
                .unwrap();
        j["universal_checkpoint_info"]["sub_param_shard_widths"]["^blocks\\.0\\.qkv\\.weight$"]
            [0] = serde_json::json!([16, 17]);
        let html = page(&j.to_string(), "bad");
        let n = Viewer::new(&j.to_string()).unwrap().doc.items.len();
        assert_eq!(html.matches("<svg xmlns=").count(), n - 1);
        assert_eq!(html.matches("<p class=\"err\">").count(), 1);
        assert!(html.contains("<li class=\"bad\" data-name=\"blocks.0.qkv.weight\">"));
        let dcp = page(
            include_str!("../../../web/examples/dcp_fsdp2_tp_2x2.json"),
            "dcp",
        );
        assert!(dcp.contains("<table class=\"chunks\"><caption>DCP model.blocks.0.qkv.weight"));
        assert!(dcp.contains("__2_0.distcp"));
    }
}
