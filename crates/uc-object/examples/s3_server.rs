//! An S3-compatible server on 127.0.0.1 for trying `uc` with `s3://` by hand or from scripts:
//! prints the environment to use and the folder holding its buckets, then serves until killed.
//!
//! `cargo run --release -p uc-object --features test-server --example s3_server -- BUCKET...`

fn main() -> std::io::Result<()> {
    let server = uc_object::test_server::S3Server::start()?;
    for b in std::env::args().skip(1) {
        server.bucket(&b)?;
    }
    for (k, v) in server.env() {
        println!("export {k}={v}");
    }
    println!("# buckets are the folders of {}", server.root().display());
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
