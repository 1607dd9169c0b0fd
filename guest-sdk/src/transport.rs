//! How host calls travel. Recipe code is the same on both sides of this module:
//!
//! - on wasm32, through the `wazoo` imports (module `raw`);
//! - natively, through a host installed for the current thread, normally by the test
//!   harness ([`crate::testing::Harness`]). Requests and responses are MessagePack-encoded
//!   on that path too, so native tests exercise the same encoding as the real host.

use crate::abi::{HostRequest, HostResponse};

/// Encodes `request`, sends it to the host and decodes the response.
///
/// A request that does not encode or a response that does not decode is an ABI bug, not a
/// recoverable error: it panics (which traps on wasm32).
pub fn host_call(request: &HostRequest) -> HostResponse {
    let bytes = rmp_serde::to_vec_named(request).expect("encode HostRequest");
    let response = send(&bytes);
    rmp_serde::from_slice(&response).expect("decode HostResponse")
}

#[cfg(target_arch = "wasm32")]
fn send(request: &[u8]) -> Vec<u8> {
    crate::raw::call(request)
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;

    /// A native host: takes an encoded `HostRequest`, returns an encoded `HostResponse`.
    pub type NativeHost = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

    thread_local! {
        static HOST: RefCell<Option<NativeHost>> = const { RefCell::new(None) };
    }

    /// Installs `host` for this thread until the returned guard drops (the previous host,
    /// if any, comes back then).
    pub fn install_host(host: NativeHost) -> HostGuard {
        let previous = HOST.with(|h| h.borrow_mut().replace(host));
        HostGuard {
            previous: Some(previous),
        }
    }

    /// Restores the previously installed native host on drop.
    pub struct HostGuard {
        previous: Option<Option<NativeHost>>,
    }

    impl Drop for HostGuard {
        fn drop(&mut self) {
            let previous = self.previous.take().flatten();
            HOST.with(|h| *h.borrow_mut() = previous);
        }
    }

    pub(super) fn send(request: &[u8]) -> Vec<u8> {
        // Take the host out while it runs so a host that calls back into the guest does
        // not find the RefCell borrowed.
        let mut host = HOST.with(|h| h.borrow_mut().take()).expect(
            "no Wazoo host on this thread: run recipe code through wazoo_sdk::testing::Harness",
        );
        let response = host(request);
        HOST.with(|h| *h.borrow_mut() = Some(host));
        response
    }
}
