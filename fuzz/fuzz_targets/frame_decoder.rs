//! Feeds arbitrary bytes through everything the server runs on bytes from the network
//! before any state changes: frame splitting (`take_frame`, with the default and a
//! small `jute.maxbuffer`), the ConnectRequest decoder, and the request decoder
//! (`decode_request`: header, then the typed body of any opcode).
//!
//! Properties checked beyond "no panic, no out-of-memory":
//! - `take_frame` never hands out a frame longer than the limit, consumes exactly
//!   `4 + len` bytes per frame, and refuses exactly the lengths that are negative or over
//!   the limit;
//! - whatever decodes re-encodes to bytes that decode to the same value (the encoder
//!   and decoder agree, so the server's view of a request is the client's).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wazoo_proto::frame::take_frame;
use wazoo_proto::request::{decode_request, encode_request_frame};
use wazoo_proto::{ConnectRequest, Record};

const DEFAULT_MAX: usize = wazoo_proto::consts::DEFAULT_MAX_BUFFER;

fn check_payload(payload: &[u8]) {
    if let Ok(req) = ConnectRequest::from_bytes(payload) {
        let again = ConnectRequest::from_bytes(&req.to_bytes())
            .expect("a re-encoded ConnectRequest decodes");
        assert_eq!(again, req);
    }
    if let Ok((header, req)) = decode_request(payload) {
        // Special xids are rewritten by nobody here: encode with the header's own xid.
        let frame = encode_request_frame(header.xid, &req);
        let (h2, r2) = decode_request(&frame[4..]).expect("a re-encoded request decodes");
        assert_eq!(h2.xid, header.xid);
        assert_eq!(r2, req);
    }
}

fn split_all(data: &[u8], max: usize) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let announced = (before >= 4).then(|| i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        match take_frame(&mut buf, max) {
            Ok(Some(frame)) => {
                let len = announced.expect("a frame needs a length prefix");
                assert!(
                    len >= 0 && len as usize <= max,
                    "frame of {len} bytes handed out with limit {max}"
                );
                assert_eq!(frame.len(), len as usize);
                assert_eq!(buf.len(), before - 4 - frame.len());
                check_payload(&frame);
            }
            Ok(None) => {
                if let Some(len) = announced {
                    assert!(
                        len >= 0 && len as usize <= max,
                        "length {len} over the limit {max} was not refused"
                    );
                    assert!(
                        before < 4 + len as usize,
                        "a complete frame was not handed out"
                    );
                }
                assert_eq!(buf.len(), before, "nothing is consumed while waiting");
                break;
            }
            Err(_) => {
                let len = announced.expect("an error needs a length prefix");
                assert!(
                    len < 0 || len as usize > max,
                    "length {len} within the limit {max} was refused"
                );
                break;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The bytes as they would arrive on the socket: one or more frames.
    split_all(data, DEFAULT_MAX);
    split_all(data, 64);
    // The bytes as one frame's payload (what the decoders see after framing).
    check_payload(data);
});
