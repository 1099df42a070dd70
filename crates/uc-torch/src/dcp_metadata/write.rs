//! Writes a [`Metadata`] as the `.metadata` pickle torch's `dcp.load` accepts: hand-emitted protocol 2
//! (GLOBAL / NEWOBJ / BUILD / REDUCE, no memo), the shape of the fixture README's writer probe C.

use super::read::{Item, Metadata, PathSeg, StorageKey, TensorItem};
use uc_schema::DType;

const MD: &str = "torch.distributed.checkpoint.metadata";
const FS: &str = "torch.distributed.checkpoint.filesystem";

/// A protocol-2 opcode writer.
struct Emit(Vec<u8>);

impl Emit {
    fn none(&mut self) {
        self.0.push(b'N');
    }

    fn bool(&mut self, b: bool) {
        self.0.push(if b { 0x88 } else { 0x89 });
    }

    fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.0.extend_from_slice(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.0.push(b'M');
            self.0.extend_from_slice(&(v as u16).to_le_bytes());
        } else if let Ok(v) = i32::try_from(v) {
            self.0.push(b'J');
            self.0.extend_from_slice(&v.to_le_bytes());
        } else {
            self.0.extend_from_slice(&[0x8a, 8]);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn uint(&mut self, v: u64) {
        match i64::try_from(v) {
            Ok(i) => self.int(i),
            Err(_) => {
                // LONG1 with a zero sign byte.
                self.0.extend_from_slice(&[0x8a, 9]);
                self.0.extend_from_slice(&v.to_le_bytes());
                self.0.push(0);
            }
        }
    }

    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend_from_slice(module.as_bytes());
        self.0.push(b'\n');
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b'\n');
    }

    fn mark(&mut self) {
        self.0.push(b'(');
    }

    /// `cls.__new__(cls)` (state follows, then [`Emit::build`]).
    fn new_obj(&mut self, module: &str, name: &str) {
        self.global(module, name);
        self.0.extend_from_slice(b")\x81");
    }

    fn build(&mut self) {
        self.0.push(b'b');
    }

    /// `torch.Size((d0, d1, …))`.
    fn size(&mut self, dims: &[u64]) {
        self.global("torch", "Size");
        self.mark();
        self.mark();
        for &d in dims {
            self.uint(d);
        }
        self.0.extend_from_slice(b"ttR");
    }

    /// A dict built with `EMPTY_DICT MARK … SETITEMS`; `items` emits the key/value pairs.
    fn dict(&mut self, items: impl FnOnce(&mut Emit)) {
        self.0.extend_from_slice(b"}(");
        items(self);
        self.0.push(b'u');
    }
}

/// The `.metadata` bytes for `md` (items in order, every storage entry, planner_data when set).
pub fn to_pickle(md: &Metadata) -> Vec<u8> {
    let mut e = Emit(vec![0x80, 2]);
    e.new_obj(MD, "Metadata");
    e.dict(|e| {
        e.str("state_dict_metadata");
        e.dict(|e| {
            for (key, item) in &md.items {
                e.str(key);
                match item {
                    Item::Tensor(t) => tensor(e, t),
                    Item::Bytes => {
                        e.new_obj(MD, "BytesStorageMetadata");
                        e.0.push(b'}');
                        e.build();
                    }
                }
            }
        });
        e.str("storage_data");
        let mut keys: Vec<&StorageKey> = md.storage.keys().collect();
        keys.sort();
        e.dict(|e| {
            for k in keys {
                let info = &md.storage[k];
                e.new_obj(MD, "MetadataIndex");
                e.dict(|e| {
                    e.str("fqn");
                    e.str(&k.0);
                    e.str("offset");
                    match &k.1 {
                        Some(o) => e.size(o),
                        None => e.none(),
                    }
                    e.str("index");
                    e.int(0);
                });
                e.build();
                e.new_obj(FS, "_StorageInfo");
                e.dict(|e| {
                    e.str("relative_path");
                    e.str(&info.file);
                    e.str("offset");
                    e.uint(info.offset);
                    e.str("length");
                    e.uint(info.length);
                });
                e.build();
            }
        });
        if let Some(pd) = &md.planner_data {
            e.str("planner_data");
            let mut keys: Vec<&String> = pd.keys().collect();
            keys.sort();
            e.dict(|e| {
                for k in keys {
                    e.str(k);
                    e.mark();
                    for seg in &pd[k] {
                        match seg {
                            PathSeg::Key(s) => e.str(s),
                            PathSeg::Index(i) => e.int(*i),
                        }
                    }
                    e.0.push(b't');
                }
            });
        }
        if let Some(v) = &md.version {
            e.str("version");
            e.str(v);
        }
    });
    e.build();
    e.0.push(b'.');
    e.0
}

/// A `TensorStorageMetadata` with a 5-tuple `TensorProperties` state (accepted by old and new torch).
fn tensor(e: &mut Emit, t: &TensorItem) {
    e.new_obj(MD, "TensorStorageMetadata");
    e.dict(|e| {
        e.str("properties");
        e.new_obj(MD, "TensorProperties");
        e.mark();
        e.global("torch", torch_dtype(t.dtype));
        e.global("torch.serialization", "_get_layout");
        e.mark();
        e.str("torch.strided");
        e.0.extend_from_slice(b"tR");
        e.bool(false);
        e.global(MD, "_MEM_FORMAT_ENCODING");
        e.mark();
        e.int(0);
        e.0.extend_from_slice(b"tR");
        e.bool(false);
        e.0.push(b't');
        e.build();
        e.str("size");
        e.size(&t.size);
        e.str("chunks");
        e.0.push(b']');
        if !t.chunks.is_empty() {
            e.mark();
            for c in &t.chunks {
                e.new_obj(MD, "ChunkStorageMetadata");
                e.dict(|e| {
                    e.str("offsets");
                    e.size(&c.offsets);
                    e.str("sizes");
                    e.size(&c.sizes);
                });
                e.build();
            }
            e.0.push(b'e');
        }
    });
    e.build();
}

/// torch's attribute name of a dtype (`float32`, `bfloat16`, …).
pub fn torch_dtype(d: DType) -> &'static str {
    match d {
        DType::F64 => "float64",
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::I16 => "int16",
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::Bool => "bool",
    }
}
