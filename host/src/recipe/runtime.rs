//! The wasm runtime for recipes: one wasmtime [`Engine`] per server, pinned so that an
//! invocation's result (return value, host calls made, fuel used, error) is a pure
//! function of (module bytes, [`abi::Input`], host responses, [`DeterminismProfile`]).
//!
//! Recipes run inside the raft state machine's apply, on every replica, and again when a
//! replica replays its log after a restart. Anything that could make two runs of the
//! same invocation differ would fork the replicas' trees, so this file:
//!
//! - pins every engine setting that decides a result and records it in the
//!   [`DeterminismProfile`] (whose id replicas can compare);
//! - bounds execution with fuel (instruction counting), never with wall-clock time
//!   (epoch interruption is off);
//! - canonicalizes NaNs and disables the wasm features whose results vary by host
//!   (SIMD, relaxed SIMD, threads) or that we do not need (memory64, multi-memory, GC,
//!   exceptions, ...);
//! - runs every invocation on a FRESH instance: no global, memory or table state
//!   survives an invocation (a cached instance would make results depend on which
//!   invocations this replica happened to run since its last restart);
//! - maps every failure to a typed [`RecipeError`] whose message contains no
//!   host-specific detail (no addresses, no backtraces), because the error becomes part
//!   of the replicated result.
//!
//! Speed: modules are validated and compiled once per server (cached by content hash as
//! an [`InstancePre`], imports resolved), and instances come from wasmtime's pooling
//! allocator with copy-on-write memory images, so an invocation costs microseconds.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Enabled, Engine, Extern, ExternType, InstanceAllocationStrategy, InstancePre,
    Linker, Memory, Module, ModuleExport, OptLevel, PoolingAllocationConfig, ResourceLimiter,
    Store, StoreLimits, StoreLimitsBuilder, Trap, ValType, WasmFeatures,
};

use super::abi;
use super::RecipeError;

/// The wasmtime version this runtime is built against. Must equal the exact version
/// pinned in the workspace Cargo.toml (`=47.0.4`): fuel accounting and stack frame
/// sizes can change between wasmtime releases, so the version is part of the profile.
pub const WASMTIME_VERSION: &str = "47.0.4";

/// Fuel charged for each `host_call`, on top of the fuel the guest's own instructions
/// use: host work is not metered by wasmtime, and without a charge a guest could make
/// the host do unbounded work for a few instructions per loop iteration.
pub const HOST_CALL_BASE_FUEL: u64 = 1_000;
/// Fuel charged per byte of encoded request plus encoded response of a `host_call`.
pub const HOST_CALL_FUEL_PER_BYTE: u64 = 1;

/// Instances that can be live at once per [`Runtime`] (pooling allocator slots).
/// Invocations beyond this wait for a slot instead of failing: a pool-exhaustion error
/// would depend on concurrency, not on the invocation, and so would not be
/// deterministic. The state machine applies one entry at a time, so 1 is enough there;
/// a few more let tests and tools share a runtime.
const POOL_SLOTS: u32 = 8;

/// Resource limits of one invocation. All of them are part of the
/// [`DeterminismProfile`]: every replica must run with the same values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeLimits {
    /// Fuel budget of one invocation (instantiation + `wazoo_alloc` + `wazoo_handle`).
    pub fuel: u64,
    /// Maximum linear memory size in bytes.
    pub memory_bytes: usize,
    /// Maximum table size in elements.
    pub table_elements: usize,
    /// Maximum native stack the guest may use, in bytes.
    pub max_wasm_stack: usize,
    /// Maximum size of a module's bytes.
    pub max_module_bytes: usize,
    /// Maximum size of one encoded host response.
    pub max_host_response_bytes: usize,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        RuntimeLimits {
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            table_elements: 10_000,
            max_wasm_stack: 512 << 10,
            // 1 MiB minus room for the znode/request framing that carries it.
            max_module_bytes: (1 << 20) - 4096,
            max_host_response_bytes: 1 << 20,
        }
    }
}

/// Every setting that decides an invocation's result. Two servers with equal profiles
/// (equal [`DeterminismProfile::id`]) produce identical results for identical
/// invocations; a cluster must refuse to run recipes on mixed profiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeterminismProfile {
    /// [`abi::ABI_VERSION`].
    pub abi_version: u32,
    /// "wasmtime".
    pub engine: String,
    /// [`WASMTIME_VERSION`]: fuel costs and frame sizes are version specific.
    pub engine_version: String,
    /// Compiler backend and optimization level (frame sizes, hence where a deep
    /// recursion overflows, depend on them).
    pub compiler: String,
    /// Target architecture (`std::env::consts::ARCH`): native frame sizes differ per
    /// architecture, so the stack-overflow point does too.
    pub target_arch: String,
    /// Wasm features enabled, sorted by name; everything else is rejected at load.
    pub wasm_features: Vec<String>,
    /// NaN results of float operations are canonicalized (otherwise their bit patterns
    /// are hardware specific).
    pub nan_canonicalization: bool,
    /// Execution bounded by fuel; epoch (wall-clock) interruption off.
    pub fuel_metering: bool,
    pub epoch_interruption: bool,
    /// Operator costs: wasmtime's default table of its pinned version.
    pub operator_cost: String,
    pub host_call_base_fuel: u64,
    pub host_call_fuel_per_byte: u64,
    pub limits: RuntimeLimits,
    /// Instances, memories and tables per invocation.
    pub max_instances: u32,
    pub max_memories: u32,
    pub max_tables: u32,
    /// What a `memory.grow`/`table.grow` past a limit (ours or the module's declared
    /// maximum) does: "trap" (the invocation fails with `LimitExceeded`) rather than
    /// returning -1.
    pub grow_failure: String,
    /// Modules with a start function are rejected.
    pub start_function_allowed: bool,
    /// Encoding of Input / HostRequest / HostResponse.
    pub encoding: String,
}

impl DeterminismProfile {
    /// Hex sha256 of a canonical encoding (JSON of the fields in declaration order; the
    /// struct has no maps, so the encoding is unique).
    pub fn id(&self) -> String {
        // serde_json of a plain struct cannot fail; fall back to Debug rather than panic.
        let bytes = serde_json::to_vec(self).unwrap_or_else(|_| format!("{self:?}").into_bytes());
        hex(&Sha256::digest(&bytes))
    }
}

/// Whether the kernel has the PAGEMAP_SCAN ioctl (Linux 6.7 and later), which
/// wasmtime's `pagemap_scan(Auto)` then uses.
fn kernel_has_pagemap_scan() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 7)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The host side of the ABI's host calls (the state machine implements it over its
/// staged tree). Must itself be deterministic.
pub trait HostEnv: Send + 'static {
    /// Performs one request. `Err` aborts the invocation: [`Runtime::invoke`] returns
    /// exactly that error.
    fn host_call(&mut self, req: abi::HostRequest) -> Result<abi::HostResponse, RecipeError>;
}

/// A completed invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What `wazoo_handle` returned (0: commit).
    pub status: i32,
    /// Fuel consumed (deterministic: same invocation, same number).
    pub fuel_used: u64,
    /// Bytes by which the invocation grew its linear memory beyond the module's initial
    /// size. Zero is the fast case: growing costs the host two page-protection changes
    /// (and their TLB shootdowns) per invocation, which is why the SDK allocates from an
    /// arena in the initial memory (guest-sdk/src/arena.rs).
    pub memory_grown_bytes: usize,
}

/// [`HostEnv`] with its type erased (the linker is built once, so the store's data type
/// is fixed) and a way back to the concrete type for [`Runtime::invoke`] to return it.
trait DynEnv: Send {
    fn host_call(&mut self, req: abi::HostRequest) -> Result<abi::HostResponse, RecipeError>;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<E: HostEnv> DynEnv for E {
    fn host_call(&mut self, req: abi::HostRequest) -> Result<abi::HostResponse, RecipeError> {
        HostEnv::host_call(self, req)
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// The env of load-time trial instantiations: no guest code runs there (start
/// functions are rejected), so it is never called.
struct NoEnv;
impl HostEnv for NoEnv {
    fn host_call(&mut self, _req: abi::HostRequest) -> Result<abi::HostResponse, RecipeError> {
        Err(RecipeError::Trap("host call during instantiation".into()))
    }
}

/// Per-invocation store data.
struct HostState {
    env: Box<dyn DynEnv>,
    limiter: Limiter,
    memory: Option<Memory>,
    /// The encoded response of the last `host_call`, until `host_read` takes it.
    pending: Option<Vec<u8>>,
    /// The typed reason the invocation is being aborted, set by host functions and the
    /// limiter before they return an error to wasmtime. Read first when mapping an
    /// error: this is how an env's error comes back as the same value, not a string.
    abort: Option<RecipeError>,
    fuel_budget: u64,
    max_response: usize,
    max_wasm_stack: usize,
}

impl HostState {
    fn fail(&mut self, err: RecipeError) -> wasmtime::Error {
        let msg = err.to_string();
        // Keep the first reason: later errors are consequences of it.
        if self.abort.is_none() {
            self.abort = Some(err);
        }
        wasmtime::Error::msg(msg)
    }
}

/// wasmtime's [`StoreLimits`] (built with [`StoreLimitsBuilder`], `trap_on_grow_failure`)
/// plus a record of WHY growth failed, so that it maps to a typed `LimitExceeded`.
///
/// Growth past a limit traps instead of making `memory.grow` return -1: both are
/// deterministic, but a trap makes a memory bomb a clear `LimitExceeded` instead of an
/// allocator failure deep in the guest (often an `unreachable` trap). This also applies
/// to growth past the module's OWN declared maximum (where the spec says -1): wasmtime's
/// StoreLimits treats both the same, and so do we (documented in the profile's
/// `grow_failure`).
/// A growth that fails in the HOST (mmap failure) is not deterministic; it also
/// traps (and is reported as `LimitExceeded`), which is the best a guest can get: the
/// alternative, -1, would be just as replica-specific.
struct Limiter {
    inner: StoreLimits,
    memory_bytes: usize,
    table_elements: usize,
    hit: Option<RecipeError>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let r = self.inner.memory_growing(current, desired, maximum);
        if r.is_err() && self.hit.is_none() {
            self.hit = Some(RecipeError::LimitExceeded(format!(
                "memory: growing to {desired} bytes exceeds the limit of {} bytes{}",
                self.memory_bytes,
                maximum
                    .map(|m| format!(" or the module's maximum of {m} bytes"))
                    .unwrap_or_default()
            )));
        }
        r
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        if self.hit.is_none() {
            self.hit = Some(RecipeError::LimitExceeded("memory: growth failed".into()));
        }
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let r = self.inner.table_growing(current, desired, maximum);
        if r.is_err() && self.hit.is_none() {
            self.hit = Some(RecipeError::LimitExceeded(format!(
                "table: growing to {desired} elements exceeds the limit of {} elements{}",
                self.table_elements,
                maximum
                    .map(|m| format!(" or the module's maximum of {m}"))
                    .unwrap_or_default()
            )));
        }
        r
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        if self.hit.is_none() {
            self.hit = Some(RecipeError::LimitExceeded("table: growth failed".into()));
        }
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A validated, compiled module, ready to instantiate.
struct Loaded {
    pre: InstancePre<HostState>,
    memory: ModuleExport,
    alloc: ModuleExport,
    handle: ModuleExport,
}

/// A counting semaphore over the pool's instance slots (see [`POOL_SLOTS`]).
struct Slots {
    free: Mutex<u32>,
    cv: Condvar,
}

struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.cv.wait(&mut free);
        }
        *free -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.cv.notify_one();
    }
}

/// The recipe runtime: engine, linker and compile cache. One per server; `Send + Sync`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: RuntimeLimits,
    profile: DeterminismProfile,
    /// `profile.id()`, computed once: every recipe entry is checked against it.
    profile_id: String,
    modules: RwLock<HashMap<[u8; 32], Arc<Loaded>>>,
    slots: Slots,
}

/// The wasm features a recipe may use (everything else is rejected when the module is
/// compiled). All of them are deterministic under NaN canonicalization.
/// - Rust's wasm32 targets emit mutable-globals, sign-ext, nontrapping-fptoint,
///   multivalue, bulk-memory(-opt), reference-types / call-indirect-overlong by
///   default, so they are allowed.
/// - SIMD is off: canonicalization would cover its NaNs, but recipes do not need it and
///   it is a large surface; relaxed SIMD is explicitly host dependent.
/// - threads (shared memory, atomics.wait), memory64, multi-memory, custom page sizes,
///   GC, exceptions, stack switching, tail calls, wide arithmetic... are off: not needed,
///   and each is one more thing whose behaviour must be pinned.
fn allowed_features() -> Vec<(&'static str, WasmFeatures)> {
    vec![
        ("bulk_memory", WasmFeatures::BULK_MEMORY),
        ("bulk_memory_opt", WasmFeatures::BULK_MEMORY_OPT),
        (
            "call_indirect_overlong",
            WasmFeatures::CALL_INDIRECT_OVERLONG,
        ),
        ("floats", WasmFeatures::FLOATS),
        ("multi_value", WasmFeatures::MULTI_VALUE),
        ("mutable_global", WasmFeatures::MUTABLE_GLOBAL),
        ("reference_types", WasmFeatures::REFERENCE_TYPES),
        (
            "saturating_float_to_int",
            WasmFeatures::SATURATING_FLOAT_TO_INT,
        ),
        ("sign_extension", WasmFeatures::SIGN_EXTENSION),
    ]
}

const OPT_LEVEL: OptLevel = OptLevel::Speed;

impl Runtime {
    pub fn new(limits: RuntimeLimits) -> Result<Runtime, RecipeError> {
        let bad = |m: &str| Err(RecipeError::Invalid(format!("runtime limits: {m}")));
        if limits.max_host_response_bytes > i32::MAX as usize {
            // host_call returns the length as i64 but host_read returns an i32 count.
            return bad("max_host_response_bytes must fit in an i32");
        }
        if limits.memory_bytes > (u32::MAX as usize) {
            return bad("memory_bytes must fit a 32-bit memory");
        }
        if limits.max_wasm_stack == 0 || limits.fuel == 0 {
            return bad("max_wasm_stack and fuel must be positive");
        }

        let mut config = Config::new();
        // Every wasm feature is set explicitly (not left to wasmtime's defaults, which
        // change between releases): allowed ones on, all others off.
        let mut allowed = WasmFeatures::empty();
        for (_, f) in allowed_features() {
            allowed |= f;
        }
        config.wasm_features(WasmFeatures::all() & !allowed, false);
        config.wasm_features(allowed, true);
        config
            // Deterministic interruption: fuel counts wasm operators; the same
            // invocation always stops at the same instruction.
            .consume_fuel(true)
            // Wall-clock interruption would differ between replicas.
            .epoch_interruption(false)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .cranelift_opt_level(OPT_LEVEL)
            .max_wasm_stack(limits.max_wasm_stack)
            // Backtraces cost time on every trap and would only add host-specific text
            // to errors; the error messages must be identical on all replicas.
            .wasm_backtrace_max_frames(None)
            // Fresh instances are cheap with copy-on-write memory images.
            .memory_init_cow(true);

        // Pooling allocator: instance slots are reserved once and recycled (reset to the
        // module's initial image) instead of mmapped per invocation. Each slot's memory
        // reservation is just the memory limit (rounded to wasm pages) plus a guard, so
        // the whole pool reserves POOL_SLOTS * (memory_bytes + guard) of address space;
        // bounds checks are then explicit in the compiled code rather than elided by a
        // 4 GiB reservation, which costs a little guest speed but no absurd VM use.
        let page = 64 << 10;
        // How much of a recycled instance's memory is reset in place (kept mapped)
        // rather than given back to the kernel with madvise, whose TLB shootdown
        // interrupts every core running the server. With PAGEMAP_SCAN only the pages
        // an invocation wrote are reset, so a large bound costs nothing unless used:
        // it covers an SDK recipe's stack, data and allocation arena. Without it the
        // whole range is memset on every invocation, so it stays small.
        let keep_resident_bytes: usize = if kernel_has_pagemap_scan() {
            2 << 20
        } else {
            256 << 10
        };
        let mem_reservation = (limits.memory_bytes as u64).div_ceil(page) * page;
        config
            .memory_reservation(mem_reservation.max(page))
            .memory_guard_size(page)
            .memory_reservation_for_growth(0)
            .memory_may_move(false);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(mem_reservation.max(page) as usize)
            .table_elements(limits.table_elements)
            // Reset the low pages of a recycled memory with memset and keep them mapped,
            // instead of madvise + a page fault per touched page on the next invocation:
            // an SDK-built recipe (64 KiB stack at the bottom, then data and heap)
            // touches mostly this range. Only speed changes: both reset to zeros.
            .linear_memory_keep_resident(keep_resident_bytes)
            .table_keep_resident(keep_resident_bytes)
            // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), reset only the pages the
            // invocation wrote, instead of memset over all of keep_resident_bytes.
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

        let engine = Engine::new(&config)
            .map_err(|e| RecipeError::Invalid(format!("wasm engine configuration: {e}")))?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        linker
            .func_wrap(abi::HOST_MODULE, abi::HOST_CALL_IMPORT, host_call)
            .and_then(|l| l.func_wrap(abi::HOST_MODULE, abi::HOST_READ_IMPORT, host_read))
            .map_err(|e| RecipeError::Invalid(format!("wasm linker: {e}")))?;

        let mut wasm_features: Vec<String> = allowed_features()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        wasm_features.sort();
        let profile = DeterminismProfile {
            abi_version: abi::ABI_VERSION,
            engine: "wasmtime".into(),
            engine_version: WASMTIME_VERSION.into(),
            compiler: format!("cranelift/{OPT_LEVEL:?}"),
            target_arch: std::env::consts::ARCH.into(),
            wasm_features,
            nan_canonicalization: true,
            fuel_metering: true,
            epoch_interruption: false,
            operator_cost: "wasmtime-default".into(),
            host_call_base_fuel: HOST_CALL_BASE_FUEL,
            host_call_fuel_per_byte: HOST_CALL_FUEL_PER_BYTE,
            limits: limits.clone(),
            max_instances: 1,
            max_memories: 1,
            max_tables: 1,
            grow_failure: "trap".into(),
            start_function_allowed: false,
            encoding: "msgpack/rmp-serde-1/named".into(),
        };

        Ok(Runtime {
            engine,
            linker,
            limits,
            profile_id: profile.id(),
            profile,
            modules: RwLock::new(HashMap::new()),
            slots: Slots {
                free: Mutex::new(POOL_SLOTS),
                cv: Condvar::new(),
            },
        })
    }

    pub fn profile(&self) -> &DeterminismProfile {
        &self.profile
    }

    /// The profile's id (`DeterminismProfile::id`), cached.
    pub fn profile_id(&self) -> &str {
        &self.profile_id
    }

    pub fn limits(&self) -> &RuntimeLimits {
        &self.limits
    }

    /// sha256 of the bytes (content address).
    pub fn module_hash(wasm: &[u8]) -> [u8; 32] {
        Sha256::digest(wasm).into()
    }

    /// Validates `wasm` against ABI v1 and the runtime's limits, compiles it and caches
    /// it by hash. Returns the hash. Idempotent; cheap when already cached. Every
    /// rejection is [`RecipeError::Invalid`] with a deterministic message (the same on
    /// every replica: load may run inside apply).
    pub fn load(&self, wasm: &[u8]) -> Result<[u8; 32], RecipeError> {
        let hash = Self::module_hash(wasm);
        if self.is_loaded(&hash) {
            return Ok(hash);
        }
        let loaded = self.validate_and_compile(wasm)?;
        self.modules
            .write()
            .entry(hash)
            .or_insert_with(|| Arc::new(loaded));
        Ok(hash)
    }

    pub fn is_loaded(&self, hash: &[u8; 32]) -> bool {
        self.modules.read().contains_key(hash)
    }

    /// Drops a module from the cache (it can be loaded again). Returns whether it was
    /// loaded.
    pub fn unload(&self, hash: &[u8; 32]) -> bool {
        self.modules.write().remove(hash).is_some()
    }

    fn validate_and_compile(&self, wasm: &[u8]) -> Result<Loaded, RecipeError> {
        let invalid = |m: String| RecipeError::Invalid(m);
        if wasm.len() > self.limits.max_module_bytes {
            return Err(invalid(format!(
                "module is {} bytes, the limit is {}",
                wasm.len(),
                self.limits.max_module_bytes
            )));
        }
        // A start function would run guest code during instantiation, outside the ABI's
        // entry points; no toolchain needs it for a recipe.
        for payload in wasmtime::wasmparser::Parser::new(0).parse_all(wasm) {
            match payload {
                Ok(wasmtime::wasmparser::Payload::StartSection { .. }) => {
                    return Err(invalid("module has a start function".into()));
                }
                Ok(_) => {}
                // Module::new below reports parse errors with full detail.
                Err(_) => break,
            }
        }
        let module = Module::new(&self.engine, wasm)
            .map_err(|e| invalid(format!("does not compile: {}", root_message(&e))))?;

        // Imports: only the ABI's host functions, with their exact signatures.
        for import in module.imports() {
            let (module_name, name) = (import.module(), import.name());
            let expected = if module_name != abi::HOST_MODULE {
                None
            } else if name == abi::HOST_CALL_IMPORT {
                Some((&[ValKind::I32, ValKind::I32][..], &[ValKind::I64][..]))
            } else if name == abi::HOST_READ_IMPORT {
                Some((&[ValKind::I32, ValKind::I32][..], &[ValKind::I32][..]))
            } else {
                None
            };
            let Some((params, results)) = expected else {
                return Err(invalid(format!(
                    "imports {module_name}.{name}: only {m}.{} and {m}.{} are provided",
                    abi::HOST_CALL_IMPORT,
                    abi::HOST_READ_IMPORT,
                    m = abi::HOST_MODULE
                )));
            };
            check_func(
                &format!("import {module_name}.{name}"),
                &import.ty(),
                params,
                results,
            )?;
        }

        // Exports: memory, the ABI marker, alloc and handle.
        match module.get_export("memory") {
            Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
            Some(_) => {
                return Err(invalid(
                    "export \"memory\" is not a 32-bit linear memory".into(),
                ))
            }
            None => return Err(invalid("missing export \"memory\"".into())),
        }
        let exports: [(&str, &[ValKind], &[ValKind]); 3] = [
            (abi::ABI_MARKER_EXPORT, &[], &[]),
            (abi::ALLOC_EXPORT, &[ValKind::I32], &[ValKind::I32]),
            (
                abi::HANDLE_EXPORT,
                &[ValKind::I32, ValKind::I32],
                &[ValKind::I32],
            ),
        ];
        for (name, params, results) in exports {
            match module.get_export(name) {
                Some(ty) => check_func(&format!("export {name}"), &ty, params, results)?,
                None => {
                    return Err(invalid(format!(
                        "missing export {name} (not built for ABI version {})",
                        abi::ABI_VERSION
                    )))
                }
            }
        }
        let export = |name: &str| {
            module
                .get_export_index(name)
                .ok_or_else(|| invalid(format!("missing export {name}")))
        };
        let (memory, alloc, handle) = (
            export("memory")?,
            export(abi::ALLOC_EXPORT)?,
            export(abi::HANDLE_EXPORT)?,
        );

        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| invalid(format!("does not link: {}", root_message(&e))))?;
        let loaded = Loaded {
            pre,
            memory,
            alloc,
            handle,
        };

        // Trial instantiation: failures that only show at instantiation (data or element
        // segments out of bounds, initial memory or table above the limits, too many
        // tables) are properties of the module, so they are reported now as Invalid
        // rather than as a trap on every call.
        let _slot = self.slots.acquire();
        let mut store = self.new_store(Box::new(NoEnv));
        if let Err(e) = loaded.pre.instantiate(&mut store) {
            let err = map_error(e, store.data_mut(), self.limits.fuel);
            let msg = match err {
                RecipeError::Invalid(m)
                | RecipeError::Trap(m)
                | RecipeError::LimitExceeded(m)
                | RecipeError::Failed(m) => m,
                RecipeError::FuelExhausted(_) => "instantiation used all fuel".into(),
            };
            return Err(invalid(format!("does not instantiate: {msg}")));
        }
        Ok(loaded)
    }

    fn new_store(&self, env: Box<dyn DynEnv>) -> Store<HostState> {
        let inner = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .table_elements(self.limits.table_elements)
            .instances(1)
            .tables(1)
            .memories(1)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            env,
            limiter: Limiter {
                inner,
                memory_bytes: self.limits.memory_bytes,
                table_elements: self.limits.table_elements,
                hit: None,
            },
            memory: None,
            pending: None,
            abort: None,
            fuel_budget: self.limits.fuel,
            max_response: self.limits.max_host_response_bytes,
            max_wasm_stack: self.limits.max_wasm_stack,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
    }

    /// Runs one invocation on a fresh instance. The env is moved in and handed back,
    /// whatever the outcome.
    pub fn invoke<E: HostEnv>(
        &self,
        hash: &[u8; 32],
        input: &abi::Input,
        env: E,
    ) -> (E, Result<Outcome, RecipeError>) {
        let loaded = self.modules.read().get(hash).cloned();
        let Some(loaded) = loaded else {
            return (env, Err(RecipeError::Invalid("module not loaded".into())));
        };
        let slot = self.slots.acquire();
        let mut store = self.new_store(Box::new(env));
        let result = self.run(&loaded, &mut store, input);
        drop(slot);
        let env = store.into_data().env.into_any().downcast::<E>();
        match env {
            Ok(env) => (*env, result),
            // The box was created from an E just above; this cannot happen.
            Err(_) => unreachable!("recipe HostEnv changed type"),
        }
    }

    fn run(
        &self,
        loaded: &Loaded,
        store: &mut Store<HostState>,
        input: &abi::Input,
    ) -> Result<Outcome, RecipeError> {
        let budget = self.limits.fuel;
        let mapped = |store: &mut Store<HostState>, e: wasmtime::Error| {
            map_error(e, store.data_mut(), budget)
        };
        let bytes = rmp_serde::to_vec_named(input)
            .map_err(|e| RecipeError::Invalid(format!("cannot encode the input: {e}")))?;
        let len = i32::try_from(bytes.len())
            .map_err(|_| RecipeError::LimitExceeded(format!("input is {} bytes", bytes.len())))?;

        store.set_fuel(budget).map_err(|e| mapped(store, e))?;
        let instance = loaded
            .pre
            .instantiate(&mut *store)
            .map_err(|e| mapped(store, e))?;
        let (Some(Extern::Memory(memory)), Some(Extern::Func(alloc)), Some(Extern::Func(handle))) = (
            instance.get_module_export(&mut *store, &loaded.memory),
            instance.get_module_export(&mut *store, &loaded.alloc),
            instance.get_module_export(&mut *store, &loaded.handle),
        ) else {
            // Checked at load.
            return Err(RecipeError::Invalid("module exports changed".into()));
        };
        store.data_mut().memory = Some(memory);
        let initial_bytes = memory.data_size(&*store);
        let alloc = alloc
            .typed::<i32, i32>(&*store)
            .map_err(|e| mapped(store, e))?;
        let handle = handle
            .typed::<(i32, i32), i32>(&*store)
            .map_err(|e| mapped(store, e))?;

        let ptr = alloc.call(&mut *store, len).map_err(|e| mapped(store, e))?;
        let range = guest_range(memory.data_size(&*store), ptr, len).ok_or_else(|| {
            RecipeError::Trap(format!(
                "{} returned {ptr}: {len} bytes there are outside guest memory",
                abi::ALLOC_EXPORT
            ))
        })?;
        memory.data_mut(&mut *store)[range].copy_from_slice(&bytes);

        let status = handle
            .call(&mut *store, (ptr, len))
            .map_err(|e| mapped(store, e))?;
        let remaining = store.get_fuel().map_err(|e| mapped(store, e))?;
        Ok(Outcome {
            status,
            fuel_used: budget.saturating_sub(remaining),
            memory_grown_bytes: memory.data_size(&*store).saturating_sub(initial_bytes),
        })
    }
}

/// Value types of the ABI signatures (wasmtime's ValType has no `PartialEq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValKind {
    I32,
    I64,
}

fn check_func(
    what: &str,
    ty: &ExternType,
    params: &[ValKind],
    results: &[ValKind],
) -> Result<(), RecipeError> {
    let kind = |v: ValType| match v {
        ValType::I32 => Some(ValKind::I32),
        ValType::I64 => Some(ValKind::I64),
        _ => None,
    };
    let sig = |p: &[ValKind], r: &[ValKind]| format!("{p:?} -> {r:?}").to_lowercase();
    let ExternType::Func(f) = ty else {
        return Err(RecipeError::Invalid(format!("{what} is not a function")));
    };
    let got_p: Vec<Option<ValKind>> = f.params().map(kind).collect();
    let got_r: Vec<Option<ValKind>> = f.results().map(kind).collect();
    let want_p: Vec<Option<ValKind>> = params.iter().copied().map(Some).collect();
    let want_r: Vec<Option<ValKind>> = results.iter().copied().map(Some).collect();
    if got_p != want_p || got_r != want_r {
        return Err(RecipeError::Invalid(format!(
            "{what} has the wrong signature: expected {}",
            sig(params, results)
        )));
    }
    Ok(())
}

/// `ptr..ptr+len` as a range of guest memory of `size` bytes, or `None` when any part
/// is outside. Guest pointers are untrusted: i32s are read as the unsigned 32-bit
/// addresses they are, and all arithmetic is checked.
fn guest_range(size: usize, ptr: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    (end <= size).then_some(start..end)
}

/// The innermost message of a wasmtime error, for Invalid messages (compile errors come
/// wrapped in context that adds nothing).
fn root_message(e: &wasmtime::Error) -> String {
    e.root_cause().to_string()
}

/// Maps an error out of instantiation or a guest call to the typed error. Order matters:
/// a reason recorded by our own code (env error, ABI violation, limit) wins over what
/// wasmtime reports, since that is only a consequence.
fn map_error(e: wasmtime::Error, state: &mut HostState, budget: u64) -> RecipeError {
    if let Some(err) = state.abort.take() {
        return err;
    }
    if let Some(err) = state.limiter.hit.take() {
        return err;
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => RecipeError::FuelExhausted(budget),
            Trap::StackOverflow => RecipeError::Trap(format!(
                "stack overflow: the guest used more than its stack limit of {} bytes",
                state.max_wasm_stack
            )),
            other => RecipeError::Trap(other.to_string()),
        };
    }
    // Anything else (e.g. a failed instance allocation). Only the root message: context
    // layers may carry host-specific detail.
    RecipeError::Trap(root_message(&e))
}

/// `wazoo.host_call(ptr, len) -> i64`.
fn host_call(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<i64> {
    let Some(memory) = caller.data().memory else {
        return Err(caller.data_mut().fail(RecipeError::Trap(
            "host_call before the instance was set up".into(),
        )));
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let Some(range) = guest_range(data.len(), ptr, len) else {
        return Err(state.fail(RecipeError::Trap(format!(
            "host_call: request at {ptr} ({len} bytes) is outside guest memory"
        ))));
    };
    let req: abi::HostRequest = match rmp_serde::from_slice(&data[range]) {
        Ok(r) => r,
        Err(e) => {
            return Err(state.fail(RecipeError::Trap(format!(
                "host_call: undecodable request: {e}"
            ))))
        }
    };
    // A new call replaces an unread response.
    state.pending = None;
    let resp = match state.env.host_call(req) {
        Ok(r) => r,
        Err(e) => return Err(state.fail(e)),
    };
    let bytes = match rmp_serde::to_vec_named(&resp) {
        Ok(b) => b,
        Err(e) => {
            return Err(state.fail(RecipeError::Trap(format!(
                "host_call: cannot encode the response: {e}"
            ))))
        }
    };
    if bytes.len() > state.max_response {
        let max = state.max_response;
        return Err(state.fail(RecipeError::LimitExceeded(format!(
            "host response of {} bytes exceeds the limit of {max} bytes",
            bytes.len()
        ))));
    }
    let out_len = bytes.len() as i64;
    let cost = HOST_CALL_BASE_FUEL.saturating_add(
        HOST_CALL_FUEL_PER_BYTE
            .saturating_mul((len as u32 as u64).saturating_add(bytes.len() as u64)),
    );
    state.pending = Some(bytes);
    charge(&mut caller, cost)?;
    Ok(out_len)
}

/// Deducts host-call fuel; running out is the same `FuelExhausted` as in guest code.
fn charge(caller: &mut Caller<'_, HostState>, cost: u64) -> wasmtime::Result<()> {
    let fuel = caller.get_fuel()?;
    if fuel < cost {
        caller.set_fuel(0)?;
        let budget = caller.data().fuel_budget;
        return Err(caller.data_mut().fail(RecipeError::FuelExhausted(budget)));
    }
    caller.set_fuel(fuel - cost)
}

/// `wazoo.host_read(ptr, len) -> i32`.
fn host_read(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<i32> {
    let Some(memory) = caller.data().memory else {
        return Err(caller.data_mut().fail(RecipeError::Trap(
            "host_read before the instance was set up".into(),
        )));
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let Some(pending) = state.pending.take() else {
        return Ok(0);
    };
    let n = pending.len().min(len as u32 as usize);
    // n <= max_host_response_bytes <= i32::MAX (checked in Runtime::new).
    let n_i32 = i32::try_from(n).unwrap_or(i32::MAX);
    let Some(range) = guest_range(data.len(), ptr, n_i32) else {
        return Err(state.fail(RecipeError::Trap(format!(
            "host_read: buffer at {ptr} ({n} bytes) is outside guest memory"
        ))));
    };
    data[range].copy_from_slice(&pending[..n]);
    Ok(n_i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn runtime_is_send_sync() {
        assert_send_sync::<Runtime>();
    }

    #[test]
    fn profile_id_is_stable_and_covers_limits() {
        let a = Runtime::new(RuntimeLimits::default()).expect("runtime");
        let b = Runtime::new(RuntimeLimits::default()).expect("runtime");
        assert_eq!(a.profile(), b.profile());
        assert_eq!(a.profile().id(), b.profile().id());
        assert_eq!(a.profile().id().len(), 64);
        let c = Runtime::new(RuntimeLimits {
            fuel: 1234,
            ..RuntimeLimits::default()
        })
        .expect("runtime");
        assert_ne!(a.profile().id(), c.profile().id());
        let mut p = a.profile().clone();
        p.nan_canonicalization = false;
        assert_ne!(p.id(), a.profile().id());
    }

    #[test]
    fn guest_range_checks() {
        assert_eq!(guest_range(10, 0, 10), Some(0..10));
        assert_eq!(guest_range(10, 1, 10), None);
        assert_eq!(guest_range(10, -1, 1), None);
        assert_eq!(guest_range(10, 0, -1), None);
        assert_eq!(
            guest_range(usize::MAX, -1, -1),
            Some(u32::MAX as usize..2 * u32::MAX as usize)
        );
        assert_eq!(guest_range(10, 10, 0), Some(10..10));
    }
}
