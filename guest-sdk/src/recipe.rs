//! The entry point: the [`Recipe`] trait, the [`Call`] a handler receives, the
//! [`recipe!`](crate::recipe!) macro and the dispatcher behind `wazoo_handle`.

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::abi::{self, Caller, Context, Event, HostRequest, Identity, Input, Invocation};
use crate::error::{Error, Result};

/// A recipe: what runs when a client calls one of its functions or when something it
/// subscribed to happens. Both methods have defaults, so implement only what you need.
///
/// ```
/// use wazoo_sdk::{Call, Error, Recipe, Result};
///
/// struct Hello;
///
/// impl Recipe for Hello {
///     fn call(call: &Call) -> Result<()> {
///         match call.function() {
///             "hello" => call.reply(&format!("hello, session {}", call.session_id())),
///             other => Err(Error::UnknownFunction(other.to_string())),
///         }
///     }
/// }
///
/// wazoo_sdk::recipe!(Hello);
/// ```
pub trait Recipe {
    /// Handles a client call. It must end the call one way or another: `reply` (or
    /// [`Call::reply`]), `park`, or return `Err` (the call fails with the error's text and
    /// every write of this invocation is discarded). Returning `Ok(())` without replying or
    /// parking fails the call too.
    ///
    /// The default fails every call with "unknown function NAME".
    fn call(call: &Call) -> Result<()> {
        Err(Error::UnknownFunction(call.function().to_string()))
    }

    /// Handles an event the recipe subscribed to (a node change, a session closing, a
    /// timer). Returning `Err` discards the invocation's writes (the error is logged).
    /// The default ignores every event.
    fn event(event: &Event) -> Result<()> {
        let _ = event;
        Ok(())
    }
}

/// A client's call, as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    inner: abi::Call,
}

impl Call {
    /// Wraps an ABI call (the dispatcher and tests use this).
    pub fn new(inner: abi::Call) -> Call {
        Call { inner }
    }

    /// The call's id (the zxid of its log entry): what `complete` takes for a parked call.
    pub fn id(&self) -> i64 {
        self.inner.call_id
    }

    /// The function the client called.
    pub fn function(&self) -> &str {
        &self.inner.function
    }

    /// Decodes the MessagePack arguments. Empty arguments decode as MessagePack nil, so
    /// `()` and `Option<T>` accept a call without arguments.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T> {
        decode_args(&self.inner.args)
            .map_err(|e| Error::Decode(format!("arguments of {}: {e}", self.inner.function)))
    }

    /// The arguments as sent.
    pub fn raw_args(&self) -> &[u8] {
        &self.inner.args
    }

    pub fn caller(&self) -> &Caller {
        &self.inner.caller
    }

    /// The calling session.
    pub fn session_id(&self) -> i64 {
        self.inner.caller.session_id
    }

    /// The caller's authenticated identities (scheme, id).
    pub fn auth(&self) -> &[Identity] {
        &self.inner.caller.auth
    }

    /// Whether the caller authenticated as `scheme:id`.
    pub fn has_identity(&self, scheme: &str, id: &str) -> bool {
        self.inner
            .caller
            .auth
            .iter()
            .any(|i| i.scheme == scheme && i.id == id)
    }

    /// Replies to this call: same as [`crate::reply`].
    pub fn reply<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        crate::api::reply(value)
    }

    /// Parks this call: same as [`crate::park`].
    pub fn park(&self) -> Result<()> {
        crate::api::park()
    }

    /// The underlying ABI value.
    pub fn as_abi(&self) -> &abi::Call {
        &self.inner
    }
}

/// Decodes MessagePack arguments; empty bytes decode as nil.
pub(crate) fn decode_args<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let bytes: &[u8] = if bytes.is_empty() { &[0xc0] } else { bytes };
    Ok(rmp_serde::from_slice(bytes)?)
}

/// How the current call has been ended so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Pending,
    Replied,
    Parked,
    Failed,
}

/// What the SDK knows about the invocation in progress.
pub(crate) struct Current {
    pub context: Context,
    pub is_call: bool,
    pub outcome: Outcome,
}

thread_local! {
    pub(crate) static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Clears the current invocation on drop (also when a native handler panics).
struct CurrentGuard;

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

pub(crate) fn set_outcome(outcome: Outcome) {
    CURRENT.with(|c| {
        if let Some(cur) = c.borrow_mut().as_mut() {
            cur.outcome = outcome;
        }
    });
}

fn outcome() -> Outcome {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .map_or(Outcome::Pending, |cur| cur.outcome)
    })
}

/// Runs one invocation of `R` on an encoded [`Input`]: what `wazoo_handle` does, and what
/// the native harness calls. Returns 0 to commit, 1 to discard.
pub fn run<R: Recipe>(input: &[u8]) -> i32 {
    let input: Input = match rmp_serde::from_slice(input) {
        Ok(input) => input,
        Err(e) => {
            let _ = crate::transport::host_call(&HostRequest::Fail(format!(
                "wazoo-sdk: undecodable input: {e}"
            )));
            return 1;
        }
    };
    let is_call = matches!(input.invocation, Invocation::Call(_));
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current {
            context: input.context,
            is_call,
            outcome: Outcome::Pending,
        })
    });
    let _guard = CurrentGuard;
    match input.invocation {
        Invocation::Call(call) => {
            let call = Call::new(call);
            match R::call(&call) {
                Err(e) => {
                    let request = match outcome() {
                        Outcome::Pending => HostRequest::Fail(e.to_string()),
                        // The call already has an outcome, which the host will not
                        // replace: returning 1 still fails it; leave the reason in the log.
                        _ => HostRequest::Log(format!("function {} failed: {e}", call.function())),
                    };
                    let _ = crate::transport::host_call(&request);
                    1
                }
                Ok(()) => match outcome() {
                    Outcome::Replied | Outcome::Parked => 0,
                    Outcome::Failed => 1,
                    Outcome::Pending => {
                        let _ = crate::transport::host_call(&HostRequest::Fail(format!(
                            "function {} returned without replying or parking",
                            call.function()
                        )));
                        1
                    }
                },
            }
        }
        Invocation::Event(event) => match R::event(&event) {
            Ok(()) => 0,
            Err(e) => {
                let what = match &event {
                    Event::SessionClosed { .. } => "SessionClosed",
                    Event::Node { .. } => "Node",
                    Event::Timer { .. } => "Timer",
                };
                let _ = crate::transport::host_call(&HostRequest::Log(format!(
                    "{what} event handler failed: {e}"
                )));
                1
            }
        },
    }
}

/// Declares the recipe type of this crate and generates the wasm exports the host
/// needs (`wazoo_abi_version_1`, `wazoo_alloc`, `wazoo_handle`; `memory` is exported by
/// the Rust toolchain). Use it once, at the crate root of a `cdylib`:
///
/// ```ignore
/// wazoo_sdk::recipe!(MyRecipe);
/// ```
///
/// On native targets it expands to nothing: tests drive the recipe type through
/// [`crate::testing::Harness`] instead.
#[macro_export]
macro_rules! recipe {
    ($recipe:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            /// The ABI marker: its name says which ABI this module was built for.
            #[unsafe(no_mangle)]
            pub extern "C" fn wazoo_abi_version_1() {}

            #[unsafe(no_mangle)]
            pub extern "C" fn wazoo_alloc(len: i32) -> i32 {
                $crate::raw::alloc(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wazoo_handle(ptr: i32, len: i32) -> i32 {
                $crate::raw::handle::<$recipe>(ptr, len)
            }
        };
        // Type-check the recipe on every target.
        #[allow(dead_code)]
        const _: fn(&[u8]) -> i32 = $crate::run::<$recipe>;
    };
}
