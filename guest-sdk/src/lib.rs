//! `wazoo-sdk`: the guest SDK for Wazoo recipes.
//!
//! - [`abi`]: the versioned ABI (types shared with the host).

pub mod abi;
