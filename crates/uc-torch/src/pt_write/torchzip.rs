//! A streaming zip writer laid out like torch's `PyTorchStreamWriter` (miniz): stored entries, data
//! descriptors, every entry's data 64-byte aligned through an `FB` padding extra field, zip64 end records.
//!
//! Why not the `zip` crate's writer: it needs `Seek` to patch headers (we stream into any `Write`:
//! a pipe, a pwrite cursor, a buffer inside a `.distcp`), and it pads alignment with its own extra
//! field id rather than torch's `FB` layout; the CRC is `crc32fast`, and the tests read our archives
//! back with the `zip` crate, CRCs checked.

use crate::error::{Result, TorchError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Data alignment torch uses (`kFieldAlignment`).
pub const ALIGNMENT: u64 = 64;
const U32_MAX: u64 = 0xffff_ffff;
const LOCAL_HEADER: u64 = 30;

/// A central-directory record kept until the end.
struct Central {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
}

/// Writes zip entries sequentially into `w`, tracking offsets.
pub(crate) struct ZipOut<W: Write> {
    w: W,
    pos: u64,
    entries: Vec<Central>,
    path: PathBuf,
}

impl<W: Write> ZipOut<W> {
    /// A writer whose errors name `path`.
    pub fn new(w: W, path: &Path) -> Self {
        ZipOut {
            w,
            pos: 0,
            entries: Vec::new(),
            path: path.to_path_buf(),
        }
    }

    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(|source| TorchError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Adds an entry whose bytes are in memory.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.add_stream(name, data.len() as u64, |sink| sink.write_all(data))
    }

    /// Adds an entry of exactly `size` bytes produced by `fill` (which may write in any chunking).
    pub fn add_stream(
        &mut self,
        name: &str,
        size: u64,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let offset = self.pos;
        let zip64 = size >= U32_MAX || offset >= U32_MAX;
        let mut z64 = Vec::new();
        if zip64 {
            if size >= U32_MAX {
                z64.extend_from_slice(&size.to_le_bytes());
                z64.extend_from_slice(&size.to_le_bytes());
            }
            if offset >= U32_MAX {
                z64.extend_from_slice(&offset.to_le_bytes());
            }
        }
        let mut extra = Vec::new();
        if zip64 {
            extra.extend_from_slice(&1u16.to_le_bytes());
            extra.extend_from_slice(&(z64.len() as u16).to_le_bytes());
            extra.extend_from_slice(&z64);
        }
        // torch's getPadding: align the data start to 64 with an `FB` field of `Z`s.
        let start = offset + LOCAL_HEADER + name.len() as u64 + extra.len() as u64 + 4;
        let pad = (ALIGNMENT - start % ALIGNMENT) % ALIGNMENT;
        extra.extend_from_slice(b"FB");
        extra.extend_from_slice(&(pad as u16).to_le_bytes());
        extra.extend(std::iter::repeat_n(b'Z', pad as usize));
        let name_len = u16::try_from(name.len())
            .map_err(|_| self.format(format!("entry name `{name}` too long")))?;
        let big = if size >= U32_MAX { U32_MAX as u32 } else { 0 };
        let mut h = Vec::with_capacity(30 + name.len() + extra.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&(if zip64 { 45u16 } else { 0 }).to_le_bytes());
        h.extend_from_slice(&0x0808u16.to_le_bytes()); // data descriptor + UTF-8 names
        h.extend_from_slice(&[0; 6]); // method stored, time, date
        h.extend_from_slice(&0u32.to_le_bytes()); // crc in the descriptor
        h.extend_from_slice(&big.to_le_bytes());
        h.extend_from_slice(&big.to_le_bytes());
        h.extend_from_slice(&name_len.to_le_bytes());
        h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&extra);
        self.raw(&h)?;

        let mut sink = EntrySink {
            w: &mut self.w,
            crc: crc32fast::Hasher::new(),
            written: 0,
            limit: size,
        };
        fill(&mut sink).map_err(|source| TorchError::Io {
            path: self.path.clone(),
            source,
        })?;
        let (crc, written) = (sink.crc.finalize(), sink.written);
        if written != size {
            return Err(self.format(format!(
                "entry `{name}`: {written} bytes written, {size} declared"
            )));
        }
        self.pos += size;

        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        if zip64 {
            d.extend_from_slice(&size.to_le_bytes());
            d.extend_from_slice(&size.to_le_bytes());
        } else {
            d.extend_from_slice(&(size as u32).to_le_bytes());
            d.extend_from_slice(&(size as u32).to_le_bytes());
        }
        self.raw(&d)?;
        self.entries.push(Central {
            name: name.to_string(),
            crc,
            size,
            offset,
        });
        Ok(())
    }

    fn format(&self, why: String) -> TorchError {
        TorchError::Format {
            path: self.path.clone(),
            why,
        }
    }

    /// Writes the central directory and the (zip64 and classic) end records; returns the writer.
    pub fn finish(mut self) -> Result<W> {
        let cd_start = self.pos;
        let mut cd = Vec::new();
        for e in &self.entries {
            let mut z64 = Vec::new();
            if e.size >= U32_MAX {
                z64.extend_from_slice(&e.size.to_le_bytes());
                z64.extend_from_slice(&e.size.to_le_bytes());
            }
            if e.offset >= U32_MAX {
                z64.extend_from_slice(&e.offset.to_le_bytes());
            }
            let mut extra = Vec::new();
            if !z64.is_empty() {
                extra.extend_from_slice(&1u16.to_le_bytes());
                extra.extend_from_slice(&(z64.len() as u16).to_le_bytes());
                extra.extend_from_slice(&z64);
            }
            let version: u16 = if z64.is_empty() { 0 } else { 45 };
            cd.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            cd.extend_from_slice(&version.to_le_bytes()); // made by
            cd.extend_from_slice(&version.to_le_bytes()); // needed
            cd.extend_from_slice(&0x0808u16.to_le_bytes());
            cd.extend_from_slice(&[0; 6]);
            cd.extend_from_slice(&e.crc.to_le_bytes());
            let size32 = e.size.min(U32_MAX) as u32;
            cd.extend_from_slice(&size32.to_le_bytes());
            cd.extend_from_slice(&size32.to_le_bytes());
            cd.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            cd.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            cd.extend_from_slice(&[0; 6]); // comment len, disk, internal attrs
            cd.extend_from_slice(&0u32.to_le_bytes()); // external attrs
            cd.extend_from_slice(&(e.offset.min(U32_MAX) as u32).to_le_bytes());
            cd.extend_from_slice(e.name.as_bytes());
            cd.extend_from_slice(&extra);
        }
        self.raw(&cd)?;
        let n = self.entries.len() as u64;
        let cd_size = cd.len() as u64;
        let eocd64 = self.pos;
        let mut t = Vec::with_capacity(56 + 20 + 22);
        t.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        t.extend_from_slice(&44u64.to_le_bytes());
        t.extend_from_slice(&0x031eu16.to_le_bytes());
        t.extend_from_slice(&0x002du16.to_le_bytes());
        t.extend_from_slice(&[0; 8]); // this disk, cd disk
        t.extend_from_slice(&n.to_le_bytes());
        t.extend_from_slice(&n.to_le_bytes());
        t.extend_from_slice(&cd_size.to_le_bytes());
        t.extend_from_slice(&cd_start.to_le_bytes());
        t.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&eocd64.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        t.extend_from_slice(&[0; 4]);
        let n16 = n.min(0xffff) as u16;
        t.extend_from_slice(&n16.to_le_bytes());
        t.extend_from_slice(&n16.to_le_bytes());
        t.extend_from_slice(&(cd_size.min(U32_MAX) as u32).to_le_bytes());
        t.extend_from_slice(&(cd_start.min(U32_MAX) as u32).to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        self.raw(&t)?;
        Ok(self.w)
    }
}

/// The writer handed to an entry's fill callback: counts, checksums, and refuses bytes past the size.
struct EntrySink<'w, W: Write> {
    w: &'w mut W,
    crc: crc32fast::Hasher,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for EntrySink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "more than the declared {} bytes written to a zip entry",
                    self.limit
                ),
            ));
        }
        // A piece at a time (see `WRITE_PIECE`), checksummed right after it is written, in cache.
        let piece = &buf[..buf.len().min(super::WRITE_PIECE)];
        let n = self.w.write(piece)?;
        self.crc.update(&piece[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc_known_values() {
        let mut c = crc32fast::Hasher::new();
        c.update(b"123456789");
        assert_eq!(c.finalize(), 0xCBF4_3926);
        // fixture: `fp32/byteorder` = "little" has CRC 0x19e33d85
        let mut c = crc32fast::Hasher::new();
        c.update(b"lit");
        c.update(b"tle");
        assert_eq!(c.finalize(), 0x19e3_3d85);
    }
}
