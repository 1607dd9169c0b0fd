//! The raw ABI on wasm32: the two host imports and the bodies of the three exports the
//! [`recipe!`](crate::recipe) macro generates. Recipe authors never need this module.

use crate::recipe::Recipe;

#[link(wasm_import_module = "wazoo")]
extern "C" {
    /// Performs the encoded `HostRequest` at `ptr..ptr+len`; returns the length of the
    /// encoded `HostResponse`, to be fetched with [`host_read`].
    pub fn host_call(ptr: i32, len: i32) -> i64;
    /// Copies the pending response to `ptr` (at most `len` bytes); returns the bytes
    /// copied.
    pub fn host_read(ptr: i32, len: i32) -> i32;
}

/// Sends one encoded request and returns the encoded response.
pub(crate) fn call(request: &[u8]) -> Vec<u8> {
    // SAFETY: the pointer and length describe `request`, which outlives the call.
    let len = unsafe { host_call(request.as_ptr() as usize as i32, request.len() as i32) };
    assert!(len >= 0, "host_call returned {len}");
    let mut response = vec![0u8; len as usize];
    // SAFETY: `response` has `len` writable bytes.
    let read = unsafe { host_read(response.as_mut_ptr() as usize as i32, len as i32) };
    assert!(read == len as i32, "host_read copied {read} of {len} bytes");
    response
}

/// Body of the `wazoo_alloc` export: `len` writable bytes for the host's `Input`.
///
/// The buffer is leaked on purpose: the host throws the whole module instance away after
/// every invocation, so nothing in it ever needs freeing.
pub fn alloc(len: i32) -> i32 {
    let mut buf = Vec::<u8>::with_capacity(len.max(0) as usize);
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr as usize as i32
}

/// Body of the `wazoo_handle` export: decode the `Input`, run the recipe, return 0 to
/// commit or 1 to discard.
pub fn handle<R: Recipe>(ptr: i32, len: i32) -> i32 {
    // Panics abort the module (panic = "abort"), which the host reports as a trap; log
    // the message first so the server log says why.
    std::panic::set_hook(Box::new(|info| {
        let _ =
            crate::transport::host_call(&crate::abi::HostRequest::Log(format!("panic: {info}")));
    }));
    // SAFETY: the host wrote `len` bytes at `ptr`, in a buffer from `wazoo_alloc`.
    let input = unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) };
    crate::recipe::run::<R>(input)
}
