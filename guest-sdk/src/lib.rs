//! `wazoo-sdk`: the guest SDK for Wazoo recipes, in layers:
//!
//! - [`abi`]: the versioned ABI (types shared with the host); docs/ABI.md in prose.
//! - `raw` (wasm32 only): the `wazoo` imports and the bodies of the exports.
//! - [`transport`]: how a host call travels: through `raw` on wasm32, through a host
//!   installed for the thread (the test harness) natively. Recipe code is the same.
//! - the safe API, re-exported here: [`get`], [`create`], [`reply`], [`park`],
//!   [`complete`], [`notify`], [`subscribe`], [`set_timer`], [`now_ms`], [`Rng`], ...
//! - the entry point: the [`Recipe`] trait, [`Call`] and the [`recipe!`] macro.
//! - [`testing`] (native only): an in-memory host to unit-test recipes.
//!
//! A recipe in full:
//!
//! ```
//! use serde::Deserialize;
//! use wazoo_sdk::{Call, Error, Recipe, Result};
//!
//! #[derive(Deserialize)]
//! struct Put { path: String, data: String }
//!
//! struct Store;
//!
//! impl Recipe for Store {
//!     fn call(call: &Call) -> Result<()> {
//!         match call.function() {
//!             "put" => {
//!                 let args: Put = call.args()?;
//!                 wazoo_sdk::create_all(&args.path)?;
//!                 wazoo_sdk::set(&args.path, args.data.as_bytes(), -1)?;
//!                 call.reply(&())
//!             }
//!             other => Err(Error::UnknownFunction(other.to_string())),
//!         }
//!     }
//! }
//!
//! wazoo_sdk::recipe!(Store);
//! ```

pub mod abi;
pub mod api;
#[cfg(any(test, all(target_arch = "wasm32", feature = "arena")))]
mod arena;
mod error;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod raw;
mod recipe;
mod rng;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod transport;

pub use abi::{CreateMode, ErrorCode, Event, Identity, NodeChange, ParkedCall, Stat, WriteOp};
pub use api::*;
pub use error::{Error, Result};
pub use recipe::{run, Call, Recipe};
pub use rng::Rng;

/// Re-exported for recipes (`wazoo_sdk::serde::Deserialize`) so they need not depend on
/// serde themselves if they do not want to.
pub use rmp_serde;
pub use serde;
