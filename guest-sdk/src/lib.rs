//! `wazoo-sdk`: the guest SDK for Wazoo recipes.
//!
//! Not implemented yet: the recipe runtime (issue "Wasm recipe runtime") defines the
//! ABI this crate wraps. It exports nothing today on purpose, so no recipe can be
//! built against an ABI that does not exist.
