//! Runs every example binary against an in-process server with the built-in recipes
//! (scripts/build-recipes.sh; `WAZOO_RECIPES_DIR` or `~/.cache/wazoo/recipes`) and
//! checks that it exits 0 and says `ok:`. One server for all: installing the recipes
//! compiles them, which takes seconds.

use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Command;
use tokio::time::timeout;

fn recipes_dir() -> PathBuf {
    match std::env::var_os("WAZOO_RECIPES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wazoo/recipes"),
    }
}

async fn run(bin: &str, addr: &str, extra: &[&str]) {
    let out = timeout(
        Duration::from_secs(120),
        Command::new(bin)
            .args(["--servers", addr])
            .args(extra)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{bin} did not finish"))
    .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{bin} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("ok: ")),
        "{bin} did not report ok:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_against_a_server() {
    for r in wazoo::config::BUILTIN_RECIPES {
        let p = recipes_dir().join(format!("{r}.wasm"));
        assert!(
            p.exists(),
            "{} missing: build the recipes with scripts/build-recipes.sh",
            p.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = wazoo::config::Config {
        client_port: 0,
        data_dir: dir.path().to_path_buf(),
        tick_time_ms: 100,
        admin_enable_server: false,
        ..Default::default()
    };
    c.recipe_builtin_dir = Some(recipes_dir());
    let server = wazoo::server::Server::start(c).await.expect("server start");
    let addr = server.client_addr.to_string();
    // Concurrently: they use different names, and the server is shared.
    tokio::join!(
        run(env!("CARGO_BIN_EXE_locked_section"), &addr, &[]),
        run(env!("CARGO_BIN_EXE_leader_election"), &addr, &[]),
        run(env!("CARGO_BIN_EXE_barrier"), &addr, &[]),
        run(env!("CARGO_BIN_EXE_config_watcher"), &addr, &[]),
    );
    // A second run against the same state (the fence and epoch znodes, the config key
    // already published) works too.
    run(
        env!("CARGO_BIN_EXE_locked_section"),
        &addr,
        &["--rounds", "1"],
    )
    .await;
    run(
        env!("CARGO_BIN_EXE_config_watcher"),
        &addr,
        &["--updates", "2"],
    )
    .await;
    server.shutdown().await;
}
