//! Our zip reader against the `zip` crate on every real fixture archive: the same members, names,
//! sizes, data offsets and bytes (the crate also checks each member's CRC).

mod common;

use common::{walk, zip_entries, DCP, DEEPSPEED, MEGATRON};
use std::path::Path;
use uc_torch::{Allowlist, PtFile};

#[test]
fn members_match_the_zip_crate_on_every_fixture_pt() {
    let (mut checked, mut refused) = (0, Vec::new());
    for root in [DEEPSPEED, DCP, MEGATRON] {
        if !Path::new(root).is_dir() {
            eprintln!("skipping {root}: not present");
            continue;
        }
        let files = walk(Path::new(root), &|p| {
            p.extension().is_some_and(|e| e == "pt")
        });
        for f in files {
            let ours = PtFile::open(&f, &Allowlist::deepspeed())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let Some(theirs) = crate_entries(&f) else {
                refused.push(f);
                continue;
            };
            let mine: Vec<_> = ours
                .entries()
                .iter()
                .map(|e| (e.name.clone(), e.data_start, e.size))
                .collect();
            let crate_view: Vec<_> = theirs
                .iter()
                .map(|(n, off, b)| (n.clone(), *off, b.len() as u64))
                .collect();
            assert_eq!(mine, crate_view, "{}", f.display());
            for (name, _, bytes) in &theirs {
                assert_eq!(ours.entry_bytes(name).unwrap(), &bytes[..], "{name}");
            }
            checked += 1;
        }
    }
    eprintln!(
        "{checked} archives agree; the zip crate refuses {}: {refused:?}",
        refused.len()
    );
    // zip 9.8.2 refuses ("Invalid Central Directory header") the pipeline layer files torch wrote
    // with a zip64 end record; Python's zipfile and torch read them, and so does our reader.
    for f in &refused {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("layer_"),
            "the zip crate refuses {}",
            f.display()
        );
        PtFile::open(f, &Allowlist::deepspeed()).unwrap();
    }
    assert!(
        checked > 100 || !Path::new(DEEPSPEED).is_dir(),
        "{checked} files"
    );
}

/// The crate's view of an archive, `None` when the crate cannot read it.
fn crate_entries(f: &Path) -> Option<Vec<(String, u64, Vec<u8>)>> {
    zip::ZipArchive::new(std::fs::File::open(f).ok()?).ok()?;
    Some(zip_entries(f))
}
