//! The recipe runtime against a correct guest and a zoo of hostile ones (written in WAT).
//! Every hostile module must produce its exact typed error, and the runtime must keep
//! working afterwards.

use wazoo::recipe::abi::{self, HostRequest, HostResponse};
use wazoo::recipe::{HostEnv, RecipeError, Runtime, RuntimeLimits};

/// Records requests; answers `Get` with a fixed payload (or fails, or answers huge).
#[derive(Default)]
struct MockEnv {
    requests: Vec<HostRequest>,
    fail_with: Option<RecipeError>,
    huge: Option<usize>,
}

fn get_response() -> HostResponse {
    HostResponse::Data {
        data: Some(serde_bytes::ByteBuf::from(b"hello from the host".to_vec())),
        stat: abi::Stat {
            version: 7,
            data_length: 19,
            ..Default::default()
        },
    }
}

impl HostEnv for MockEnv {
    fn host_call(&mut self, req: HostRequest) -> Result<HostResponse, RecipeError> {
        self.requests.push(req.clone());
        if let Some(e) = &self.fail_with {
            return Err(e.clone());
        }
        if let Some(n) = self.huge {
            return Ok(HostResponse::Data {
                data: Some(serde_bytes::ByteBuf::from(vec![7u8; n])),
                stat: abi::Stat::default(),
            });
        }
        Ok(match req {
            HostRequest::Get { .. } => get_response(),
            _ => HostResponse::Done,
        })
    }
}

fn input(function: &str) -> abi::Input {
    abi::Input {
        context: abi::Context {
            module: "test".into(),
            version: 1,
            now_ms: 1_700_000_000_000,
            zxid: 42,
            seed: 0xdead_beef,
        },
        invocation: abi::Invocation::Call(abi::Call {
            call_id: 42,
            function: function.into(),
            args: vec![0x93, 1, 2, 3],
            caller: abi::Caller {
                session_id: 5,
                auth: vec![abi::Identity {
                    scheme: "digest".into(),
                    id: "bob".into(),
                }],
            },
        }),
    }
}

/// Bytes as a WAT string literal.
fn wat_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

fn get_request() -> HostRequest {
    HostRequest::Get { path: "/a".into() }
}

/// Encoded `Notify { session_id: 0, payload: [] }` minus its empty-bin tail (0xc4 0x00):
/// the guest appends a bin32 header and the payload.
fn notify_prefix() -> Vec<u8> {
    let mut b = rmp_serde::to_vec_named(&HostRequest::Notify {
        session_id: 0,
        payload: vec![],
    })
    .expect("encode");
    assert_eq!(&b[b.len() - 2..], &[0xc4, 0x00]);
    b.truncate(b.len() - 2);
    b
}

/// The standard module skeleton. `handle` is the body of `wazoo_handle (param $ptr i32)
/// (param $len i32) (result i32)`; `extra` adds module fields.
fn module_wat(handle: &str, extra: &str) -> String {
    let req = rmp_serde::to_vec_named(&get_request()).expect("encode");
    let prefix = notify_prefix();
    format!(
        r#"(module
  (import "wazoo" "host_call" (func $host_call (param i32 i32) (result i64)))
  (import "wazoo" "host_read" (func $host_read (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 65536))
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 16) "{req}")
  (data (i32.const 512) "{prefix}")
  (func (export "wazoo_abi_version_1"))
  ;; Bump allocator growing memory as needed (the host writes the input there).
  (func (export "wazoo_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (drop (memory.grow (i32.add (i32.shr_u (local.get $len) (i32.const 16)) (i32.const 1))))
    (local.get $p))
  (func (export "wazoo_handle") (param $ptr i32) (param $len i32) (result i32)
    {handle})
  {extra}
)"#,
        req = wat_bytes(&req),
        prefix = wat_bytes(&prefix),
    )
}

/// The correct guest:
/// 1. returns 99 / 98 if a global / memory byte survived from an earlier invocation;
/// 2. sends the fixed `Get` from its data segment, reads the response, sums its bytes;
/// 3. sends `Notify { session_id: 0, payload: <the input bytes it received> }`;
/// 4. returns the sum.
fn good_wat() -> String {
    let req_len = rmp_serde::to_vec_named(&get_request())
        .expect("encode")
        .len();
    let plen = notify_prefix().len();
    let handle = format!(
        r#"(local $n i32) (local $i i32) (local $sum i32) (local $q i32)
    (if (global.get $calls) (then (return (i32.const 99))))
    (global.set $calls (i32.const 1))
    (if (i32.load8_u (i32.const 8)) (then (return (i32.const 98))))
    (i32.store8 (i32.const 8) (i32.const 1))
    ;; Get
    (local.set $n (i32.wrap_i64 (call $host_call (i32.const 16) (i32.const {req_len}))))
    (if (i32.ne (call $host_read (i32.const 4096) (local.get $n)) (local.get $n))
      (then (return (i32.const 97))))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $sum (i32.add (local.get $sum) (i32.load8_u offset=4096 (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    ;; Notify with the input as payload, built at 8192: prefix, bin32 header, bytes.
    (memory.copy (i32.const 8192) (i32.const 512) (i32.const {plen}))
    (local.set $q (i32.const {q}))
    (i32.store8 (local.get $q) (i32.const 0xc6))
    (i32.store8 offset=1 (local.get $q) (i32.shr_u (local.get $len) (i32.const 24)))
    (i32.store8 offset=2 (local.get $q) (i32.shr_u (local.get $len) (i32.const 16)))
    (i32.store8 offset=3 (local.get $q) (i32.shr_u (local.get $len) (i32.const 8)))
    (i32.store8 offset=4 (local.get $q) (local.get $len))
    (memory.copy (i32.add (local.get $q) (i32.const 5)) (local.get $ptr) (local.get $len))
    (drop (call $host_call (i32.const 8192) (i32.add (i32.const {hl}) (local.get $len))))
    (drop (call $host_read (i32.const 4096) (i32.const 16)))
    (local.get $sum)"#,
        q = 8192 + plen,
        hl = plen + 5,
    );
    module_wat(&handle, "")
}

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{wat}"))
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeLimits::default()).expect("runtime")
}

fn expected_sum() -> i32 {
    rmp_serde::to_vec_named(&get_response())
        .expect("encode")
        .iter()
        .map(|&b| b as i32)
        .sum()
}

/// Runs the good module and checks the full round trip.
fn assert_good_works(rt: &Runtime) -> u64 {
    let hash = rt.load(&wasm(&good_wat())).expect("good module loads");
    let inp = input("f");
    let (env, res) = rt.invoke(&hash, &inp, MockEnv::default());
    let out = res.expect("good module runs");
    assert_eq!(out.status, expected_sum());
    assert!(out.fuel_used > 0);
    assert_eq!(
        env.requests,
        vec![
            get_request(),
            HostRequest::Notify {
                session_id: 0,
                payload: rmp_serde::to_vec_named(&inp).expect("encode")
            },
        ]
    );
    out.fuel_used
}

/// Loads `wat` (must load) and invokes it with a default mock env.
fn run(rt: &Runtime, wat: &str) -> (MockEnv, Result<wazoo::recipe::Outcome, RecipeError>) {
    run_env(rt, wat, MockEnv::default())
}

fn run_env(
    rt: &Runtime,
    wat: &str,
    env: MockEnv,
) -> (MockEnv, Result<wazoo::recipe::Outcome, RecipeError>) {
    let hash = rt.load(&wasm(wat)).expect("module loads");
    rt.invoke(&hash, &input("f"), env)
}

fn load_err(rt: &Runtime, bytes: &[u8]) -> String {
    match rt.load(bytes) {
        Err(RecipeError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn round_trip_is_deterministic_and_fresh() {
    let rt = runtime();
    let a = assert_good_works(&rt);
    // Same invocation, same fuel; and the second run sees no state of the first
    // (otherwise it would return 99 or 98).
    let b = assert_good_works(&rt);
    assert_eq!(a, b);
    // A second runtime (another replica) agrees too.
    let rt2 = runtime();
    assert_eq!(assert_good_works(&rt2), a);
    assert_eq!(rt.profile().id(), rt2.profile().id());
}

#[test]
fn load_is_idempotent_and_content_addressed() {
    let rt = runtime();
    let bytes = wasm(&good_wat());
    let h = Runtime::module_hash(&bytes);
    assert!(!rt.is_loaded(&h));
    assert_eq!(rt.load(&bytes).expect("load"), h);
    assert!(rt.is_loaded(&h));
    assert_eq!(rt.load(&bytes).expect("load again"), h);
    let (_, res) = rt.invoke(&[0u8; 32], &input("f"), MockEnv::default());
    assert!(matches!(res, Err(RecipeError::Invalid(_))), "{res:?}");
}

#[test]
fn env_error_comes_back_unchanged() {
    let rt = runtime();
    for err in [
        RecipeError::Failed("boom".into()),
        RecipeError::LimitExceeded("writes".into()),
        RecipeError::Trap("env says no".into()),
    ] {
        let env = MockEnv {
            fail_with: Some(err.clone()),
            ..Default::default()
        };
        let (env, res) = run_env(&rt, &good_wat(), env);
        assert_eq!(res, Err(err));
        // The env is handed back with what it saw.
        assert_eq!(env.requests, vec![get_request()]);
    }
    assert_good_works(&rt);
}

#[test]
fn nonzero_status_is_an_outcome() {
    let rt = runtime();
    let (_, res) = run(&rt, &module_wat("(i32.const 3)", ""));
    assert_eq!(res.expect("runs").status, 3);
}

#[test]
fn infinite_loop_exhausts_fuel() {
    let rt = runtime();
    let (_, res) = run(&rt, &module_wat("(loop $l (br $l)) (i32.const 0)", ""));
    assert_eq!(
        res,
        Err(RecipeError::FuelExhausted(RuntimeLimits::default().fuel))
    );
    assert_good_works(&rt);
}

#[test]
fn host_calls_cost_fuel() {
    // A loop of host calls is stopped by fuel too (host work is charged).
    let rt = runtime();
    let req_len = rmp_serde::to_vec_named(&get_request())
        .expect("encode")
        .len();
    let body = format!(
        "(loop $l (drop (call $host_call (i32.const 16) (i32.const {req_len}))) (br $l)) (i32.const 0)"
    );
    let (env, res) = run(&rt, &module_wat(&body, ""));
    assert_eq!(
        res,
        Err(RecipeError::FuelExhausted(RuntimeLimits::default().fuel))
    );
    // Fewer than budget / base cost calls happened.
    assert!(env.requests.len() < 10_000, "{}", env.requests.len());
    assert_good_works(&rt);
}

#[test]
fn memory_bomb_is_limit_exceeded() {
    let rt = runtime();
    let body =
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (i32.const 0)";
    let (_, res) = run(&rt, &module_wat(body, ""));
    match res {
        Err(RecipeError::LimitExceeded(m)) => assert!(m.contains("memory"), "{m}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert_good_works(&rt);
}

#[test]
fn table_bomb_is_limit_exceeded() {
    let rt = runtime();
    let body = "(loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1)))) (i32.const 0)";
    let (_, res) = run(&rt, &module_wat(body, "(table $t 1 funcref)"));
    match res {
        Err(RecipeError::LimitExceeded(m)) => assert!(m.contains("table"), "{m}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert_good_works(&rt);
}

#[test]
fn deep_recursion_is_stack_overflow() {
    let rt = runtime();
    let extra =
        "(func $r (param i32) (result i32) (call $r (i32.add (local.get 0) (i32.const 1))))";
    let (_, res) = run(&rt, &module_wat("(call $r (i32.const 0))", extra));
    match res {
        Err(RecipeError::Trap(m)) => assert!(m.contains("stack overflow"), "{m}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    assert_good_works(&rt);
}

#[test]
fn unreachable_traps() {
    let rt = runtime();
    let (_, res) = run(&rt, &module_wat("unreachable", ""));
    match res {
        Err(RecipeError::Trap(m)) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    // Out-of-bounds memory access too.
    let (_, res) = run(&rt, &module_wat("(i32.load (i32.const -4))", ""));
    match res {
        Err(RecipeError::Trap(m)) => assert!(m.contains("out of bounds"), "{m}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    assert_good_works(&rt);
}

#[test]
fn bad_host_call_pointers_trap() {
    let rt = runtime();
    for body in [
        // Request outside memory, wrapping arithmetic, negative length.
        "(i32.wrap_i64 (call $host_call (i32.const -16) (i32.const 100)))",
        "(i32.wrap_i64 (call $host_call (i32.const 1000000) (i32.const 1000)))",
        "(i32.wrap_i64 (call $host_call (i32.const 16) (i32.const -1)))",
    ] {
        let (env, res) = run(&rt, &module_wat(body, ""));
        match res {
            Err(RecipeError::Trap(m)) => assert!(m.contains("outside guest memory"), "{m}"),
            other => panic!("expected Trap, got {other:?}"),
        }
        assert!(env.requests.is_empty());
    }
    // A response read to outside memory.
    let req_len = rmp_serde::to_vec_named(&get_request())
        .expect("encode")
        .len();
    let body = format!(
        "(drop (call $host_call (i32.const 16) (i32.const {req_len}))) (call $host_read (i32.const -10) (i32.const 100))"
    );
    let (_, res) = run(&rt, &module_wat(&body, ""));
    match res {
        Err(RecipeError::Trap(m)) => assert!(m.contains("host_read"), "{m}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    // Reading with nothing pending returns 0.
    let (_, res) = run(
        &rt,
        &module_wat("(call $host_read (i32.const 0) (i32.const 100))", ""),
    );
    assert_eq!(res.expect("runs").status, 0);
    assert_good_works(&rt);
}

#[test]
fn undecodable_request_traps() {
    let rt = runtime();
    // The bytes at 520.. are the middle of the Notify prefix: not a HostRequest.
    let (env, res) = run(
        &rt,
        &module_wat(
            "(i32.wrap_i64 (call $host_call (i32.const 520) (i32.const 5)))",
            "",
        ),
    );
    match res {
        Err(RecipeError::Trap(m)) => assert!(m.contains("undecodable"), "{m}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    assert!(env.requests.is_empty());
    assert_good_works(&rt);
}

#[test]
fn huge_host_response_is_limit_exceeded() {
    let rt = runtime();
    let env = MockEnv {
        huge: Some(2 << 20),
        ..Default::default()
    };
    let (_, res) = run_env(&rt, &good_wat(), env);
    match res {
        Err(RecipeError::LimitExceeded(m)) => assert!(m.contains("host response"), "{m}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert_good_works(&rt);
}

#[test]
fn bad_alloc_pointer_traps() {
    let rt = runtime();
    let wat = module_wat("(i32.const 0)", "").replace(
        "(local $p i32)\n",
        "(local $p i32) (return (i32.const -8))\n",
    );
    let (_, res) = run(&rt, &wat);
    match res {
        Err(RecipeError::Trap(m)) => assert!(m.contains("wazoo_alloc"), "{m}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    assert_good_works(&rt);
}

#[test]
fn invalid_modules_are_rejected() {
    let rt = runtime();
    let good = good_wat();

    let m = load_err(&rt, b"definitely not wasm");
    assert!(m.contains("does not compile"), "{m}");

    // Imports outside the ABI.
    for (from, to) in [
        (r#"(import "wazoo" "host_read""#, r#"(import "env" "abort""#),
        (
            r#"(import "wazoo" "host_read""#,
            r#"(import "wazoo" "other""#,
        ),
    ] {
        let m = load_err(&rt, &wasm(&good.replace(from, to)));
        assert!(m.contains("imports"), "{m}");
    }
    // An imported memory is outside the ABI too.
    let m = load_err(
        &rt,
        &wasm(&good.replace(
            r#"(memory (export "memory") 1)"#,
            r#"(import "wazoo" "memory" (memory 1)) (export "memory" (memory 0))"#,
        )),
    );
    assert!(m.contains("imports"), "{m}");

    // Wrong import signature.
    let m = load_err(
        &rt,
        &wasm(&module_wat("(i32.const 0)", "").replace(
            r#"(func $host_call (param i32 i32) (result i64))"#,
            r#"(func $host_call (param i32 i32) (result i32))"#,
        )),
    );
    assert!(m.contains("wrong signature"), "{m}");

    // Missing marker export; wrong export signature; missing memory export.
    let m = load_err(
        &rt,
        &wasm(&good.replace(r#"(export "wazoo_abi_version_1")"#, "")),
    );
    assert!(m.contains("wazoo_abi_version_1"), "{m}");
    let m = load_err(
        &rt,
        &wasm(&good.replace(
            r#"(func (export "wazoo_abi_version_1"))"#,
            r#"(func (export "wazoo_abi_version_1") (param i32))"#,
        )),
    );
    assert!(m.contains("wrong signature"), "{m}");
    let m = load_err(
        &rt,
        &wasm(&good.replace(r#"(memory (export "memory") 1)"#, "(memory 1)")),
    );
    assert!(m.contains("memory"), "{m}");

    // Start function.
    let m = load_err(
        &rt,
        &wasm(&module_wat("(i32.const 0)", "(func $s) (start $s)")),
    );
    assert!(m.contains("start"), "{m}");

    // Features that are off: SIMD, threads (shared memory), multi-memory.
    let m = load_err(
        &rt,
        &wasm(&module_wat(
            "(drop (i32x4.splat (i32.const 1))) (i32.const 0)",
            "",
        )),
    );
    assert!(m.contains("does not compile"), "{m}");
    let m = load_err(
        &rt,
        &wasm(&good.replace(
            r#"(memory (export "memory") 1)"#,
            r#"(memory (export "memory") 1 2 shared)"#,
        )),
    );
    assert!(m.contains("does not compile"), "{m}");
    let m = load_err(&rt, &wasm(&module_wat("(i32.const 0)", "(memory $m2 1)")));
    assert!(m.contains("does not compile"), "{m}");

    // Initial memory above the limit, data segment out of bounds: caught at load.
    let m = load_err(
        &rt,
        &wasm(&good.replace(
            r#"(memory (export "memory") 1)"#,
            r#"(memory (export "memory") 1000)"#,
        )),
    );
    assert!(m.contains("memory"), "{m}");
    let m = load_err(
        &rt,
        &wasm(&module_wat(
            "(i32.const 0)",
            r#"(data (i32.const 65535) "xx")"#,
        )),
    );
    assert!(m.contains("does not instantiate"), "{m}");

    // Too large: the good module plus a big custom section.
    let mut big = wasm(&good);
    let payload = RuntimeLimits::default().max_module_bytes;
    big.push(0); // custom section
    let mut size = payload + 2;
    loop {
        let b = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            big.push(b);
            break;
        }
        big.push(b | 0x80);
    }
    big.push(1);
    big.push(b'x');
    big.resize(big.len() + payload, 0);
    let m = load_err(&rt, &big);
    assert!(m.contains("bytes"), "{m}");

    assert_good_works(&rt);
}

#[test]
fn profile_id_is_stable() {
    let a = runtime();
    let b = runtime();
    assert_eq!(a.profile().id(), b.profile().id());
    let c = Runtime::new(RuntimeLimits {
        fuel: 1_000,
        ..Default::default()
    })
    .expect("runtime");
    assert_ne!(a.profile().id(), c.profile().id());
    assert_eq!(c.profile().limits.fuel, 1_000);
    assert_eq!(c.limits().fuel, 1_000);
}

#[test]
fn runtime_is_shared_across_threads() {
    let rt = std::sync::Arc::new(runtime());
    let fuel = assert_good_works(&rt);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let rt = rt.clone();
            std::thread::spawn(move || (0..20).map(|_| assert_good_works(&rt)).collect::<Vec<_>>())
        })
        .collect();
    for t in threads {
        for f in t.join().expect("thread") {
            assert_eq!(f, fuel);
        }
    }
}

/// The SDK's no-op recipe (recipes/noop, built by scripts/build-recipes.sh into
/// WAZOO_RECIPES_DIR) runs inside its initial memory: the SDK's arena allocator keeps
/// it from calling memory.grow, which would cost the host two mprotects and TLB
/// shootdowns on every invocation (regression: it used to grow on every call).
#[test]
fn sdk_recipe_does_not_grow_memory() {
    let dir = std::env::var_os("WAZOO_RECIPES_DIR")
        .map(std::path::PathBuf::from)
        .expect("WAZOO_RECIPES_DIR (scripts/test.sh sets it after building the recipes)");
    let wasm = std::fs::read(dir.join("noop.wasm")).expect("noop.wasm in WAZOO_RECIPES_DIR");
    let rt = runtime();
    let hash = rt.load(&wasm).expect("noop loads");
    let mut call = input("noop");
    if let abi::Invocation::Call(c) = &mut call.invocation {
        c.args = vec![0xc0];
    }
    for _ in 0..3 {
        let (_, out) = rt.invoke(&hash, &call, MockEnv::default());
        let out = out.expect("noop runs");
        assert_eq!(out.status, 0);
        assert_eq!(
            out.memory_grown_bytes, 0,
            "the no-op recipe grew its memory"
        );
        eprintln!("noop.wasm: {} fuel", out.fuel_used);
    }
    // Growth is measured: a module whose handler grows one page more than another
    // (both grow in their alloc export) reports one page more.
    let grown = |body: &str| {
        let (_, res) = run(&rt, &module_wat(body, ""));
        res.expect("grows within limits").memory_grown_bytes
    };
    let base = grown("(i32.const 0)");
    assert!(base > 0, "the WAT module's alloc grows memory");
    assert_eq!(
        grown("(drop (memory.grow (i32.const 1))) (i32.const 0)"),
        base + (64 << 10)
    );
}
