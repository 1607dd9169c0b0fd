//! Length-prefixed framing: `int32 BE length` + payload, both directions.
//!
//! `take_frame` never allocates more than `max_len` for a frame: a peer announcing a
//! larger (or negative) length is refused before any of its payload is buffered,
//! which is how ZooKeeper treats frames over `jute.maxbuffer`.

use bytes::{Buf, BytesMut};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {len} is negative or over the limit of {max} bytes (jute.maxbuffer)")]
    BadLength { len: i32, max: usize },
}

/// Splits one complete frame's payload off the front of `buf`, if it holds one.
pub fn take_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 0 || len as usize > max_len {
        return Err(FrameError::BadLength { len, max: max_len });
    }
    let len = len as usize;
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_and_waits_for_more() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"ab");
        assert_eq!(take_frame(&mut b, 10).unwrap(), None);
        b.extend_from_slice(b"c");
        b.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(&take_frame(&mut b, 10).unwrap().unwrap()[..], b"abc");
        assert_eq!(&take_frame(&mut b, 10).unwrap().unwrap()[..], b"");
        assert!(b.is_empty());
    }

    #[test]
    fn refuses_oversized_and_negative_lengths() {
        let mut b = BytesMut::from(&11i32.to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut b, 10),
            Err(FrameError::BadLength { len: 11, max: 10 })
        );
        let mut b = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(take_frame(&mut b, 10).is_err());
    }
}
