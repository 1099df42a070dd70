//! `uc view` with no viewer build (issue #15): run from a fresh empty directory with no `--pkg` and
//! no `UC_WEB_PKG`, it writes one page holding every tensor's diagram as inline SVG and referring
//! to no other file.

mod common;

use common::{fixtures, s};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use uc_store::source::{OpenOptions, Source};

/// The DeepSpeed checkpoint shipped in `examples/` (always present in a clone).
fn example() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/checkpoints/tp2_dp2_zero2_bf16"
    ))
}

/// Runs `uc args…` in `dir` with no `UC_WEB_PKG`.
fn uc_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uc"))
        .args(args)
        .current_dir(dir)
        .env_remove("UC_WEB_PKG")
        .output()
        .expect("run uc")
}

/// `uc view CHECKPOINT` (default `--out`) in a fresh directory; returns the page and stdout.
fn view(checkpoint: &Path) -> (String, String) {
    let cwd = tempfile::tempdir().unwrap();
    let o = uc_in(cwd.path(), &["view", s(checkpoint)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = cwd.path().join("uc-view.html");
    let html = fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let left: Vec<_> = fs::read_dir(cwd.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the page is written");
    (html, String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Values of attribute `name` in start tags beginning with `tag`.
fn attrs<'a>(html: &'a str, tag: &str, name: &str) -> Vec<&'a str> {
    let k = format!(" {name}=\"");
    html.match_indices(tag)
        .filter_map(|(i, _)| {
            let t = &html[i..i + html[i..].find('>')?];
            let a = t.find(&k)? + k.len();
            Some(&t[a..a + t[a..].find('"')?])
        })
        .collect()
}

/// Checks what every pre-rendered page must hold: one diagram per tensor section, nothing loaded.
fn check_page(html: &str, stdout: &str) -> usize {
    let sections = attrs(html, "<section class=\"tensor\"", "data-name");
    let diagrams = attrs(html, "<svg xmlns=", "data-tensor");
    assert!(!sections.is_empty());
    assert_eq!(diagrams, sections, "one diagram per tensor, in order");
    assert!(attrs(html, "<svg xmlns=", "data-view")
        .iter()
        .all(|v| *v == "tensor"));
    assert!(!html.contains("class=\"err\""), "every tensor drawn");
    assert!(
        stdout.contains(&format!(
            "({} tensors, diagrams pre-rendered as SVG)",
            sections.len()
        )),
        "{stdout}"
    );
    // No reference to any file: no src=, links only to anchors and data: URLs, no wasm or pkg/.
    assert!(!html.contains(" src="), "src attribute");
    for h in attrs(html, "<", "href") {
        assert!(h.starts_with('#') || h.starts_with("data:"), "href {h}");
    }
    for word in ["uc_wasm_bg", "uc_wasm.js", "web/pkg/", "import("] {
        assert!(!html.contains(word), "{word}");
    }
    sections.len()
}

#[test]
fn view_without_a_viewer_build_pre_renders_every_deepspeed_tensor() {
    let ck = example();
    let (html, out) = view(&ck);
    let n = check_page(&html, &out);
    let Source::DeepSpeed(c) = Source::open(&ck, &OpenOptions::default()).unwrap() else {
        panic!("not a DeepSpeed checkpoint");
    };
    assert_eq!(n, c.params().len() + c.extras().len());
    let drawn = attrs(&html, "<svg xmlns=", "data-tensor");
    for p in c.params() {
        assert!(drawn.contains(&p.meta.name.as_str()), "{}", p.meta.name);
    }
    // The ZeRO-2 partitions of tp 2 × dp 2 hold all 4 ranks; the fused QKV shows its q, k, v.
    let ranks: std::collections::BTreeSet<&str> =
        attrs(&html, "<g ", "data-rank").into_iter().collect();
    assert_eq!(ranks.into_iter().collect::<Vec<_>>(), ["0", "1", "2", "3"]);
    let i = html.find("data-tensor=\"blocks.0.qkv.weight\"");
    let qkv = &html[i.expect("qkv diagram")..];
    let qkv = &qkv[..qkv.find("</svg>").unwrap_or(qkv.len())];
    assert_eq!(attrs(qkv, "<g ", "data-sub"), ["q", "k", "v"]);
}

#[test]
fn view_without_a_viewer_build_draws_dcp_chunks_with_their_table() {
    let (html, out) = view(&fixtures("dcp").join("fsdp2_tp_2x2/checkpoint"));
    check_page(&html, &out);
    assert!(html.contains("<table class=\"chunks\"><caption>DCP model.blocks.0.qkv.weight"));
    assert!(html.contains("data-rank=\"2\" data-ranks=\"2\" data-box=\"16,0:16,32\""));
    assert!(html.contains("mesh (2, 2) · (Shard(0), Shard(1))"));
}

#[test]
fn view_with_a_missing_pkg_names_the_file() {
    let cwd = tempfile::tempdir().unwrap();
    let o = uc_in(cwd.path(), &["view", s(&example()), "--pkg", "nowhere"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nowhere/uc_wasm_bg.wasm"), "{err}");
    assert!(err.contains("leave out --pkg"), "{err}");
    assert_eq!(
        fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
