//! Recipes end to end against a real in-process server: the wire ops through the
//! client, with the `testkit`, `noop` recipes built by scripts/build-recipes.sh.
//! No sleeps: tests wait on replies, watches and recipe messages; GUARD only turns a
//! hang into a failure. Nothing random.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo_client::{
    open_acl_unsafe, read_acl_unsafe, Client, ClientError, ConnectOptions, RecipeMessage,
    WatchedEvent,
};
use wazoo_proto::consts::{event, perms};
use wazoo_proto::{Acl, ErrorCode, Id};

/// Generous bound that only turns a hang into a failure; tests wait on events.
const GUARD: Duration = Duration::from_secs(60);
const TK: &str = "testkit";

fn recipes_dir() -> PathBuf {
    match std::env::var_os("WAZOO_RECIPES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wazoo/recipes"),
    }
}

/// A built recipe; panics naming the build script when it is missing.
fn wasm(name: &str) -> Vec<u8> {
    let path = recipes_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): build the recipes with scripts/build-recipes.sh \
             (or point WAZOO_RECIPES_DIR at them)",
            path.display()
        )
    })
}

fn config(dir: &TempDir) -> Config {
    let mut c = Config {
        client_port: 0,
        data_dir: dir.path().to_path_buf(),
        tick_time_ms: 100,
        admin_enable_server: false,
        ..Default::default()
    };
    c.min_session_timeout_ms = 200;
    c.max_session_timeout_ms = 10_000;
    c
}

async fn connect(server: &Server) -> Client {
    timeout(
        GUARD,
        Client::connect(
            &server.client_addr.to_string(),
            ConnectOptions {
                timeout_ms: 10_000,
                ..Default::default()
            },
        ),
    )
    .await
    .expect("connect within the guard time")
    .expect("connect")
}

/// Awaits `f` under the guard timeout.
async fn g<F: std::future::Future>(f: F) -> F::Output {
    timeout(GUARD, f)
        .await
        .expect("reply within the guard time")
}

fn mp<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("encode msgpack")
}

fn de<T: DeserializeOwned>(b: &[u8]) -> T {
    rmp_serde::from_slice(b).unwrap_or_else(|e| panic!("decode msgpack {b:02x?}: {e}"))
}

async fn call(c: &Client, function: &str, args: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    g(c.recipe_call(TK, -1, function, args)).await
}

fn expect_recipe_err<T: std::fmt::Debug>(r: Result<T, ClientError>, code: ErrorCode) -> String {
    match r {
        Err(ClientError::Recipe { code: c, message }) => {
            assert_eq!(c, code, "wrong code (message {message:?})");
            message
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

async fn next_event(rx: &mut UnboundedReceiver<WatchedEvent>) -> WatchedEvent {
    timeout(GUARD, rx.recv())
        .await
        .expect("event within the guard time")
        .expect("event stream open")
}

async fn next_msg(rx: &mut UnboundedReceiver<RecipeMessage>) -> RecipeMessage {
    timeout(GUARD, rx.recv())
        .await
        .expect("recipe message within the guard time")
        .expect("recipe message stream open")
}

/// Waits until `path` exists, using an exists watch.
async fn wait_exists(c: &Client, events: &mut UnboundedReceiver<WatchedEvent>, path: &str) {
    loop {
        if g(c.exists(path, true)).await.unwrap().is_some() {
            return;
        }
        let e = next_event(events).await;
        if e.path == path && e.event_type == event::NODE_CREATED {
            return;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Debug, Deserialize)]
struct Parked {
    call_id: i64,
    session_id: i64,
    function: String,
}

async fn list_parked(c: &Client) -> Vec<Parked> {
    de(&call(c, "list_parked", vec![0xc0])
        .await
        .expect("list_parked"))
}

/// Waits until at least `n` calls are parked: lists them with `c`, and between
/// listings waits on a child watch of /wazoo/parked/testkit (the parked calls'
/// znodes) set by a separate watcher session.
async fn wait_parked(server: &Server, c: &Client, n: usize) -> Vec<Parked> {
    const DIR: &str = "/wazoo/parked/testkit";
    let w = connect(server).await;
    let mut events = w.take_events().unwrap();
    loop {
        let l = list_parked(c).await;
        if l.len() >= n {
            return l;
        }
        let have = match g(w.exists(DIR, true)).await.unwrap() {
            None => 0,
            Some(_) => g(w.get_children(DIR, true)).await.unwrap().len(),
        };
        if have < n {
            next_event(&mut events).await;
        }
    }
}

fn map(pairs: &[(&str, rmpv_like::V)]) -> Vec<u8> {
    let m: BTreeMap<&str, &rmpv_like::V> = pairs.iter().map(|(k, v)| (*k, v)).collect();
    mp(&m)
}

/// A tiny MessagePack value for building argument maps without rmpv.
mod rmpv_like {
    use serde::Serialize;
    #[derive(Serialize)]
    #[serde(untagged)]
    pub enum V {
        I(i64),
        S(String),
    }
}
use rmpv_like::V;

fn s(v: &str) -> V {
    V::S(v.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_upload_list_call_delete() {
    let testkit = wasm("testkit");
    let noop = wasm("noop");
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;

    let up = g(c.recipe_upload(TK, &testkit)).await.expect("upload");
    assert_eq!(up.name, TK);
    assert_eq!(up.version, 1);
    let sha = format!("{:x}", Sha256::digest(&testkit));
    assert_eq!(up.sha256, sha);
    let again = g(c.recipe_upload(TK, &testkit)).await.expect("re-upload");
    assert_eq!(again.version, 1, "identical bytes: same version");
    assert_eq!(again.sha256, sha);
    let up2 = g(c.recipe_upload(TK, &noop)).await.expect("upload noop");
    assert_eq!(up2.version, 2);
    assert_eq!(up2.sha256, format!("{:x}", Sha256::digest(&noop)));

    let list = g(c.recipe_list(TK)).await.unwrap();
    let vs: Vec<(i32, String, i32)> = list
        .iter()
        .map(|i| (i.version, i.sha256.clone(), i.size))
        .collect();
    assert_eq!(
        vs,
        vec![
            (1, sha.clone(), testkit.len() as i32),
            (2, up2.sha256.clone(), noop.len() as i32)
        ]
    );
    assert_eq!(g(c.recipe_list("")).await.unwrap().len(), 2);

    let args = map(&[("a", V::I(1)), ("b", s("two"))]);
    let reply = g(c.recipe_call(TK, 1, "echo", args.clone())).await.unwrap();
    assert_eq!(reply, args, "pinned v1 echoes");
    // Latest runs noop (its only function is "noop", which testkit lacks).
    assert_eq!(
        g(c.recipe_call(TK, -1, "noop", vec![0xc0])).await.unwrap(),
        vec![0xc0]
    );
    let msg = expect_recipe_err(
        g(c.recipe_call(TK, -1, "echo", args.clone())).await,
        ErrorCode::RecipeFailed,
    );
    assert!(msg.contains("unknown function echo"), "{msg:?}");
    let msg = expect_recipe_err(
        g(c.recipe_call(TK, 1, "noop", vec![0xc0])).await,
        ErrorCode::RecipeFailed,
    );
    assert!(msg.contains("unknown function noop"), "{msg:?}");

    g(c.recipe_delete(TK, 1)).await.expect("delete v1");
    let list = g(c.recipe_list(TK)).await.unwrap();
    assert_eq!(list.iter().map(|i| i.version).collect::<Vec<_>>(), vec![2]);
    expect_recipe_err(
        g(c.recipe_call(TK, 1, "echo", args.clone())).await,
        ErrorCode::RecipeNotFound,
    );
    g(c.recipe_delete(TK, -1)).await.expect("delete all");
    assert!(g(c.recipe_list(TK)).await.unwrap().is_empty());
    assert!(g(c.recipe_list("")).await.unwrap().is_empty());
    expect_recipe_err(
        g(c.recipe_call(TK, -1, "echo", args)).await,
        ErrorCode::RecipeNotFound,
    );
    let _ = g(c.close()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_delete_need_admin_once_the_operator_says_so() {
    let testkit = wasm("testkit");
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let admin = connect(&server).await;
    g(admin.add_auth("digest", b"admin:pw")).await.unwrap();
    g(admin.recipe_upload(TK, &testkit))
        .await
        .expect("world may upload at first");
    let acl = vec![
        Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "digest".into(),
                id: wazoo::acl::digest_id("admin:pw"),
            },
        },
        Acl {
            perms: perms::READ,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        },
    ];
    let (_, r) = g(
        admin.request(wazoo_proto::Request::SetAcl(wazoo_proto::SetAclRequest {
            path: "/wazoo/modules".into(),
            acl,
            version: -1,
        })),
    )
    .await
    .expect("setAcl sent");
    r.expect("setAcl /wazoo/modules");

    let anon = connect(&server).await;
    expect_recipe_err(
        g(anon.recipe_upload("other", &testkit)).await,
        ErrorCode::NoAuth,
    );
    expect_recipe_err(g(anon.recipe_delete(TK, -1)).await, ErrorCode::NoAuth);
    assert_eq!(
        g(anon.recipe_list(TK)).await.unwrap().len(),
        1,
        "nothing deleted"
    );
    assert!(g(anon.recipe_list("other")).await.unwrap().is_empty());

    let other_admin = connect(&server).await;
    g(other_admin.add_auth("digest", b"admin:pw"))
        .await
        .unwrap();
    let up = g(other_admin.recipe_upload("other", &testkit))
        .await
        .expect("admin uploads");
    assert_eq!(up.version, 1);

    // Calls by anyone still work.
    let args = mp(&[1, 2, 3]);
    assert_eq!(
        g(anon.recipe_call("other", -1, "echo", args.clone()))
            .await
            .unwrap(),
        args
    );
    assert_eq!(call(&anon, "echo", args.clone()).await.unwrap(), args);
    g(other_admin.recipe_delete("other", -1))
        .await
        .expect("admin deletes");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipe_writes_obey_the_callers_acl_and_failures_leave_nothing() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;
    g(c.recipe_upload(TK, &wasm("testkit"))).await.unwrap();
    g(c.create("/locked", b"", read_acl_unsafe(), 0))
        .await
        .unwrap();

    let msg = expect_recipe_err(
        call(&c, "put", map(&[("path", s("/locked/x"))])).await,
        ErrorCode::RecipeFailed,
    );
    assert!(msg.contains("NoAuth"), "message {msg:?}");
    assert!(g(c.exists("/locked/x", false)).await.unwrap().is_none());

    expect_recipe_err(
        call(&c, "put_then_fail", map(&[("path", s("/ptf/a/b"))])).await,
        ErrorCode::RecipeFailed,
    );
    assert!(g(c.exists("/ptf", false)).await.unwrap().is_none());
    assert!(g(c.exists("/ptf/a/b", false)).await.unwrap().is_none());

    // The same put on a writable path works.
    #[derive(Deserialize)]
    struct PutReply {
        path: String,
    }
    let r: PutReply = de(&call(&c, "put", map(&[("path", s("/open/x"))]))
        .await
        .unwrap());
    assert_eq!(r.path, "/open/x");
    assert!(g(c.exists("/open/x", false)).await.unwrap().is_some());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_calls_complete_from_another_session() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let a = connect(&server).await;
    let b = connect(&server).await;
    g(b.recipe_upload(TK, &wasm("testkit"))).await.unwrap();

    let a1 = a.clone();
    let parked = tokio::spawn(async move { a1.recipe_call(TK, -1, "park", mp("first")).await });
    let l = wait_parked(&server, &b, 1).await;
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0].session_id, a.session_id());
    assert_eq!(l[0].function, "park");
    #[derive(Serialize)]
    struct Complete<'a> {
        call_id: i64,
        value: &'a str,
    }
    call(
        &b,
        "complete",
        mp(&Complete {
            call_id: l[0].call_id,
            value: "done",
        }),
    )
    .await
    .expect("complete");
    let r = g(parked).await.unwrap().expect("parked call result");
    assert_eq!(de::<String>(&r), "done");
    assert!(list_parked(&b).await.is_empty());

    // complete_all: each parked call gets its own arguments back, oldest first.
    let a1 = a.clone();
    let p1 = tokio::spawn(async move { a1.recipe_call(TK, -1, "park", mp("one")).await });
    wait_parked(&server, &b, 1).await;
    let b1 = b.clone();
    let p2 = tokio::spawn(async move { b1.recipe_call(TK, -1, "park", mp("two")).await });
    let l = wait_parked(&server, &a, 2).await;
    assert!(l[0].call_id < l[1].call_id);
    let n: i64 = de(&call(&a, "complete_all", vec![0xc0]).await.unwrap());
    assert_eq!(n, 2);
    assert_eq!(de::<String>(&g(p1).await.unwrap().unwrap()), "one");
    assert_eq!(de::<String>(&g(p2).await.unwrap().unwrap()), "two");

    // Failing a parked call with an error.
    let a1 = a.clone();
    let p = tokio::spawn(async move { a1.recipe_call(TK, -1, "park", vec![0xc0]).await });
    let l = wait_parked(&server, &b, 1).await;
    #[derive(Serialize)]
    struct Fail<'a> {
        call_id: i64,
        error: &'a str,
    }
    call(
        &b,
        "complete",
        mp(&Fail {
            call_id: l[0].call_id,
            error: "nope",
        }),
    )
    .await
    .unwrap();
    let msg = expect_recipe_err(g(p).await.unwrap(), ErrorCode::RecipeFailed);
    assert!(msg.contains("nope"), "{msg:?}");
    // Completing an unknown call fails.
    let msg = expect_recipe_err(
        call(
            &b,
            "complete",
            mp(&Complete {
                call_id: 999_999,
                value: "x",
            }),
        )
        .await,
        ErrorCode::RecipeFailed,
    );
    assert!(msg.contains("no parked call"), "{msg:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_cancels_parked_calls() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut events = b.take_events().unwrap();
    g(b.recipe_upload(TK, &wasm("testkit"))).await.unwrap();
    let sid = a.session_id();

    call(&a, "watch_session", vec![0x80])
        .await
        .expect("watch_session");
    let a1 = a.clone();
    let parked = tokio::spawn(async move { a1.recipe_call(TK, -1, "park", vec![0xc0]).await });
    let l = wait_parked(&server, &b, 1).await;
    let id = l[0].call_id;
    assert_eq!(l[0].session_id, sid);

    let closed = format!("/testkit/closed/{sid}");
    assert!(g(b.exists(&closed, true)).await.unwrap().is_none());
    g(a.close()).await.expect("close");
    // The parked call ends with the connection (ConnectionClosed or RecipeCancelled).
    let r = g(parked).await.unwrap();
    assert!(r.is_err(), "{r:?}");
    wait_exists(&b, &mut events, &closed).await;
    let (data, _) = g(b.get_data(&closed, false)).await.unwrap();
    let ids: Vec<i64> = de(&data.expect("data"));
    assert_eq!(ids, vec![id]);
    assert!(list_parked(&b).await.is_empty());
    server.shutdown().await;
}

#[derive(Debug, Deserialize, PartialEq)]
struct NodeNote {
    path: String,
    change: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_and_subscriptions_reach_the_session() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut msgs = a.take_recipe_messages().unwrap();
    g(b.recipe_upload(TK, &wasm("testkit"))).await.unwrap();

    #[derive(Serialize)]
    struct Notify<'a> {
        session: i64,
        msg: &'a str,
    }
    for m in ["hello", "world"] {
        call(
            &b,
            "notify",
            mp(&Notify {
                session: a.session_id(),
                msg: m,
            }),
        )
        .await
        .expect("notify");
    }
    for m in ["hello", "world"] {
        let got = next_msg(&mut msgs).await;
        assert_eq!(got.module, TK);
        assert_eq!(de::<String>(&got.payload), m);
    }

    #[derive(Serialize)]
    struct Sub<'a> {
        prefix: &'a str,
        notify: i64,
    }
    call(
        &a,
        "subscribe",
        mp(&Sub {
            prefix: "/sub",
            notify: a.session_id(),
        }),
    )
    .await
    .expect("subscribe");
    g(b.create("/sub", b"", open_acl_unsafe(), 0))
        .await
        .unwrap();
    g(b.create("/sub/x", b"", open_acl_unsafe(), 0))
        .await
        .unwrap();
    g(b.set_data("/sub/x", b"d", -1)).await.unwrap();
    g(b.create("/subway", b"", open_acl_unsafe(), 0))
        .await
        .unwrap();
    g(b.delete("/sub/x", -1)).await.unwrap();
    let mut got = Vec::new();
    // Created /sub; Created /sub/x + ChildrenChanged /sub; DataChanged /sub/x;
    // Deleted /sub/x + ChildrenChanged /sub. /subway is not under /sub.
    for _ in 0..6 {
        let m = next_msg(&mut msgs).await;
        assert_eq!(m.module, TK);
        let n: NodeNote = de(&m.payload);
        got.push((n.change, n.path));
    }
    let want = |c: &str, p: &str| (c.to_string(), p.to_string());
    assert_eq!(got[0], want("Created", "/sub"), "{got:?}");
    let pos = |w: (String, String)| {
        got.iter()
            .position(|x| *x == w)
            .unwrap_or_else(|| panic!("{w:?} missing from {got:?}"))
    };
    let created_x = pos(want("Created", "/sub/x"));
    let data_x = pos(want("DataChanged", "/sub/x"));
    let deleted_x = pos(want("Deleted", "/sub/x"));
    assert!(created_x < data_x && data_x < deleted_x, "{got:?}");
    assert_eq!(
        got.iter()
            .filter(|x| **x == want("ChildrenChanged", "/sub"))
            .count(),
        2,
        "{got:?}"
    );
    // The log znode records the same lines.
    let (log, _) = g(b.get_data("/testkit/log", false)).await.unwrap();
    let log = String::from_utf8(log.unwrap()).unwrap();
    assert!(log.starts_with("Created /sub\n"), "{log:?}");
    assert!(!log.contains("/subway"), "{log:?}");
    server.shutdown().await;
}

#[derive(Debug, Default, Deserialize)]
struct Subs {
    #[serde(default)]
    timers: BTreeMap<String, i64>,
}

async fn subs(c: &Client) -> Subs {
    match g(c.get_data("/wazoo/subscriptions/testkit", false)).await {
        Ok((d, _)) => serde_json::from_slice(&d.unwrap_or_default()).expect("subs json"),
        Err(e) if e.code() == Some(ErrorCode::NoNode) => Subs::default(),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_and_cancelled_ones_do_not() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;
    let mut events = c.take_events().unwrap();
    g(c.recipe_upload(TK, &wasm("testkit"))).await.unwrap();

    #[derive(Serialize)]
    struct Timer<'a> {
        name: &'a str,
        at_ms: i64,
    }
    let far = now_ms() + 3_600_000;
    call(
        &c,
        "set_timer",
        mp(&Timer {
            name: "late",
            at_ms: far,
        }),
    )
    .await
    .unwrap();
    assert_eq!(subs(&c).await.timers.get("late"), Some(&far));
    let before = now_ms();
    call(
        &c,
        "set_timer",
        mp(&Timer {
            name: "t1",
            at_ms: before,
        }),
    )
    .await
    .unwrap();
    wait_exists(&c, &mut events, "/testkit/timers/t1").await;
    let (d, _) = g(c.get_data("/testkit/timers/t1", false)).await.unwrap();
    let fired_at: i64 = de(&d.unwrap());
    assert!(fired_at >= before, "{fired_at} < {before}");
    let s = subs(&c).await;
    assert!(!s.timers.contains_key("t1"), "a fired timer is forgotten");
    assert!(s.timers.contains_key("late"));

    #[derive(Serialize)]
    struct Name<'a> {
        name: &'a str,
    }
    call(&c, "cancel_timer", mp(&Name { name: "late" }))
        .await
        .unwrap();
    assert!(subs(&c).await.timers.is_empty());
    assert!(g(c.exists("/testkit/timers/late", false))
        .await
        .unwrap()
        .is_none());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_calls_fail_cleanly_while_others_keep_working() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;
    let other = connect(&server).await;
    g(c.recipe_upload(TK, &wasm("testkit"))).await.unwrap();
    g(other.create("/plain", b"0", open_acl_unsafe(), 0))
        .await
        .unwrap();

    let mut step = 0;
    let mut plain = |o: Client| {
        step += 1;
        let n = step;
        async move {
            let v = format!("{n}");
            g(o.set_data("/plain", v.as_bytes(), -1)).await.unwrap();
            let (d, _) = g(o.get_data("/plain", false)).await.unwrap();
            assert_eq!(d.as_deref(), Some(v.as_bytes()));
        }
    };

    let (r, ()) = tokio::join!(call(&c, "spin", vec![0xc0]), plain(other.clone()));
    expect_recipe_err(r, ErrorCode::RecipeFuelExhausted);
    let (r, ()) = tokio::join!(call(&c, "trap", vec![0xc0]), plain(other.clone()));
    expect_recipe_err(r, ErrorCode::RecipeTrap);
    #[derive(Serialize)]
    struct Len {
        len: u64,
    }
    let (r, ()) = tokio::join!(
        call(&c, "big_reply", mp(&Len { len: 2_000_000 })),
        plain(other.clone())
    );
    expect_recipe_err(r, ErrorCode::RecipeLimitExceeded);
    #[derive(Serialize)]
    struct Many<'a> {
        prefix: &'a str,
        count: u64,
    }
    let (r, ()) = tokio::join!(
        call(
            &c,
            "many_writes",
            mp(&Many {
                prefix: "/many",
                count: 5000
            })
        ),
        plain(other.clone())
    );
    // With the default limits the fuel budget (10M) runs out after ~600 SDK creates,
    // before the 1,000-writes bound of apply.rs: either way the call fails whole.
    match r {
        Err(ClientError::Recipe { code, .. })
            if code == ErrorCode::RecipeLimitExceeded || code == ErrorCode::RecipeFuelExhausted => {
        }
        other => panic!(
            "many_writes: expected RecipeLimitExceeded or RecipeFuelExhausted, got {other:?}"
        ),
    }
    assert!(g(other.exists("/many", false)).await.unwrap().is_none());
    #[derive(Serialize)]
    struct Alloc {
        bytes: u64,
    }
    let (r, ()) = tokio::join!(
        call(&c, "alloc", mp(&Alloc { bytes: 64 << 20 })),
        plain(other.clone())
    );
    expect_recipe_err(r, ErrorCode::RecipeLimitExceeded);
    let (r, ()) = tokio::join!(call(&c, "no_reply", vec![0xc0]), plain(other.clone()));
    expect_recipe_err(r, ErrorCode::RecipeFailed);
    let msg = expect_recipe_err(
        call(&c, "nosuch", vec![0xc0]).await,
        ErrorCode::RecipeFailed,
    );
    assert!(msg.contains("unknown function nosuch"), "{msg:?}");
    // The caller's session is fine too, and the recipe still answers.
    plain(c.clone()).await;
    let args = mp("still here");
    assert_eq!(call(&c, "echo", args.clone()).await.unwrap(), args);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipes_and_their_writes_survive_a_restart() {
    let testkit = wasm("testkit");
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;
    let up = g(c.recipe_upload(TK, &testkit)).await.unwrap();
    #[derive(Serialize)]
    struct Put<'a> {
        path: &'a str,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
    }
    call(
        &c,
        "put",
        mp(&Put {
            path: "/kept/by/recipe",
            data: b"v",
        }),
    )
    .await
    .unwrap();
    drop(c);
    server.shutdown().await;

    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;
    let list = g(c.recipe_list("")).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].name.as_str(), list[0].version), (TK, 1));
    assert_eq!(list[0].sha256, up.sha256);
    let args = mp(&[7, 8]);
    assert_eq!(call(&c, "echo", args.clone()).await.unwrap(), args);
    let (d, _) = g(c.get_data("/kept/by/recipe", false)).await.unwrap();
    assert_eq!(d.as_deref(), Some(&b"v"[..]));
    #[derive(Deserialize)]
    struct Get {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }
    let got: Get = de(&call(&c, "get", map(&[("path", s("/kept/by/recipe"))]))
        .await
        .unwrap());
    assert_eq!(got.data, b"v");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_recipe_cancels_its_parked_calls_and_forgets_its_state() {
    let testkit = wasm("testkit");
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let up = g(b.recipe_upload(TK, &testkit)).await.unwrap();
    let blob = format!("/wazoo/blobs/{}", up.sha256);
    assert!(g(b.exists(&blob, false)).await.unwrap().is_some());

    #[derive(Serialize)]
    struct Timer<'a> {
        name: &'a str,
        at_ms: i64,
    }
    call(
        &b,
        "set_timer",
        mp(&Timer {
            name: "late",
            at_ms: now_ms() + 3_600_000,
        }),
    )
    .await
    .unwrap();
    call(&b, "subscribe", map(&[("prefix", s("/watched"))]))
        .await
        .unwrap();
    let a1 = a.clone();
    let parked = tokio::spawn(async move { a1.recipe_call(TK, -1, "park", vec![0xc0]).await });
    wait_parked(&server, &b, 1).await;

    g(b.recipe_delete(TK, -1)).await.expect("delete");
    let msg = expect_recipe_err(g(parked).await.unwrap(), ErrorCode::RecipeCancelled);
    assert!(msg.contains("deleted"), "{msg:?}");
    assert!(g(b.exists("/wazoo/subscriptions/testkit", false))
        .await
        .unwrap()
        .is_none());
    assert!(g(b.exists("/wazoo/parked/testkit", false))
        .await
        .unwrap()
        .is_none());
    assert!(
        g(b.exists(&blob, false)).await.unwrap().is_none(),
        "blob collected"
    );

    // A new upload gets a new version number: numbers are never reused, so a client
    // pinned to an old version cannot silently run other code.
    let again = g(b.recipe_upload(TK, &testkit)).await.unwrap();
    assert_eq!(again.version, up.version + 1);
    assert_eq!(again.sha256, up.sha256);
    assert!(subs(&b).await.timers.is_empty());
    // The old subscription does not log anything.
    g(b.create("/watched", b"", open_acl_unsafe(), 0))
        .await
        .unwrap();
    // A subscription made now does (a write after it proves ordering).
    call(&b, "subscribe", map(&[("prefix", s("/later"))]))
        .await
        .unwrap();
    g(b.create("/later", b"", open_acl_unsafe(), 0))
        .await
        .unwrap();
    let (log, _) = g(b.get_data("/testkit/log", false)).await.unwrap();
    let log = String::from_utf8(log.unwrap()).unwrap();
    assert_eq!(log, "Created /later\n");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_timers_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;
    g(c.recipe_upload(TK, &wasm("testkit"))).await.unwrap();
    call(&c, "subscribe", map(&[("prefix", s("/sub"))]))
        .await
        .unwrap();
    #[derive(Serialize)]
    struct Timer<'a> {
        name: &'a str,
        at_ms: i64,
    }
    // Due shortly: fires before or after the restart, either way exactly once.
    call(
        &c,
        "set_timer",
        mp(&Timer {
            name: "soon",
            at_ms: now_ms() + 300,
        }),
    )
    .await
    .unwrap();
    drop(c);
    server.shutdown().await;

    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;
    let mut events = c.take_events().unwrap();
    g(c.create("/sub", b"", open_acl_unsafe(), 0))
        .await
        .unwrap();
    let (log, _) = g(c.get_data("/testkit/log", false))
        .await
        .expect("log written");
    assert_eq!(String::from_utf8(log.unwrap()).unwrap(), "Created /sub\n");
    wait_exists(&c, &mut events, "/testkit/timers/soon").await;
    assert!(subs(&c).await.timers.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_acts_as_its_caller() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut events = b.take_events().unwrap();
    g(a.add_auth("digest", b"alice:pw")).await.unwrap();
    g(a.recipe_upload(TK, &wasm("testkit"))).await.unwrap();

    #[derive(Debug, Deserialize)]
    struct Ident {
        scheme: String,
        id: String,
    }
    #[derive(Debug, Deserialize)]
    struct Whoami {
        session_id: i64,
        auth: Vec<Ident>,
    }
    let w: Whoami = de(&call(&a, "whoami", vec![0xc0]).await.unwrap());
    assert_eq!(w.session_id, a.session_id());
    assert!(
        w.auth
            .iter()
            .any(|i| i.scheme == "digest" && i.id == wazoo::acl::digest_id("alice:pw")),
        "{w:?}"
    );

    #[derive(Serialize)]
    struct Create<'a> {
        path: &'a str,
        ephemeral: bool,
    }
    let path: String = de(&call(
        &a,
        "create",
        mp(&Create {
            path: "/eph",
            ephemeral: true,
        }),
    )
    .await
    .unwrap());
    assert_eq!(path, "/eph");
    let stat = g(b.exists("/eph", true)).await.unwrap().expect("created");
    assert_eq!(stat.ephemeral_owner, a.session_id());
    g(a.close()).await.unwrap();
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_DELETED, "/eph")
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_and_calls_are_refused_with_their_codes() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server).await;
    let msg = expect_recipe_err(
        g(c.recipe_upload("x", b"not wasm")).await,
        ErrorCode::RecipeInvalid,
    );
    assert!(msg.contains("does not compile"), "{msg:?}");
    expect_recipe_err(
        g(c.recipe_upload("bad/name", &wasm("noop"))).await,
        ErrorCode::BadArguments,
    );
    // Under the wire's 1 MiB frame, over the module limit.
    let msg = expect_recipe_err(
        g(c.recipe_upload("big", &vec![0u8; (1 << 20) - 2000])).await,
        ErrorCode::RecipeInvalid,
    );
    assert!(msg.contains("limit"), "{msg:?}");
    assert!(g(c.recipe_list("")).await.unwrap().is_empty());
    expect_recipe_err(
        g(c.recipe_delete("nope", -1)).await,
        ErrorCode::RecipeNotFound,
    );
    expect_recipe_err(
        g(c.recipe_call("nope", -1, "f", vec![0xc0])).await,
        ErrorCode::RecipeNotFound,
    );
    g(c.recipe_upload(TK, &wasm("testkit"))).await.unwrap();
    expect_recipe_err(g(c.recipe_delete(TK, 7)).await, ErrorCode::RecipeNotFound);
    let msg = expect_recipe_err(call(&c, "put", vec![0xc1]).await, ErrorCode::RecipeFailed);
    assert!(msg.contains("decode"), "{msg:?}");
    assert!(!c.is_closed());
    server.shutdown().await;
}

/// `recipe.builtinDir`: the built-in recipes found there are installed at start, before
/// clients are served; an upload afterwards wins and survives a restart (the built-in
/// is only installed when the name is absent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_recipes_are_installed_at_start_and_uploads_win() {
    let present: Vec<&str> = wazoo::config::BUILTIN_RECIPES
        .iter()
        .copied()
        .filter(|n| recipes_dir().join(format!("{n}.wasm")).exists())
        .collect();
    assert!(
        present.contains(&"lock"),
        "lock.wasm missing from {}: run scripts/build-recipes.sh",
        recipes_dir().display()
    );
    let dir = TempDir::new().unwrap();
    let mut cfg = config(&dir);
    cfg.recipe_builtin_dir = Some(recipes_dir());
    let server = Server::start(cfg.clone()).await.unwrap();
    let c = connect(&server).await;
    let list = g(c.recipe_list("")).await.unwrap();
    let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
    let mut expected = present.clone();
    expected.sort();
    assert_eq!(names, expected, "every built-in found is installed once");
    assert!(list.iter().all(|i| i.version == 1));
    // An operator's upload of another module under the built-in's name wins.
    let mine = g(c.recipe_upload("lock", &wasm("noop"))).await.unwrap();
    assert_eq!(mine.version, 2);
    drop(c);
    server.shutdown().await;

    let server = Server::start(cfg).await.unwrap();
    let c = connect(&server).await;
    let lock: Vec<_> = g(c.recipe_list("lock")).await.unwrap();
    assert_eq!(lock.len(), 2, "no re-install over the upload: {lock:?}");
    assert_eq!(lock[1].sha256, mine.sha256);
    server.shutdown().await;
}

/// Frames (sent, received) by `c`'s session since `before`.
fn frames_since(c: &Client, before: &wazoo_client::FrameCounts) -> (u64, u64) {
    let now = c.frame_counts();
    (now.sent - before.sent, now.received - before.received)
}

/// With `wazoo-client`, a lock acquisition that waits is three frames: the acquire, its
/// one (deferred) reply when granted, and the quiet release of a dropped guard, which
/// the server answers only when it fails (docs/PROTOCOL.md, "Deferred and quiet
/// calls").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_acquire_is_answered_once_and_a_dropped_guard_releases_quietly() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(&dir);
    cfg.recipe_builtin_dir = Some(recipes_dir());
    let server = Server::start(cfg).await.unwrap();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut a_events = a.take_events().unwrap();

    let held = g(a.lock("l").acquire()).await.unwrap();
    // A watches the lock's queue, so it sees B's acquire park there.
    let queue = "/wazoo/recipes/lock/l/queue";
    let watched = match g(a.get_children(queue, true)).await {
        Ok(children) => children,
        Err(e) => panic!("the lock's queue znode: {e}"),
    };
    assert!(watched.is_empty(), "{watched:?}");

    let b_before = b.frame_counts();
    let b2 = b.clone();
    let waiting = tokio::spawn(async move { b2.lock("l").acquire().await });
    let ev = g(a_events.recv()).await.unwrap();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (event::NODE_CHILDREN_CHANGED, queue)
    );
    // Parked, and not answered yet: B sent one frame and got none.
    assert_eq!(frames_since(&b, &b_before), (1, 0));

    let a_before = a.frame_counts();
    let first_token = held.fencing_token();
    drop(held);
    let granted = g(waiting).await.unwrap().unwrap();
    assert!(granted.fencing_token() > first_token);
    assert_eq!(
        frames_since(&b, &b_before),
        (1, 1),
        "the acquire and its one reply"
    );
    // A's release was applied (B holds the lock) and nothing answered it; the reply
    // to a later request is the next frame A gets.
    assert_eq!(g(a.exists("/nothing", false)).await.unwrap(), None);
    assert_eq!(
        frames_since(&a, &a_before),
        (2, 1),
        "the quiet release, then exists and its reply"
    );

    // A quiet call that fails is answered: a release by a session that holds nothing.
    #[derive(Serialize)]
    struct Release<'a> {
        name: &'a str,
    }
    let q = a
        .recipe_call_quiet(
            "lock",
            -1,
            "release",
            rmp_serde::to_vec_named(&Release { name: "l" }).unwrap(),
        )
        .unwrap();
    match g(q.outcome()).await {
        Err(ClientError::Recipe { code, message }) => {
            assert_eq!(code, ErrorCode::RecipeFailed);
            assert!(message.contains("not the holder"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // And unknown flag bits are refused with BadArguments.
    let (_, r) = g(a.request(wazoo_proto::Request::RecipeCall {
        name: "lock".into(),
        version: -1,
        function: "holders".into(),
        args: rmp_serde::to_vec_named(&Release { name: "l" }).unwrap(),
        flags: 8,
    }))
    .await
    .unwrap();
    assert_eq!(r.unwrap_err(), ErrorCode::BadArguments);
    drop(granted);
    server.shutdown().await;
}
