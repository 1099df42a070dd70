//! Writes a self-contained viewer page (what `uc view` does): wasm, glue, page and metadata in one file.
//!
//! `cargo run -p uc-wasm --example standalone -- web/pkg/uc_wasm_bg.wasm web/pkg/uc_wasm.js META.json OUT.html`

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [wasm, glue, meta, out] = args.as_slice() else {
        eprintln!("usage: standalone WASM GLUE_JS METADATA_JSON OUT_HTML");
        return ExitCode::from(2);
    };
    let read = |p: &String| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let run = || -> Result<(), String> {
        let glue = String::from_utf8(read(glue)?).map_err(|e| format!("{glue}: {e}"))?;
        let meta_text = String::from_utf8(read(meta)?).map_err(|e| format!("{meta}: {e}"))?;
        let name = std::path::Path::new(meta)
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let html = uc_wasm::html::standalone(&read(wasm)?, &glue, &meta_text, &name);
        std::fs::write(out, html).map_err(|e| format!("{out}: {e}"))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("standalone: {e}");
            ExitCode::FAILURE
        }
    }
}
