//! A self-contained HTML viewer (for `uc view`): the page, its script, the wasm and the metadata in
//! one file that opens offline, from `file://` too.
//!
//! The page (`web/index.html`, `web/style.css`, `web/app.js`) is compiled in. The caller supplies the
//! wasm-bindgen `--target web` output (`uc_wasm_bg.wasm` and `uc_wasm.js`) and the metadata; both
//! are embedded as base64 in `<script type="text/plain">` blocks, and `app.js` imports the glue from
//! a `blob:` URL and instantiates the wasm from the bytes.

const INDEX: &str = include_str!("../../../web/index.html");
const STYLE: &str = include_str!("../../../web/style.css");
const APP: &str = include_str!("../../../web/app.js");

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
            if i <= c.len() {
                o.push(A[(n >> shift & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// `<script type="text/plain" id=…>` holding base64 text.
fn blob(id: &str, data: &[u8]) -> String {
    format!(
        "<script type=\"text/plain\" id=\"{id}\">{}</script>\n",
        base64(data)
    )
}

/// The self-contained page: `wasm` = `uc_wasm_bg.wasm`, `glue` = `uc_wasm.js`, `metadata` = the
/// JSON to show, `name` = what the page calls it (a file or checkpoint name).
pub fn standalone(wasm: &[u8], glue: &str, metadata: &str, name: &str) -> String {
    let embeds = [
        blob("uc-wasm", wasm),
        blob("uc-glue", glue.as_bytes()),
        blob("uc-meta", metadata.as_bytes()),
        blob("uc-name", name.as_bytes()),
    ]
    .concat();
    INDEX
        .replace(
            "<link rel=\"stylesheet\" href=\"style.css\">",
            &format!("<style>\n{STYLE}</style>"),
        )
        .replace(
            "<script type=\"module\" src=\"app.js\"></script>",
            &format!(
                "{embeds}<script type=\"module\">\n{}</script>",
                APP.replace("</script", "<\\/script")
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn standalone_inlines_everything() {
        let html = standalone(
            b"\0asm",
            "export default 1;",
            "{\"tensors\":[]}",
            "ck</script>",
        );
        assert!(!html.contains("src=\"app.js\""));
        assert!(!html.contains("href=\"style.css\""));
        assert!(html.contains("id=\"uc-wasm\">AGFzbQ==</script>"));
        assert!(html.contains(&format!(
            "id=\"uc-meta\">{}</script>",
            base64(b"{\"tensors\":[]}")
        )));
        // The name is base64 too, so it cannot close the script early.
        assert_eq!(html.matches("</script>").count(), 5);
    }
}
