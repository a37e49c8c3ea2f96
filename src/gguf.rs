//! A minimal GGUF (version 3) writer and header reader.
//!
//! Owns the byte layout of GGUF files: metadata key/values, tensor descriptors, alignment and
//! tensor data. It knows nothing about model architectures (that is `synthetic.rs`) and never
//! prints. The layout follows ggml's `gguf.cpp`: little-endian, strings as `u64` length + bytes,
//! tensor data aligned to `general.alignment` (32 by default) relative to the data section.

use std::io::{self, Read, Write};

/// GGUF magic, the bytes `GGUF`.
pub const MAGIC: [u8; 4] = *b"GGUF";
const VERSION: u32 = 3;
/// Data alignment used by every file this writer produces (ggml's default).
pub const ALIGNMENT: u64 = 32;

/// ggml tensor element types this writer emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
}

impl TensorType {
    fn ggml_id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
        }
    }
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            TensorType::F32 => 4,
            TensorType::F16 => 2,
        }
    }
}

/// A metadata value. Arrays are homogeneous, as GGUF requires.
#[derive(Clone, Debug)]
pub enum Value {
    U16(u16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
}

const T_UINT16: u32 = 2;
const T_INT32: u32 = 5;
const T_UINT32: u32 = 4;
const T_FLOAT32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// One tensor's descriptor: name, shape in ggml order (`ne[0]` = row length) and type.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: TensorType,
}

impl TensorInfo {
    /// Size of the tensor's data in bytes (without alignment padding).
    pub fn n_bytes(&self) -> u64 {
        self.ne.iter().product::<u64>() * self.ty.size()
    }
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

fn pad(n: u64) -> u64 {
    (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT
}

fn put_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn put_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U16(x) => {
            w.write_all(&T_UINT16.to_le_bytes())?;
            w.write_all(&x.to_le_bytes())
        }
        Value::U32(x) => {
            w.write_all(&T_UINT32.to_le_bytes())?;
            w.write_all(&x.to_le_bytes())
        }
        Value::I32(x) => {
            w.write_all(&T_INT32.to_le_bytes())?;
            w.write_all(&x.to_le_bytes())
        }
        Value::F32(x) => {
            w.write_all(&T_FLOAT32.to_le_bytes())?;
            w.write_all(&x.to_le_bytes())
        }
        Value::Bool(x) => {
            w.write_all(&T_BOOL.to_le_bytes())?;
            w.write_all(&[u8::from(*x)])
        }
        Value::Str(s) => {
            w.write_all(&T_STRING.to_le_bytes())?;
            put_str(w, s)
        }
        Value::StrArray(items) => {
            put_array_header(w, T_STRING, items.len())?;
            items.iter().try_for_each(|s| put_str(w, s))
        }
        Value::I32Array(items) => {
            put_array_header(w, T_INT32, items.len())?;
            items.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
        }
        Value::F32Array(items) => {
            put_array_header(w, T_FLOAT32, items.len())?;
            items.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
        }
    }
}

fn put_array_header(w: &mut impl Write, elem: u32, n: usize) -> io::Result<()> {
    w.write_all(&T_ARRAY.to_le_bytes())?;
    w.write_all(&elem.to_le_bytes())?;
    w.write_all(&(n as u64).to_le_bytes())
}

/// Writes the header, metadata and tensor descriptors, then returns a [`DataWriter`] that
/// must be given every tensor's bytes in descriptor order.
pub fn write_header<W: Write>(
    mut w: W,
    kv: &[(String, Value)],
    tensors: &[TensorInfo],
) -> io::Result<DataWriter<W>> {
    let mut pos = CountingWriter {
        inner: &mut w,
        n: 0,
    };
    pos.write_all(&MAGIC)?;
    pos.write_all(&VERSION.to_le_bytes())?;
    pos.write_all(&(tensors.len() as u64).to_le_bytes())?;
    pos.write_all(&(kv.len() as u64).to_le_bytes())?;
    for (k, v) in kv {
        put_str(&mut pos, k)?;
        put_value(&mut pos, v)?;
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut pos, &t.name)?;
        pos.write_all(&(t.ne.len() as u32).to_le_bytes())?;
        for d in &t.ne {
            pos.write_all(&d.to_le_bytes())?;
        }
        pos.write_all(&t.ty.ggml_id().to_le_bytes())?;
        pos.write_all(&offset.to_le_bytes())?;
        offset += t.n_bytes() + pad(t.n_bytes());
    }
    let n = pos.n;
    w.write_all(&vec![0u8; pad(n) as usize])?;
    Ok(DataWriter {
        w,
        expected: tensors.iter().map(TensorInfo::n_bytes).collect(),
        next: 0,
    })
}

/// Streams tensor data after the header, checking sizes and inserting alignment padding.
pub struct DataWriter<W: Write> {
    w: W,
    expected: Vec<u64>,
    next: usize,
}

impl<W: Write> DataWriter<W> {
    /// Writes the next tensor's bytes; their length must match its descriptor.
    pub fn tensor(&mut self, bytes: &[u8]) -> io::Result<()> {
        let want = *self.expected.get(self.next).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "more tensors than descriptors")
        })?;
        if bytes.len() as u64 != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tensor {} has {} bytes, descriptor says {want}",
                    self.next,
                    bytes.len()
                ),
            ));
        }
        self.w.write_all(bytes)?;
        self.w.write_all(&vec![0u8; pad(want) as usize])?;
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        if self.next != self.expected.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} of {} tensors written", self.next, self.expected.len()),
            ));
        }
        Ok(self.w)
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the first bytes of a file say about it.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniff {
    Gguf { version: u32 },
    NotGguf { first_bytes: Vec<u8> },
}

/// Reads the magic and version of a GGUF file without loading it.
pub fn sniff(r: &mut impl Read) -> io::Result<Sniff> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        let k = r.read(&mut head[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    if got >= 8 && head[..4] == MAGIC {
        let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        return Ok(Sniff::Gguf { version });
    }
    Ok(Sniff::NotGguf {
        first_bytes: head[..got.min(4)].to_vec(),
    })
}

/// A metadata value as read back: scalars, strings, and arrays by their length only.
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    Array { len: u64 },
}

impl Meta {
    /// The value as an unsigned integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Meta::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

fn rd<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn rd_u32(r: &mut impl Read) -> io::Result<u32> {
    Ok(u32::from_le_bytes(rd(r)?))
}

fn rd_u64(r: &mut impl Read) -> io::Result<u64> {
    Ok(u64::from_le_bytes(rd(r)?))
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn rd_str(r: &mut impl Read) -> io::Result<String> {
    let n = rd_u64(r)?;
    if n > 1 << 24 {
        return Err(bad("GGUF string longer than 16 MiB"));
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Size in bytes of a fixed-size GGUF value type; `None` for strings and arrays.
fn fixed_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn rd_scalar(r: &mut impl Read, t: u32) -> io::Result<Meta> {
    Ok(match t {
        0 => Meta::Int(i128::from(u8::from_le_bytes(rd(r)?))),
        1 => Meta::Int(i128::from(i8::from_le_bytes(rd(r)?))),
        2 => Meta::Int(i128::from(u16::from_le_bytes(rd(r)?))),
        3 => Meta::Int(i128::from(i16::from_le_bytes(rd(r)?))),
        4 => Meta::Int(i128::from(u32::from_le_bytes(rd(r)?))),
        5 => Meta::Int(i128::from(i32::from_le_bytes(rd(r)?))),
        6 => Meta::Float(f64::from(f32::from_le_bytes(rd(r)?))),
        7 => Meta::Bool(rd::<1>(r)?[0] != 0),
        8 => Meta::Str(rd_str(r)?),
        10 => Meta::Int(i128::from(u64::from_le_bytes(rd(r)?))),
        11 => Meta::Int(i128::from(i64::from_le_bytes(rd(r)?))),
        12 => Meta::Float(f64::from_le_bytes(rd(r)?)),
        _ => return Err(bad("unknown GGUF value type")),
    })
}

/// Reads the metadata key/values of a GGUF file (arrays are skipped, keeping their length).
pub fn read_metadata(r: &mut impl Read) -> io::Result<Vec<(String, Meta)>> {
    Ok(read_head(r, u64::MAX)?.1)
}

/// The header up to the tensor descriptors: the tensor count and the metadata. `file_len`
/// bounds the counts a crafted header may claim.
fn read_head(r: &mut impl Read, file_len: u64) -> io::Result<(u64, Vec<(String, Meta)>)> {
    if rd::<4>(r)? != MAGIC {
        return Err(bad("not a GGUF file"));
    }
    let version = rd_u32(r)?;
    if !(2..=3).contains(&version) {
        return Err(bad("unsupported GGUF version"));
    }
    let n_tensors = rd_u64(r)?;
    let n_kv = rd_u64(r)?;
    // a tensor descriptor takes at least 24 bytes, a key/value 13: more than the file can hold
    // is a crafted or damaged header
    if n_tensors > file_len / 24 || n_kv > file_len / 13 {
        return Err(bad("counts larger than the file can hold"));
    }
    let mut out = Vec::new();
    for _ in 0..n_kv {
        let key = rd_str(r)?;
        let t = rd_u32(r)?;
        let v = if t == T_ARRAY {
            let et = rd_u32(r)?;
            let len = rd_u64(r)?;
            match fixed_size(et) {
                Some(sz) => {
                    let n = sz
                        .checked_mul(len)
                        .ok_or_else(|| bad("an array larger than any file"))?;
                    if io::copy(&mut r.by_ref().take(n), &mut io::sink())? < n {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                None if et == T_STRING => {
                    for _ in 0..len {
                        let n = rd_u64(r)?;
                        io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
                    }
                }
                None => return Err(bad("nested GGUF arrays are not supported")),
            }
            Meta::Array { len }
        } else {
            rd_scalar(r, t)?
        };
        out.push((key, v));
    }
    Ok((n_tensors, out))
}

/// ggml's tensor types as the pinned llama.cpp defines them: (elements per block, bytes per
/// block) by type id; `None` for an id it does not know.
fn block(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 | 20 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 36),
        10 => (256, 84),
        11 | 21 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 | 35 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        22 => (256, 82),
        23 => (256, 136),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 | 28 => (1, 8),
        29 => (256, 56),
        34 => (256, 54),
        39 => (32, 17),
        40 => (64, 36),
        41 => (128, 18),
        42 => (64, 18),
        _ => return None,
    })
}

/// What a GGUF file's header says about the whole file.
#[derive(Debug)]
pub struct Layout {
    pub metadata: Vec<(String, Meta)>,
    pub n_tensors: u64,
    /// The size the file must have: the data section's start plus the end of its last tensor.
    /// `None` when a tensor is of a type this build does not know.
    pub needed_bytes: Option<u64>,
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Reads a GGUF file's whole header — metadata and tensor descriptors — checking it against
/// the file's length `file_len` (what a crafted or damaged header claims fails here, as
/// `InvalidData` or `UnexpectedEof`), and computes the size the file must have.
pub fn read_layout(r: &mut impl Read, file_len: u64) -> io::Result<Layout> {
    let mut r = Counted { inner: r, n: 0 };
    let (n_tensors, metadata) = read_head(&mut r, file_len)?;
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(ALIGNMENT);
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(bad("general.alignment is not a power of two"));
    }
    let mut end = Some(0u64);
    for _ in 0..n_tensors {
        let _name = rd_str(&mut r)?;
        let n_dims = rd_u32(&mut r)?;
        if n_dims == 0 || n_dims > 4 {
            return Err(bad("a tensor with more than 4 dimensions"));
        }
        let mut elements = 1u64;
        let mut ne0 = 0;
        for d in 0..n_dims {
            let ne = rd_u64(&mut r)?;
            if d == 0 {
                ne0 = ne;
            }
            elements = elements
                .checked_mul(ne)
                .ok_or_else(|| bad("a tensor larger than any file"))?;
        }
        let t = rd_u32(&mut r)?;
        let offset = rd_u64(&mut r)?;
        let bytes = match block(t) {
            Some((per, _)) if ne0 % per != 0 => {
                return Err(bad("a tensor row that is not whole blocks"));
            }
            Some((per, size)) => Some(
                (elements / per)
                    .checked_mul(size)
                    .and_then(|b| b.checked_add(offset))
                    .ok_or_else(|| bad("a tensor larger than any file"))?,
            ),
            None => None,
        };
        end = match (end, bytes) {
            (Some(e), Some(b)) => Some(e.max(b)),
            _ => None,
        };
    }
    let data_start = r.n.div_ceil(alignment) * alignment;
    Ok(Layout {
        metadata,
        n_tensors,
        needed_bytes: end.and_then(|e| e.checked_add(data_start)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_gguf_v3() {
        let kv = vec![
            (
                "general.architecture".to_string(),
                Value::Str("gpt2".into()),
            ),
            ("x.n".to_string(), Value::U32(7)),
        ];
        let tensors = vec![TensorInfo {
            name: "a".into(),
            ne: vec![3],
            ty: TensorType::F32,
        }];
        let mut buf = Vec::new();
        let mut dw = write_header(&mut buf, &kv, &tensors).unwrap();
        dw.tensor(&[0u8; 12]).unwrap();
        dw.finish().unwrap();
        assert_eq!(&buf[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(buf[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(buf[8..16].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(buf[16..24].try_into().unwrap()), 2);
        let meta = read_metadata(&mut buf.as_slice()).unwrap();
        assert_eq!(
            meta[0],
            ("general.architecture".into(), Meta::Str("gpt2".into()))
        );
        assert_eq!(meta[1].1.as_u64(), Some(7));
        // data section starts aligned and the tensor is padded to the alignment
        assert_eq!(buf.len() as u64 % ALIGNMENT, 0);
        assert_eq!(
            sniff(&mut buf.as_slice()).unwrap(),
            Sniff::Gguf { version: 3 }
        );
    }

    #[test]
    fn the_layout_gives_the_files_size_and_refuses_crafted_headers() {
        let tensors = vec![
            TensorInfo {
                name: "a".into(),
                ne: vec![4, 2],
                ty: TensorType::F16,
            },
            TensorInfo {
                name: "b".into(),
                ne: vec![3],
                ty: TensorType::F32,
            },
        ];
        let mut buf = Vec::new();
        let mut dw = write_header(&mut buf, &[], &tensors).unwrap();
        dw.tensor(&[0u8; 16]).unwrap();
        dw.tensor(&[0u8; 12]).unwrap();
        dw.finish().unwrap();
        let n = buf.len() as u64;
        let l = read_layout(&mut buf.as_slice(), n).unwrap();
        assert_eq!(l.n_tensors, 2);
        // the last tensor ends 12 bytes after its aligned offset; the file pads to alignment
        let needed = l.needed_bytes.unwrap();
        assert!(needed <= n && n - needed < ALIGNMENT, "{needed} of {n}");
        // a header claiming 2^40 tensors, and one cut short
        let mut crafted = buf[..8].to_vec();
        crafted.extend_from_slice(&(1u64 << 40).to_le_bytes());
        crafted.extend_from_slice(&0u64.to_le_bytes());
        assert!(read_layout(&mut crafted.as_slice(), crafted.len() as u64).is_err());
        assert!(read_layout(&mut &buf[..40], 40).is_err());
    }

    #[test]
    fn wrong_tensor_size_is_rejected() {
        let tensors = vec![TensorInfo {
            name: "a".into(),
            ne: vec![4, 2],
            ty: TensorType::F16,
        }];
        let mut buf = Vec::new();
        let mut dw = write_header(&mut buf, &[], &tensors).unwrap();
        assert!(dw.tensor(&[0u8; 15]).is_err());
        assert!(dw.tensor(&[0u8; 16]).is_ok());
        assert!(dw.tensor(&[0u8; 16]).is_err());
    }

    #[test]
    fn sniff_rejects_other_files() {
        let r = sniff(&mut &b"PK\x03\x04rest"[..]).unwrap();
        assert_eq!(
            r,
            Sniff::NotGguf {
                first_bytes: b"PK\x03\x04".to_vec()
            }
        );
        assert!(matches!(
            sniff(&mut &b""[..]).unwrap(),
            Sniff::NotGguf { .. }
        ));
    }
}
