//! Per-recipe counters for `/metrics`: invocations, errors by name and fuel, counted
//! where the invocation ran. Every replica runs every invocation, so each server's
//! counters describe the same work; they are server-local and start at zero when the
//! process starts (like every other Prometheus counter).

use super::RecipeError;
use parking_lot::Mutex;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleCounters {
    /// Client calls run.
    pub calls: u64,
    /// Event handler runs (node, session and timer events).
    pub events: u64,
    /// Failed invocations by stable error name (RecipeTrap, RecipeFuelExhausted, ...).
    pub errors: BTreeMap<&'static str, u64>,
    /// Fuel consumed by finished invocations, plus the whole budget of those that ran
    /// out of it.
    pub fuel: u64,
}

#[derive(Debug, Default)]
pub struct RecipeStats {
    modules: Mutex<BTreeMap<String, ModuleCounters>>,
}

impl RecipeStats {
    pub fn record(&self, module: &str, is_call: bool, fuel: u64, error: Option<&RecipeError>) {
        let mut g = self.modules.lock();
        let c = g.entry(module.to_string()).or_default();
        if is_call {
            c.calls += 1;
        } else {
            c.events += 1;
        }
        c.fuel = c.fuel.saturating_add(fuel);
        if let Some(e) = error {
            *c.errors.entry(error_name(e)).or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, ModuleCounters> {
        self.modules.lock().clone()
    }
}

pub fn error_name(e: &RecipeError) -> &'static str {
    match e {
        RecipeError::Invalid(_) => "RecipeInvalid",
        RecipeError::Trap(_) => "RecipeTrap",
        RecipeError::FuelExhausted(_) => "RecipeFuelExhausted",
        RecipeError::LimitExceeded(_) => "RecipeLimitExceeded",
        RecipeError::Failed(_) => "RecipeFailed",
    }
}
