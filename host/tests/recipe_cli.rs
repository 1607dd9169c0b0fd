//! `wazoo recipe ...` (the built binary) against an in-process server, with the
//! `testkit` recipe built by scripts/build-recipes.sh.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::timeout;
use wazoo::config::Config;
use wazoo::server::Server;

/// Generous bound that only turns a hang into a failure.
const GUARD: Duration = Duration::from_secs(60);

fn testkit_path() -> PathBuf {
    let dir = match std::env::var_os("WAZOO_RECIPES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wazoo/recipes"),
    };
    let path = dir.join("testkit.wasm");
    assert!(
        path.is_file(),
        "{} is missing: build the recipes with scripts/build-recipes.sh \
         (or point WAZOO_RECIPES_DIR at them)",
        path.display()
    );
    path
}

/// Runs `wazoo recipe <args>` off the async runtime (the server runs on it).
async fn wazoo(args: Vec<String>) -> Output {
    let shown = args.join(" ");
    timeout(
        GUARD,
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_wazoo"))
                .arg("recipe")
                .args(&args)
                .output()
                .expect("run the wazoo binary")
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("`wazoo recipe {shown}` hung"))
    .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(o: &Output, what: &str) -> String {
    let (out, err) = text(o);
    assert!(
        o.status.success(),
        "{what} failed ({:?}): stdout {out:?} stderr {err:?}",
        o.status
    );
    out
}

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_call_delete_with_the_cli() {
    let file = testkit_path();
    let dir = TempDir::new().unwrap();
    let server = Server::start(Config {
        client_port: 0,
        data_dir: dir.path().to_path_buf(),
        tick_time_ms: 100,
        admin_enable_server: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = server.client_addr.to_string();
    let file = file.to_str().unwrap();

    let out = ok(
        &wazoo(v(&["upload", "--servers", &addr, "testkit", file])).await,
        "upload",
    );
    assert!(out.contains("testkit version 1"), "{out:?}");
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(file).unwrap()))
    };
    assert!(out.contains(&sha), "{out:?}");

    let out = ok(&wazoo(v(&["list", "--servers", &addr])).await, "list");
    assert!(out.contains("testkit"), "{out:?}");
    let out = ok(
        &wazoo(v(&["list", "--servers", &addr, "testkit"])).await,
        "list testkit",
    );
    assert!(out.contains("testkit"), "{out:?}");

    let out = ok(
        &wazoo(v(&[
            "call",
            "--servers",
            &addr,
            "testkit",
            "echo",
            r#"{"a":1}"#,
        ]))
        .await,
        "call echo",
    );
    let json: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("call output {out:?} is not JSON: {e}"));
    assert_eq!(json["a"], 1, "{out:?}");

    let o = wazoo(v(&[
        "call",
        "--servers",
        &addr,
        "testkit",
        "fail",
        r#"{"message":"boom"}"#,
    ]))
    .await;
    let (out, err) = text(&o);
    assert!(
        !o.status.success(),
        "fail must exit non-zero: {out:?} {err:?}"
    );
    let all = format!("{out}{err}");
    assert!(
        all.contains("RecipeFailed") && all.contains("boom"),
        "{all:?}"
    );

    ok(
        &wazoo(v(&["delete", "--servers", &addr, "testkit"])).await,
        "delete",
    );
    let out = ok(&wazoo(v(&["list", "--servers", &addr])).await, "list");
    assert!(!out.contains("testkit"), "deleted: {out:?}");
    let o = wazoo(v(&["call", "--servers", &addr, "testkit", "echo", "1"])).await;
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        format!("{out}{err}").contains("RecipeNotFound"),
        "{out:?} {err:?}"
    );

    server.shutdown().await;
}
