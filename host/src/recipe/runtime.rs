//! Placeholder: filled by the runtime work (see mod.rs).
