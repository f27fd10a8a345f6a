//! GGUF reader: parses the header, metadata and tensor table from a memory map, and hands out
//! tensor data as slices of that map (zero-copy).
//!
//! Every count, length, dimension product, offset and size read from the file is checked for
//! overflow and against the bytes actually present before it is used, so a hostile file can at
//! worst produce an error: never an out-of-bounds read or an allocation sized by the file alone.
//! Allocations that depend on file counts are bounded by the file size (each element needs at
//! least one byte of file).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::quant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Nested arrays deeper than this are refused (GGUF writers never nest at all in practice).
const MAX_ARRAY_DEPTH: u32 = 4;

/// What is wrong with a GGUF file's structure. Wrapped with the file's path in
/// [`Error::Gguf`] by [`GgufFile::open`]. Offsets are byte offsets from the
/// start of the file; `len` fields are the file's total size in bytes.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The first four bytes (shown) are not `GGUF`.
    #[error("not a GGUF file (magic {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    /// A GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    BadVersion(u32),
    /// The file ends before a field it declares (or the aligned data section start overflows).
    #[error(
        "truncated: needed {needed} bytes at offset {offset} while reading {what}, file has {len}"
    )]
    Truncated {
        /// The field being read.
        what: String,
        /// Where the read started.
        offset: u64,
        /// Bytes the read needed.
        needed: u64,
        /// File size.
        len: u64,
    },
    /// A tensor, metadata or array count larger than the rest of the file could encode, even at
    /// the minimum size per item; refused before allocating for it.
    #[error("{what} count {count} at offset {offset} cannot fit in the file ({len} bytes)")]
    AbsurdCount {
        /// What is being counted.
        what: String,
        /// The count read from the file.
        count: u64,
        /// Offset of the count field.
        offset: u64,
        /// File size.
        len: u64,
    },
    /// A key, tensor name or string value that is not UTF-8.
    #[error("string at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Offset of the string's bytes (after its length prefix).
        offset: u64,
    },
    /// A metadata value (or array element) type id outside GGUF's 0..=12.
    #[error("metadata key '{key}': unknown value type {ty}")]
    BadValueType {
        /// The key whose value could not be read.
        key: String,
        /// The unknown type id.
        ty: u32,
    },
    /// Arrays of arrays nested deeper than 4 levels.
    #[error("metadata key '{key}': arrays nested too deeply")]
    NestedArray {
        /// The key holding the array.
        key: String,
    },
    /// The same metadata key appears twice.
    #[error("duplicate metadata key '{0}'")]
    DuplicateKey(String),
    /// A tensor with more than 4 dimensions (ggml's maximum).
    #[error("tensor '{name}': {n_dims} dimensions (max {MAX_DIMS})")]
    TooManyDims {
        /// Tensor name.
        name: String,
        /// Declared dimension count.
        n_dims: u32,
    },
    /// A tensor type id [`GgmlType::from_ggml_id`] does not know.
    #[error("tensor '{name}': unknown ggml type id {id}")]
    UnknownType {
        /// Tensor name.
        name: String,
        /// The ggml type id.
        id: u32,
    },
    /// A shape that cannot hold the type: rows not a whole number of blocks, or a size that
    /// overflows u64.
    #[error("tensor '{name}': shape {dims:?} is invalid for type {ty} ({why})")]
    BadShape {
        /// Tensor name.
        name: String,
        /// Declared dimensions, fastest-first.
        dims: Vec<u64>,
        /// Name of the tensor's type.
        ty: &'static str,
        /// Which check failed.
        why: &'static str,
    },
    /// A tensor whose data range `[start, end)` (absolute offsets) extends past the end of the file.
    #[error("tensor '{name}': data [{start}, {end}) lies outside the file ({len} bytes)")]
    TensorOutOfBounds {
        /// Tensor name.
        name: String,
        /// Absolute start offset (saturated on overflow).
        start: u64,
        /// Absolute end offset, exclusive (saturated on overflow).
        end: u64,
        /// File size.
        len: u64,
    },
    /// A tensor data offset that is not a multiple of the file's alignment.
    #[error("tensor '{name}': offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// Tensor name.
        name: String,
        /// Offset relative to the start of the data section.
        offset: u64,
        /// The file's `general.alignment` (default 32).
        alignment: u64,
    },
    /// The same tensor name appears twice.
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    /// `general.alignment` is zero, not a power of two, or not an unsigned integer (shown as 0).
    #[error("general.alignment {0} is not a non-zero power of two")]
    BadAlignment(u64),
}

/// A metadata value.
///
/// One variant per GGUF value type (type ids 0..=12); integer widths are kept as stored, so use
/// the `as_*` accessors, which accept any width that fits.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 6.
    F32(f32),
    /// Type 12.
    F64(f64),
    /// Type 7 (any non-zero byte is true).
    Bool(bool),
    /// Type 8: UTF-8 with a u64 length prefix.
    String(String),
    /// Type 9: elements of one type (nested at most 4 deep).
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a signed integer, if it is an integer of any width that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    /// The value as f32, if it is F32 or F64 (F64 is rounded). Integers are not converted.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }
    /// The value, if it is a Bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
    /// The value, if it is a String.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The elements, if it is an Array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// A short human-readable rendering (arrays are summarised by length).
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.len() > 80 => format!("{:?}…", &s[..s.floor_char_boundary(80)]),
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{} items]", a.len()),
            Value::F32(v) => format!("{v}"),
            Value::F64(v) => format!("{v}"),
            Value::Bool(v) => format!("{v}"),
            other => other
                .as_i64()
                .map(|v| v.to_string())
                .or_else(|| other.as_u64().map(|v| v.to_string()))
                .unwrap_or_default(),
        }
    }
}

/// One entry of the tensor table, validated against the file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`; unique within the file.
    pub name: String,
    /// Dimensions fastest-first, as GGUF stores them (`[576, 49152]` is 49152 rows of 576).
    pub dims: Vec<u64>,
    /// Storage type; the first dimension is a whole number of its blocks.
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub start: usize,
    /// Bytes of data; `start + len` is within the file.
    pub len: usize,
}

impl TensorInfo {
    /// Total elements (product of `dims`; 1 for zero dimensions). Checked not to overflow at parse.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Elements per row (the first dimension).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }
    /// Number of rows (the product of the remaining dimensions).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    /// The path it was opened from.
    pub path: PathBuf,
    /// GGUF format version (2 or 3).
    pub version: u32,
    map: Arc<Mmap>,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of tensor data offsets (`general.alignment`, default 32; a power of two).
    pub alignment: u64,
    /// Absolute offset of the tensor data section (end of the header, rounded up to `alignment`).
    pub data_offset: u64,
}

impl GgufFile {
    /// Open and validate `path`. Errors name the file and what is wrong.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            return Err(Error::IsDirectory(path));
        }
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only and private to this process. Like every mmap-based model
        // loader we rely on the file not being truncated or rewritten while it is mapped; all
        // reads below are bounds-checked against the length captured here.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        Self::parse(path.clone(), Arc::new(map)).map_err(|source| Error::Gguf { path, source })
    }

    fn parse(path: PathBuf, map: Arc<Mmap>) -> Result<GgufFile, GgufError> {
        let mut r = Reader {
            buf: &map[..],
            pos: 0,
        };
        let magic = r.bytes(4, "magic")?;
        let magic: [u8; 4] = magic.try_into().expect("4 bytes");
        if &magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::BadVersion(version));
        }
        // Minimum encoded sizes bound how many entries the remaining bytes can hold.
        let n_tensors = r.count("tensor", 8 + 4 + 4 + 8)?;
        let n_kv = r.count("metadata", 8 + 4)?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut index = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32("metadata value type")?;
            let value = r.value(&key, ty, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            Some(v) => v.as_u64().unwrap_or(0),
            None => DEFAULT_ALIGNMENT,
        };
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment(alignment));
        }

        struct RawTensor {
            name: String,
            dims: Vec<u64>,
            ty_id: u32,
            offset: u64,
        }
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("tensor dimension")?);
            }
            let ty_id = r.u32("tensor type")?;
            let offset = r.u64("tensor offset")?;
            raw.push(RawTensor {
                name,
                dims,
                ty_id,
                offset,
            });
        }

        let file_len = map.len() as u64;
        let data_offset = align_up(r.pos as u64, alignment).ok_or(GgufError::Truncated {
            what: "tensor data".into(),
            offset: r.pos as u64,
            needed: alignment,
            len: file_len,
        })?;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for t in raw {
            let ty = GgmlType::from_ggml_id(t.ty_id).ok_or_else(|| GgufError::UnknownType {
                name: t.name.clone(),
                id: t.ty_id,
            })?;
            let bad_shape = |why| GgufError::BadShape {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: ty.name(),
                why,
            };
            let n_elements = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| bad_shape("element count overflows"))?;
            let row = *t.dims.first().unwrap_or(&1);
            if !row.is_multiple_of(ty.block_len() as u64) {
                return Err(bad_shape("rows are not a whole number of blocks"));
            }
            let len = (n_elements / ty.block_len() as u64)
                .checked_mul(ty.block_bytes() as u64)
                .ok_or_else(|| bad_shape("byte size overflows"))?;
            if !t.offset.is_multiple_of(alignment) {
                return Err(GgufError::Misaligned {
                    name: t.name,
                    offset: t.offset,
                    alignment,
                });
            }
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(len));
            let (start, end) = match (start, end) {
                (Some(s), Some(e)) if e <= file_len => (s, e),
                _ => {
                    return Err(GgufError::TensorOutOfBounds {
                        name: t.name,
                        start: data_offset.saturating_add(t.offset),
                        end: data_offset.saturating_add(t.offset).saturating_add(len),
                        len: file_len,
                    })
                }
            };
            if tensor_index.insert(t.name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(t.name));
            }
            // Both fit in the file length, which fits in usize because it is mapped.
            tensors.push(TensorInfo {
                name: t.name,
                dims: t.dims,
                ty,
                start: start as usize,
                len: (end - start) as usize,
            });
        }

        Ok(GgufFile {
            path,
            version,
            map,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// Every metadata entry, in file order (keys are unique).
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }
    /// The metadata value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }
    /// Every tensor, in file order (names are unique).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
    /// The tensor's bytes, borrowed from the memory map.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.start..t.start + t.len]
    }
    /// The shared memory map, for weights that outlive a borrow of this struct.
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }
    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    // Typed metadata getters. `Ok(None)` when absent; an error when present with the wrong type.

    /// `key` as an unsigned integer of any width ([`Value::as_u64`]). `Ok(None)` when absent;
    /// [`Error::BadKey`] when present with another type or negative.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "an unsigned integer", Value::as_u64)
    }
    /// `key` as f32 ([`Value::as_f32`]: F32 or F64). `Ok(None)` when absent; an error when
    /// present with another type.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        self.typed(key, "a float", Value::as_f32)
    }
    /// `key` as a bool. `Ok(None)` when absent; an error when present with another type.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }
    /// `key` as a string. `Ok(None)` when absent; an error when present with another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| bad_key(key, "a string")),
        }
    }
    /// `key` as an array. `Ok(None)` when absent; an error when present with another type.
    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| bad_key(key, "an array")),
        }
    }
    fn typed<T>(
        &self,
        key: &str,
        what: &str,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| bad_key(key, what)),
        }
    }
}

fn bad_key(key: &str, what: &str) -> Error {
    Error::BadKey {
        key: key.to_string(),
        why: format!("expected {what}"),
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

/// A bounds-checked little-endian cursor over the mapped bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.bytes(N as u64, what)?.try_into().expect("N bytes"))
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A u64 count of items that each take at least `min_item_bytes` bytes of the file.
    fn count(&mut self, what: &str, min_item_bytes: u64) -> Result<usize, GgufError> {
        let offset = self.pos as u64;
        let count = self.u64(what)?;
        if count > self.remaining() / min_item_bytes.max(1) {
            return Err(GgufError::AbsurdCount {
                what: what.to_string(),
                count,
                offset,
                len: self.buf.len() as u64,
            });
        }
        Ok(count as usize)
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let offset = self.pos as u64;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 { offset })
    }
    fn value(&mut self, key: &str, ty: u32, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => Value::Bool(self.array::<1>(key)?[0] != 0),
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestedArray {
                        key: key.to_string(),
                    });
                }
                let elem_ty = self.u32(key)?;
                let min = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => 8,
                    9 => 12,
                    _ => {
                        return Err(GgufError::BadValueType {
                            key: key.to_string(),
                            ty: elem_ty,
                        })
                    }
                };
                let n = self.count(&format!("array '{key}'"), min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(key, elem_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            _ => {
                return Err(GgufError::BadValueType {
                    key: key.to_string(),
                    ty,
                })
            }
        })
    }
}
