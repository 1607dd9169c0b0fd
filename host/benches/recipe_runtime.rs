//! Cost of one recipe invocation: fresh instance + input encoding + `wazoo_alloc` +
//! `wazoo_handle` of a no-op module (`cargo bench -p wazoo --bench recipe_runtime`).
//! Also one host call per invocation, to show what the ABI round trip adds.

use std::time::Instant;

use wazoo::recipe::abi::{self, HostRequest, HostResponse};
use wazoo::recipe::{HostEnv, RecipeError, Runtime, RuntimeLimits};

struct NullEnv;
impl HostEnv for NullEnv {
    fn host_call(&mut self, _req: HostRequest) -> Result<HostResponse, RecipeError> {
        Ok(HostResponse::Done)
    }
}

fn module(handle: &str, data: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
  (import "wazoo" "host_call" (func $host_call (param i32 i32) (result i64)))
  (import "wazoo" "host_read" (func $host_read (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 65536))
  (data (i32.const 16) "{data}")
  (func (export "wazoo_abi_version_1"))
  (func (export "wazoo_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  (func (export "wazoo_handle") (param $ptr i32) (param $len i32) (result i32)
    {handle}))"#
    );
    wat::parse_str(wat).expect("bench WAT")
}

fn input() -> abi::Input {
    abi::Input {
        context: abi::Context {
            module: "bench".into(),
            version: 1,
            now_ms: 1_700_000_000_000,
            zxid: 1,
            seed: 1,
        },
        invocation: abi::Invocation::Call(abi::Call {
            call_id: 1,
            function: "noop".into(),
            args: vec![0x90],
            caller: abi::Caller {
                session_id: 1,
                auth: vec![],
            },
        }),
    }
}

fn bench(name: &str, rt: &Runtime, wasm: &[u8], iters: usize) {
    let hash = rt.load(wasm).expect("load");
    let inp = input();
    let mut env = NullEnv;
    for _ in 0..1_000 {
        let (e, r) = rt.invoke(&hash, &inp, env);
        env = e;
        r.expect("warm-up invoke");
    }
    let mut samples = Vec::with_capacity(iters);
    let start = Instant::now();
    for _ in 0..iters {
        let t = Instant::now();
        let (e, r) = rt.invoke(&hash, &inp, env);
        samples.push(t.elapsed().as_nanos() as u64);
        env = e;
        if r.is_err() {
            panic!("invoke failed: {r:?}");
        }
    }
    let total = start.elapsed();
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1_000.0;
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name:<28} {iters} invocations: mean {:.2} µs, p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
        total.as_nanos() as f64 / iters as f64 / 1_000.0,
        us(pct(0.50)),
        us(pct(0.99)),
        us(*samples.last().unwrap_or(&0)),
    );
}

fn vm_size() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmSize"))
                .map(|l| l.to_string())
        })
        .unwrap_or_else(|| "VmSize: unknown".into())
}

fn main() {
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    println!("before runtime: {}", vm_size());
    let rt = Runtime::new(RuntimeLimits::default()).expect("runtime");
    println!("profile id {}", rt.profile().id());
    bench("no-op", &rt, &module("(i32.const 0)", ""), iters);
    let req = rmp_serde::to_vec_named(&HostRequest::Log("hi".into())).expect("encode");
    let data: String = req.iter().map(|b| format!("\\{b:02x}")).collect();
    let one_call = format!(
        "(drop (call $host_read (i32.const 4096) (i32.wrap_i64 (call $host_call (i32.const 16) (i32.const {}))))) (i32.const 0)",
        req.len()
    );
    bench(
        "one host_call + host_read",
        &rt,
        &module(&one_call, &data),
        iters,
    );
    // The real no-op recipe (recipes/noop, Rust + wazoo-sdk): decodes its input with
    // rmp-serde and replies nil, so this is what an SDK-built recipe costs at least.
    let dir = std::env::var_os("WAZOO_RECIPES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/wazoo/recipes")
        });
    match std::fs::read(dir.join("noop.wasm")) {
        Ok(wasm) => bench("recipes/noop (Rust SDK)", &rt, &wasm, iters),
        Err(e) => println!(
            "recipes/noop (Rust SDK): skipped, {}: {e} (run scripts/build-recipes.sh)",
            dir.join("noop.wasm").display()
        ),
    }
    println!("after runtime: {}", vm_size());
}
