//! `wazoo cli` (the built binary) against an in-process server: one-shot `-c` and
//! piped scripts.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::timeout;
use wazoo::config::Config;
use wazoo::server::Server;

/// Generous bound that only turns a hang into a failure.
const GUARD: Duration = Duration::from_secs(60);

async fn start() -> (TempDir, Server, String) {
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
    (dir, server, addr)
}

/// Runs `wazoo cli --servers ADDR <extra>` with `stdin` piped in, off the runtime.
async fn cli(addr: &str, extra: &[&str], stdin: &str) -> Output {
    let mut args = vec!["cli".to_string(), "--servers".into(), addr.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let input = stdin.to_string();
    let shown = args.join(" ");
    timeout(
        GUARD,
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_wazoo"))
                .args(&args)
                .env("WAZOO_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run the wazoo binary");
            let mut si = child.stdin.take().unwrap();
            si.write_all(input.as_bytes()).unwrap();
            drop(si);
            child.wait_with_output().unwrap()
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("`wazoo {shown}` hung"))
    .unwrap()
}

async fn one(addr: &str, cmd: &str) -> Output {
    cli(addr, &["-c", cmd], "").await
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}): stdout {:?} stderr {:?}",
        o.status,
        out(o),
        err(o)
    );
    out(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands() {
    let (_dir, server, addr) = start().await;

    let o = one(&addr, "create /a hello").await;
    assert_eq!(ok(&o, "create"), "Created /a\n");
    assert_eq!(ok(&one(&addr, "get /a").await, "get"), "hello\n");
    assert_eq!(ok(&one(&addr, "ls /").await, "ls"), "[a, zookeeper]\n");
    ok(&one(&addr, "set /a 'hello world'").await, "set");
    let got = ok(&one(&addr, "get -s /a").await, "get -s");
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "hello world");
    assert!(lines[1].starts_with("cZxid = 0x"), "{got}");
    assert!(
        lines[2].starts_with("ctime = ") && lines[2].contains(" UTC "),
        "{got}"
    );
    assert!(got.contains("\ndataVersion = 1\n"), "{got}");
    assert!(got.contains("\ndataLength = 11\n"), "{got}");
    assert!(got.ends_with("numChildren = 0\n"), "{got}");

    let st = ok(&one(&addr, "stat /a").await, "stat");
    assert_eq!(st.lines().count(), 11, "{st}");
    assert!(st.contains("ephemeralOwner = 0x0\n") && st.contains("aclVersion = 0\n"));

    // Errors: zkCli's wording on stderr, exit status 1.
    let o = one(&addr, "get /missing").await;
    assert!(!o.status.success());
    assert_eq!(err(&o).trim(), "Node does not exist: /missing");
    let o = one(&addr, "create /a again").await;
    assert!(!o.status.success());
    assert_eq!(err(&o).trim(), "Node already exists: /a");
    let o = one(&addr, "set -v 7 /a x").await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains("version No is not valid : /a"),
        "{}",
        err(&o)
    );
    let o = one(&addr, "nosuchcommand").await;
    assert!(!o.status.success());
    assert!(err(&o).contains("Unknown command: nosuchcommand"));
    let o = one(&addr, "get").await;
    assert!(!o.status.success());
    assert!(err(&o).contains("usage: get"));

    // delete with the right version, then it is gone.
    ok(&one(&addr, "delete -v 1 /a").await, "delete");
    assert!(!one(&addr, "stat /a").await.status.success());

    // recipe list with no recipe: only the header.
    let l = ok(&one(&addr, "recipe list").await, "recipe list");
    assert_eq!(l.lines().count(), 1, "{l}");
    assert!(l.starts_with("NAME"), "{l}");
    let o = one(&addr, "recipe call nothere f {\"a\": 1}").await;
    assert!(!o.status.success());
    assert!(err(&o).contains("error: Recipe"), "{}", err(&o));

    // No server to talk to.
    let o = cli("127.0.0.1:1", &["-c", "ls /"], "").await;
    assert!(!o.status.success());
    assert!(err(&o).contains("ConnectionLoss"), "{}", err(&o));

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_script_keeps_going_after_errors() {
    let (_dir, server, addr) = start().await;
    let script = "\
# a comment, then a blank line

create /app
create /app/cfg v1
create -s -e /app/lock- me
get /nope
create /app dup
ls /app
getEphemerals /app
get -w /app/cfg
set /app/cfg v2
get /app/cfg
stat /app/cfg
deleteall /app
ls /
sync /
quit
ls /never-run
";
    let o = cli(&addr, &[], script).await;
    let stdout = out(&o);
    let stderr = err(&o);
    // One command failed (two, in fact), so the status is 1; but every line ran.
    assert!(!o.status.success(), "{stdout}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        ["Node does not exist: /nope", "Node already exists: /app"],
        "{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "Created /app");
    assert_eq!(lines[1], "Created /app/cfg");
    assert_eq!(lines[2], "Created /app/lock-0000000001");
    assert_eq!(lines[3], "[cfg, lock-0000000001]");
    assert_eq!(lines[4], "[/app/lock-0000000001]");
    assert_eq!(lines[5], "v1");
    // The watch fired by `set`; printed before the next command's output.
    assert_eq!(
        lines[6],
        "WATCHER:: WatchedEvent state:SyncConnected type:NodeDataChanged path:/app/cfg"
    );
    assert_eq!(lines[7], "v2");
    assert!(lines[8].starts_with("cZxid = "));
    assert_eq!(lines[18], "numChildren = 0");
    assert_eq!(lines[19], "[zookeeper]");
    assert_eq!(lines[20], "Sync is OK");
    assert_eq!(lines.len(), 21, "{stdout}");

    // A script without errors exits 0.
    let o = cli(&addr, &[], "create /x\ndelete /x\n").await;
    assert_eq!(ok(&o, "clean script"), "Created /x\n");

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_and_auth() {
    let (_dir, server, addr) = start().await;
    let script = "\
create /open
getAcl /open
create /ro data world:anyone:r
getAcl /ro
set /ro nope
addauth digest alice:secret
whoami
create /mine data auth::cdrwa
getAcl /mine
setAcl /open world:anyone:cdr
getAcl /open
setAcl /open bogus
";
    let o = cli(&addr, &[], script).await;
    let stdout = out(&o);
    let stderr = err(&o);
    assert!(
        stdout.starts_with(
            "Created /open\n'world,'anyone\n: cdrwa\nCreated /ro\n'world,'anyone\n: r\n"
        ),
        "{stdout}"
    );
    assert!(stderr.contains("Insufficient permission : /ro"), "{stderr}");
    assert!(stdout.contains("Auth scheme: User\n"), "{stdout}");
    assert!(stdout.contains("digest: alice\n"), "{stdout}");
    // auth:: becomes the session's digest identity (hash redacted or not).
    assert!(
        stdout.contains("Created /mine\n'digest,'alice:"),
        "{stdout}"
    );
    assert!(stdout.ends_with("'world,'anyone\n: cdr\n"), "{stdout}");
    assert!(stderr.contains("scheme:id:perm"), "{stderr}");

    // Another session without the credentials cannot read /mine; with --auth it can.
    let o = one(&addr, "get /mine").await;
    assert!(
        err(&o).contains("Insufficient permission : /mine"),
        "{}",
        err(&o)
    );
    let o = cli(
        &addr,
        &["--auth", "digest:alice:secret", "-c", "get /mine"],
        "",
    )
    .await;
    assert_eq!(ok(&o, "get with --auth"), "data\n");

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipe_commands_in_the_shell() {
    let dir = match std::env::var_os("WAZOO_RECIPES_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/wazoo/recipes"),
    };
    let file = dir.join("testkit.wasm");
    assert!(
        file.is_file(),
        "{} is missing: build the recipes with scripts/build-recipes.sh",
        file.display()
    );
    let (_dir, server, addr) = start().await;
    let script = format!(
        "recipe upload testkit {}\nrecipe list testkit\nrecipe call testkit echo {{\"a\": 1}}\n\
         recipe call testkit fail '{{\"message\":\"boom\"}}'\nrecipe delete testkit\nrecipe list\n",
        file.display()
    );
    let o = cli(&addr, &[], &script).await;
    let stdout = out(&o);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("testkit version 1 sha256 "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("NAME") && lines[2].starts_with("testkit "),
        "{stdout}"
    );
    assert_eq!(lines[3], r#"{"a":1}"#, "{stdout}");
    assert!(lines[4].starts_with("NAME") && lines.len() == 5, "{stdout}");
    assert_eq!(err(&o).trim(), "error: RecipeFailed: boom", "{}", err(&o));
    assert!(!o.status.success());
    server.shutdown().await;
}
