//! Server-side wasm recipes (docs/ABI.md).
//!
//! - [`runtime`]: the wasmtime engine, pinned for determinism; module validation,
//!   the per-server compile cache and fresh, fast instances per invocation. Knows
//!   nothing about the tree: host calls go to a [`HostEnv`].
//! - `apply` (state machine side): runs calls and events inside the apply of a log
//!   entry, stages the recipe's writes on the tree and commits or rolls them back.

pub mod apply;
pub mod runtime;
pub mod stats;

pub use runtime::{DeterminismProfile, HostEnv, Outcome, Runtime, RuntimeLimits};

pub use wazoo_sdk::abi;

/// Why a recipe invocation or upload failed. Stable names: they are what `wazoo recipe
/// call` prints and what clients match on (docs/PROTOCOL.md maps each to its wire code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// The module failed validation (not wasm, does not compile, wrong ABI, imports
    /// outside the host ABI, too large).
    #[error("RecipeInvalid: {0}")]
    Invalid(String),
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow, ...) or
    /// broke the ABI (bad pointer, undecodable host request).
    #[error("RecipeTrap: {0}")]
    Trap(String),
    /// The invocation used its whole fuel budget.
    #[error("RecipeFuelExhausted: used the budget of {0} fuel units")]
    FuelExhausted(u64),
    /// A resource limit: memory, table, instances, reply size, writes per invocation.
    #[error("RecipeLimitExceeded: {0}")]
    LimitExceeded(String),
    /// The handler failed on purpose (`Fail`, non-zero return, no reply).
    #[error("RecipeFailed: {0}")]
    Failed(String),
}

impl RecipeError {
    /// The reason without the error's name (the wire carries the name as its code).
    pub fn detail(&self) -> String {
        match self {
            RecipeError::Invalid(m)
            | RecipeError::Trap(m)
            | RecipeError::LimitExceeded(m)
            | RecipeError::Failed(m) => m.clone(),
            RecipeError::FuelExhausted(budget) => {
                format!("used the budget of {budget} fuel units")
            }
        }
    }
}
