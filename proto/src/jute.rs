//! Jute, ZooKeeper's binary record encoding: big-endian `int`/`long`, one-byte
//! `boolean`, length-prefixed `buffer`/`ustring`/`vector` where length -1 means null.
//!
//! The reader works on a complete frame (the length prefix already stripped), so a
//! truncated field is a `DecodeError`, never a panic or a read past the frame.

use thiserror::Error;

/// Why a frame could not be decoded. The server answers an undecodable request body
/// with MarshallingError and an undecodable handshake or header by closing the
/// connection, as ZooKeeper does.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("negative or oversized length {len} at offset {offset}")]
    BadLength { offset: usize, len: i32 },
    #[error("string at offset {offset} is not UTF-8")]
    BadUtf8 { offset: usize },
    #[error("unknown opcode {0}")]
    UnknownOpCode(i32),
    #[error("invalid value {value} for {field}")]
    BadValue { field: &'static str, value: i64 },
    #[error("{0}")]
    Invalid(&'static str),
}

/// Cursor over one frame's bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1)?[0] != 0)
    }

    /// Reads a length prefix; -1 is null. Any other negative length, or one longer
    /// than what is left of the frame, is an error before anything is allocated.
    fn read_len(&mut self) -> Result<Option<usize>, DecodeError> {
        let offset = self.pos;
        let len = self.read_i32()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 || len as usize > self.remaining() {
            return Err(DecodeError::BadLength { offset, len });
        }
        Ok(Some(len as usize))
    }

    pub fn read_buffer(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.read_len()? {
            None => Ok(None),
            Some(n) => Ok(Some(self.take(n)?.to_vec())),
        }
    }

    pub fn read_ustring_opt(&mut self) -> Result<Option<String>, DecodeError> {
        let offset = self.pos;
        match self.read_len()? {
            None => Ok(None),
            Some(n) => {
                let b = self.take(n)?;
                String::from_utf8(b.to_vec())
                    .map(Some)
                    .map_err(|_| DecodeError::BadUtf8 { offset })
            }
        }
    }

    /// A `ustring` where null is read as the empty string (Java's server treats a
    /// null path like an invalid path later, so we keep it distinguishable only
    /// where a record needs to).
    pub fn read_ustring(&mut self) -> Result<String, DecodeError> {
        Ok(self.read_ustring_opt()?.unwrap_or_default())
    }

    /// Reads a vector's element count; -1 (null) is returned as 0. Each element takes at
    /// least one byte, so a count larger than the rest of the frame is rejected up front.
    pub fn read_vec_len(&mut self) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.read_i32()?;
        if n == -1 {
            return Ok(0);
        }
        if n < 0 || n as usize > self.remaining() {
            return Err(DecodeError::BadLength { offset, len: n });
        }
        Ok(n as usize)
    }

    pub fn read_vec<T>(
        &mut self,
        mut f: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.read_vec_len()?;
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(v)
    }

    pub fn read_string_vec(&mut self) -> Result<Vec<String>, DecodeError> {
        self.read_vec(|r| r.read_ustring())
    }

    /// The bytes not consumed yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

/// Appends jute fields to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            buf: Vec::with_capacity(64),
        }
    }

    /// A writer that starts with a 4-byte placeholder for the frame length;
    /// `finish_frame` fills it in.
    pub fn framed() -> Self {
        Writer { buf: vec![0; 4] }
    }

    pub fn finish_frame(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4) as i32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn write_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn write_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn write_bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }

    pub fn write_buffer(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.write_i32(-1),
            Some(b) => {
                self.write_i32(b.len() as i32);
                self.buf.extend_from_slice(b);
            }
        }
    }

    pub fn write_ustring(&mut self, v: &str) {
        self.write_buffer(Some(v.as_bytes()));
    }

    pub fn write_ustring_opt(&mut self, v: Option<&str>) {
        self.write_buffer(v.map(str::as_bytes));
    }

    pub fn write_vec<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.write_i32(items.len() as i32);
        for i in items {
            f(self, i);
        }
    }

    pub fn write_string_vec(&mut self, items: &[String]) {
        self.write_vec(items, |w, s| w.write_ustring(s));
    }
}

/// A jute record: a struct whose fields are encoded in declaration order.
pub trait Record: Sized {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    fn encode(&self, w: &mut Writer);

    fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        Self::decode(&mut Reader::new(b))
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_primitives() {
        let mut w = Writer::new();
        w.write_i32(-5);
        w.write_i64(1 << 40);
        w.write_bool(true);
        w.write_buffer(None);
        w.write_ustring("héllo");
        w.write_string_vec(&["a".into(), "bc".into()]);
        let b = w.into_inner();
        let mut r = Reader::new(&b);
        assert_eq!(r.read_i32().unwrap(), -5);
        assert_eq!(r.read_i64().unwrap(), 1 << 40);
        assert!(r.read_bool().unwrap());
        assert_eq!(r.read_buffer().unwrap(), None);
        assert_eq!(r.read_ustring().unwrap(), "héllo");
        assert_eq!(
            r.read_string_vec().unwrap(),
            vec!["a".to_string(), "bc".to_string()]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn rejects_lengths_past_the_frame() {
        let mut w = Writer::new();
        w.write_i32(100);
        w.buf.extend_from_slice(b"short");
        let b = w.into_inner();
        assert!(matches!(
            Reader::new(&b).read_buffer(),
            Err(DecodeError::BadLength { len: 100, .. })
        ));
        assert!(matches!(
            Reader::new(&[0, 0]).read_i32(),
            Err(DecodeError::Truncated { .. })
        ));
        let neg = (-7i32).to_be_bytes();
        assert!(matches!(
            Reader::new(&neg).read_string_vec(),
            Err(DecodeError::BadLength { len: -7, .. })
        ));
        let huge = i32::MAX.to_be_bytes();
        assert!(Reader::new(&huge).read_string_vec().is_err());
    }
}
