//! A small zip central-directory reader: entry name → data byte range, so tensors can be read
//! in place from an mmap. Stored entries only (torch.save never compresses); zip64 supported.
//!
//! Why not the `zip` crate's reader: a DCP `.distcp` file holds many torch.save archives back to back,
//! so an archive is a sub-range of one shared mapping, and a tensor must be a borrowed slice of it (no
//! copy, no `Read`); we need each member's data offset with every bound checked against the slice,
//! and nothing else. The tests check this reader against the `zip` crate on real fixture files.

use crate::error::{Result, TorchError};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const LOC64_SIG: u32 = 0x0706_4b50;
const CDH_SIG: u32 = 0x0201_4b50;
const LFH_SIG: u32 = 0x0403_4b50;

/// One zip member: where its bytes start (relative to the archive start) and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    pub name: String,
    /// Offset of the member data, relative to the start of the archive bytes.
    pub data_start: u64,
    /// Stored size in bytes (compressed size; equals the real size for stored entries).
    pub size: u64,
    /// Compression method (0 = stored).
    pub method: u16,
}

impl ZipEntry {
    /// The member's data bytes, relative to the start of the archive.
    pub fn data_range(&self) -> Range<u64> {
        self.data_start..self.data_start.saturating_add(self.size)
    }
}

/// The members of one archive, by name.
#[derive(Debug, Clone, Default)]
pub struct ZipIndex {
    entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
}

impl ZipIndex {
    /// Every member in central-directory order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The member called `name`.
    pub fn get(&self, name: &str) -> Option<&ZipEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Bytes a torch.save zip's end record can take (no comment, zip64 record and locator).
const TAIL: u64 = 22 + 20 + 56 + 256;

/// Reads the central directory of the archive in `data` (named `path` in errors), first asking
/// `need` for each byte range (relative to `data`) it is about to read, so that a lazily filled
/// archive fetches only its zip records.
pub fn parse_filling(
    data: &[u8],
    path: &Path,
    need: &dyn Fn(&[Range<u64>]) -> Result<()>,
) -> Result<ZipIndex> {
    let bad = |why: String| TorchError::BadZip {
        path: path.to_path_buf(),
        why,
    };
    let len = data.len() as u64;
    need(&[len.saturating_sub(TAIL)..len])?;
    let mut found = find_eocd(data, TAIL as usize);
    if found.is_none() {
        need(&[len.saturating_sub(22 + 0xffff)..len])?;
        found = find_eocd(data, 22 + 0xffff);
    }
    let Some(eocd) = found else {
        if data.starts_with(&LFH_SIG.to_le_bytes()) {
            return Err(TorchError::Truncated {
                path: path.to_path_buf(),
                why: format!(
                    "zip archive of {} bytes has no end-of-central-directory record (file cut short?)",
                    data.len()
                ),
            });
        }
        if data.first() == Some(&0x80) {
            return Err(TorchError::Format {
                path: path.to_path_buf(),
                why: "legacy (non-zip) torch.save format is not supported".into(),
            });
        }
        return Err(bad(
            "no end-of-central-directory record (not a zip archive)".into(),
        ));
    };
    let field = |at: usize| u16_at(data, eocd + at).unwrap_or(0);
    let mut count = u64::from(field(10));
    let mut cd_size = u64::from(u32_at(data, eocd + 12).unwrap_or(0));
    let mut cd_off = u64::from(u32_at(data, eocd + 16).unwrap_or(0));
    if field(4) != 0 || field(6) != 0 {
        return Err(bad("multi-disk archives are not supported".into()));
    }
    // A zip64 locator sits just before the EOCD; its record carries the real counts/offsets.
    if eocd >= 20 && u32_at(data, eocd - 20) == Some(LOC64_SIG) {
        let rec = u64_at(data, eocd - 12).and_then(|o| usize::try_from(o).ok());
        if let Some(r) = rec {
            need(&[r as u64..(r as u64).saturating_add(56).min(len)])?;
        }
        let rec = rec.filter(|&r| u32_at(data, r) == Some(EOCD64_SIG));
        let Some(r) = rec else {
            return Err(bad(
                "zip64 locator points to no zip64 end-of-central-directory record".into(),
            ));
        };
        let (Some(n), Some(sz), Some(off)) = (
            u64_at(data, r + 32),
            u64_at(data, r + 40),
            u64_at(data, r + 48),
        ) else {
            return Err(bad(
                "zip64 end-of-central-directory record is cut short".into()
            ));
        };
        (count, cd_size, cd_off) = (n, sz, off);
    }
    let cd_end = cd_off
        .checked_add(cd_size)
        .filter(|&e| e <= data.len() as u64);
    let Some(cd_end) = cd_end else {
        return Err(bad(format!(
            "central directory [{cd_off}, +{cd_size}) lies outside the {} archive bytes",
            data.len()
        )));
    };
    need(&[cd_off..cd_end])?;
    let (mut at, cd_end) = (cd_off as usize, cd_end as usize);
    let mut central = Vec::new();
    while at < cd_end {
        central.push(central_entry(data, &mut at, cd_end).map_err(&bad)?);
    }
    let headers: Vec<Range<u64>> = central
        .iter()
        .map(|e| e.data_start..e.data_start.saturating_add(30).min(len))
        .collect();
    need(&headers)?;
    let mut index = ZipIndex::default();
    for entry in central {
        let entry = local_entry(data, entry).map_err(&bad)?;
        if index
            .by_name
            .insert(entry.name.clone(), index.entries.len())
            .is_some()
        {
            return Err(bad(format!("duplicate entry `{}`", entry.name)));
        }
        index.entries.push(entry);
    }
    if index.entries.len() as u64 != count {
        return Err(bad(format!(
            "central directory holds {} entries, end record says {count}",
            index.entries.len()
        )));
    }
    Ok(index)
}

/// Finds the end-of-central-directory record whose comment reaches exactly to the end, looking
/// at the last `window` bytes only.
fn find_eocd(data: &[u8], window: usize) -> Option<usize> {
    let last = data.len().checked_sub(22)?;
    let first = last.saturating_sub(window - 22);
    (first..=last).rev().find(|&at| {
        u32_at(data, at) == Some(EOCD_SIG)
            && u16_at(data, at + 20).map(|c| at + 22 + usize::from(c)) == Some(data.len())
    })
}

/// Parses one central-directory header at `*at`; advances `*at`. The entry's `data_start` holds
/// its local header's offset until [`local_entry`] reads that header.
fn central_entry(
    data: &[u8],
    at: &mut usize,
    cd_end: usize,
) -> std::result::Result<ZipEntry, String> {
    let h = *at;
    let hdr = data
        .get(h..h + 46)
        .filter(|_| h + 46 <= cd_end)
        .ok_or("central directory entry cut short")?;
    if u32_at(hdr, 0) != Some(CDH_SIG) {
        return Err(format!("bad central directory signature at byte {h}"));
    }
    let g16 = |o: usize| u16_at(hdr, o).unwrap_or(0);
    let g32 = |o: usize| u32_at(hdr, o).unwrap_or(0);
    let (flags, method) = (g16(8), g16(10));
    let (nlen, elen, clen) = (
        usize::from(g16(28)),
        usize::from(g16(30)),
        usize::from(g16(32)),
    );
    let end = h + 46 + nlen + elen + clen;
    if end > cd_end {
        return Err(format!(
            "central directory entry at byte {h} runs past the directory"
        ));
    }
    let name = String::from_utf8(data[h + 46..h + 46 + nlen].to_vec())
        .map_err(|_| format!("entry name at byte {h} is not UTF-8"))?;
    if flags & 1 != 0 {
        return Err(format!("entry `{name}` is encrypted"));
    }
    let mut usize_ = u64::from(g32(24));
    let mut csize = u64::from(g32(20));
    let mut lho = u64::from(g32(42));
    zip64_extra(
        &data[h + 46 + nlen..h + 46 + nlen + elen],
        &mut usize_,
        &mut csize,
        &mut lho,
    )
    .ok_or_else(|| format!("entry `{name}`: bad zip64 extra field"))?;
    if method == 0 && usize_ != csize {
        return Err(format!(
            "stored entry `{name}` has size {usize_} but compressed size {csize}"
        ));
    }
    *at = end;
    Ok(ZipEntry {
        name,
        data_start: lho,
        size: csize,
        method,
    })
}

/// Reads the local header of an entry from [`central_entry`] and sets its real `data_start`.
fn local_entry(data: &[u8], e: ZipEntry) -> std::result::Result<ZipEntry, String> {
    let (name, lho, csize) = (&e.name, e.data_start, e.size);
    let lh = usize::try_from(lho)
        .map_err(|_| format!("entry `{name}`: local header offset too large"))?;
    if u32_at(data, lh) != Some(LFH_SIG) {
        return Err(format!("entry `{name}`: no local header at byte {lh}"));
    }
    let (Some(ln), Some(le)) = (u16_at(data, lh + 26), u16_at(data, lh + 28)) else {
        return Err(format!("entry `{name}`: local header cut short"));
    };
    let data_start = lho + 30 + u64::from(ln) + u64::from(le);
    if data_start
        .checked_add(csize)
        .is_none_or(|e| e > data.len() as u64)
    {
        return Err(format!(
            "entry `{name}`: data [{data_start}, +{csize}) runs past the {} archive bytes",
            data.len()
        ));
    }
    Ok(ZipEntry { data_start, ..e })
}

/// Applies a zip64 extended-information extra field (id 1) to saturated 32-bit fields.
fn zip64_extra(mut extra: &[u8], usize_: &mut u64, csize: &mut u64, lho: &mut u64) -> Option<()> {
    while extra.len() >= 4 {
        let id = u16_at(extra, 0)?;
        let len = usize::from(u16_at(extra, 2)?);
        let body = extra.get(4..4 + len)?;
        if id == 1 {
            let mut p = 0;
            for f in [usize_, csize, lho] {
                if *f == 0xffff_ffff {
                    *f = u64_at(body, p)?;
                    p += 8;
                }
            }
            return Some(());
        }
        extra = &extra[4 + len..];
    }
    Some(())
}
