//! The SDK's safe API against the native harness.

use serde::{Deserialize, Serialize};
use wazoo_sdk::abi::{self, NodeChange, OpResult};
use wazoo_sdk::testing::{Harness, Outcome};
use wazoo_sdk::{Call, CreateMode, Error, ErrorCode, Event, Recipe, Result, Rng, WriteOp};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct PathArgs {
    path: String,
    #[serde(default)]
    data: Vec<u8>,
    #[serde(default)]
    version: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Ctx {
    now_ms: i64,
    zxid: i64,
    seed: u64,
    module: String,
    version: i32,
    call_id: i64,
}

struct T;

fn code(e: Error) -> String {
    format!("{:?}", e.code())
}

impl Recipe for T {
    fn call(call: &Call) -> Result<()> {
        match call.function() {
            "echo" => wazoo_sdk::reply_raw(call.raw_args().to_vec()),
            "unit" => {
                let () = call.args()?;
                call.reply(&"unit ok")
            }
            "ctx" => call.reply(&Ctx {
                now_ms: wazoo_sdk::now_ms(),
                zxid: wazoo_sdk::zxid(),
                seed: wazoo_sdk::seed(),
                module: wazoo_sdk::module_name(),
                version: wazoo_sdk::module_version(),
                call_id: call.id(),
            }),
            "rand" => {
                let mut rng = Rng::from_context();
                call.reply(&(0..4).map(|_| rng.below(1000)).collect::<Vec<_>>())
            }
            "create" => {
                let a: PathArgs = call.args()?;
                match wazoo_sdk::create(&a.path, &a.data, CreateMode::PERSISTENT) {
                    Ok(p) => call.reply(&p),
                    Err(e) => call.reply(&code(e)),
                }
            }
            "create_seq" => {
                let a: PathArgs = call.args()?;
                call.reply(&wazoo_sdk::create(
                    &a.path,
                    &a.data,
                    CreateMode::PERSISTENT_SEQUENTIAL,
                )?)
            }
            "create_eph" => {
                let a: PathArgs = call.args()?;
                let p =
                    wazoo_sdk::create(&a.path, &a.data, CreateMode::ephemeral(call.session_id()))?;
                call.reply(&p)
            }
            "create_all" => {
                let a: PathArgs = call.args()?;
                wazoo_sdk::create_all(&a.path)?;
                wazoo_sdk::create_all(&a.path)?;
                call.reply(&())
            }
            "get" => {
                let a: PathArgs = call.args()?;
                call.reply(&wazoo_sdk::get(&a.path)?.map(|n| (n.data, n.stat.version)))
            }
            "set" => {
                let a: PathArgs = call.args()?;
                match wazoo_sdk::set(&a.path, &a.data, a.version.unwrap_or(-1)) {
                    Ok(stat) => call.reply(&stat.version.to_string()),
                    Err(e) => call.reply(&code(e)),
                }
            }
            "delete" => {
                let a: PathArgs = call.args()?;
                match wazoo_sdk::delete(&a.path, a.version.unwrap_or(-1)) {
                    Ok(()) => call.reply(&"deleted"),
                    Err(e) => call.reply(&code(e)),
                }
            }
            "children" => {
                let a: PathArgs = call.args()?;
                match wazoo_sdk::children(&a.path) {
                    Ok(c) => call.reply(&c),
                    Err(e) => call.reply(&vec![code(e)]),
                }
            }
            "exists" => {
                let a: PathArgs = call.args()?;
                call.reply(&wazoo_sdk::exists(&a.path)?.is_some())
            }
            "multi_ok" => {
                let r = wazoo_sdk::multi(vec![
                    WriteOp::Create {
                        path: "/m".into(),
                        data: vec![],
                        mode: CreateMode::PERSISTENT,
                    },
                    WriteOp::Set {
                        path: "/m".into(),
                        data: b"x".to_vec(),
                        version: 0,
                    },
                    WriteOp::Check {
                        path: "/m".into(),
                        version: 1,
                    },
                ])?;
                assert_eq!(r.len(), 3);
                assert!(matches!(r[0], OpResult::Created { .. }));
                call.reply(&())
            }
            "multi_bad" => {
                let r = wazoo_sdk::multi(vec![
                    WriteOp::Create {
                        path: "/m2".into(),
                        data: vec![],
                        mode: CreateMode::PERSISTENT,
                    },
                    WriteOp::Delete {
                        path: "/nope".into(),
                        version: -1,
                    },
                    WriteOp::Create {
                        path: "/m3".into(),
                        data: vec![],
                        mode: CreateMode::PERSISTENT,
                    },
                ]);
                let exists = wazoo_sdk::exists("/m2")?.is_some();
                call.reply(&(format!("{r:?}"), exists))
            }
            "write_then_err" => {
                wazoo_sdk::create("/doomed", b"", CreateMode::PERSISTENT)?;
                Err(Error::msg("on purpose"))
            }
            "write_then_fail" => {
                wazoo_sdk::create("/doomed", b"", CreateMode::PERSISTENT)?;
                wazoo_sdk::fail("explicit")?;
                Ok(())
            }
            "write_then_panic" => {
                wazoo_sdk::create("/doomed", b"", CreateMode::PERSISTENT)?;
                panic!("boom");
            }
            "no_reply" => Ok(()),
            "reply_twice" => {
                call.reply(&1)?;
                let second = call.reply(&2);
                assert_eq!(second, Err(Error::Host(ErrorCode::NotAllowed)));
                let park = call.park();
                assert_eq!(park, Err(Error::Host(ErrorCode::NotAllowed)));
                Ok(())
            }
            "park" => {
                wazoo_sdk::watch_session(call.session_id())?;
                call.park()
            }
            "complete_oldest" => {
                let parked = wazoo_sdk::list_parked()?;
                match parked.first() {
                    Some(p) => {
                        let args: Option<String> = p.decode_args()?;
                        wazoo_sdk::complete(p.call_id, Ok(&args))?;
                        call.reply(&p.call_id)
                    }
                    None => call.reply(&-1),
                }
            }
            "complete_missing" => {
                match wazoo_sdk::complete(12345, Err::<&(), _>("x".to_string())) {
                    Err(e) if e.is_no_node() => call.reply(&"NoNode"),
                    other => Err(Error::msg(format!("{other:?}"))),
                }
            }
            "notify" => {
                let (session, msg): (i64, String) = call.args()?;
                match wazoo_sdk::notify(session, &msg) {
                    Ok(()) => call.reply(&"sent"),
                    Err(e) => call.reply(&code(e)),
                }
            }
            "subscribe" => {
                let prefix: String = call.args()?;
                wazoo_sdk::subscribe(&prefix)?;
                call.reply(&())
            }
            "timer" => {
                let (name, at): (String, i64) = call.args()?;
                wazoo_sdk::set_timer(&name, at)?;
                call.reply(&())
            }
            "cancel_timer" => {
                let name: String = call.args()?;
                wazoo_sdk::cancel_timer(&name)?;
                call.reply(&())
            }
            "whoami" => call.reply(&(
                call.session_id(),
                call.auth().to_vec(),
                call.has_identity("digest", "bob"),
            )),
            "alive" => {
                let s: i64 = call.args()?;
                call.reply(&wazoo_sdk::session_alive(s)?)
            }
            other => Err(Error::UnknownFunction(other.to_string())),
        }
    }

    fn event(event: &Event) -> Result<()> {
        assert!(!wazoo_sdk::in_call());
        // Reply in an event is not allowed.
        assert_eq!(
            wazoo_sdk::reply(&()),
            Err(Error::Host(ErrorCode::NotAllowed))
        );
        let line = match event {
            Event::Node { path, .. } if path.starts_with("/loop") => {
                // Every change causes another: only the cascade bounds stop it.
                wazoo_sdk::create("/loop/n-", b"", CreateMode::PERSISTENT_SEQUENTIAL)?;
                return Ok(());
            }
            Event::Node { path, change } => format!("{change:?} {path} {}", wazoo_sdk::zxid()),
            Event::SessionClosed {
                session_id,
                cancelled,
            } => {
                format!(
                    "closed {session_id} {:?}",
                    cancelled.iter().map(|c| c.call_id).collect::<Vec<_>>()
                )
            }
            Event::Timer { name } => {
                if name == "bad" {
                    wazoo_sdk::create("/events/should-vanish", b"", CreateMode::PERSISTENT)?;
                    return Err(Error::msg("bad timer"));
                }
                format!("timer {name} at {}", wazoo_sdk::now_ms())
            }
        };
        wazoo_sdk::create_all("/events")?;
        let n = wazoo_sdk::get("/events")?.unwrap();
        let mut data = n.data;
        data.extend_from_slice(line.as_bytes());
        data.push(b'\n');
        wazoo_sdk::set("/events", &data, n.stat.version)?;
        Ok(())
    }
}

fn path(p: &str) -> PathArgs {
    PathArgs {
        path: p.into(),
        data: vec![],
        version: None,
    }
}

fn events(h: &Harness) -> Vec<String> {
    String::from_utf8(h.get("/events").unwrap_or_default())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn marker_export_name_matches_abi() {
    assert_eq!(
        abi::ABI_MARKER_EXPORT,
        format!("wazoo_abi_version_{}", abi::ABI_VERSION)
    );
}

#[test]
fn echo_unit_and_unknown_function() {
    let mut h = Harness::new::<T>();
    let s = h.open_session();
    assert_eq!(
        h.call(s, "echo", &("a", 1)).reply::<(String, i32)>(),
        ("a".to_string(), 1)
    );
    assert_eq!(
        h.call_raw(s, "unit", Vec::new()).reply::<String>(),
        "unit ok"
    );
    let r = h.call(s, "frobnicate", &());
    assert_eq!(
        r.outcome,
        Outcome::Failed("unknown function frobnicate".into())
    );
    let bad = h.call(s, "create", &42);
    assert!(
        bad.failure()
            .unwrap()
            .starts_with("decode error: arguments of create"),
        "{bad:?}"
    );
}

#[test]
fn context_and_rng() {
    let mut h = Harness::new::<T>().with_module("demo", 7);
    let s = h.open_session();
    h.set_now_ms(5_000_000_000_000);
    let r = h.call(s, "ctx", &());
    let c: Ctx = r.reply();
    assert_eq!(
        (c.module.as_str(), c.version, c.now_ms),
        ("demo", 7, 5_000_000_000_000)
    );
    assert_eq!(c.zxid, r.call_id);
    assert_eq!(c.call_id, r.call_id);
    let c2: Ctx = h.call(s, "ctx", &()).reply();
    assert!(c2.zxid > c.zxid);
    assert_ne!(c2.seed, c.seed);
    // Same zxid, same seed: two harnesses draw the same numbers.
    let mut h2 = Harness::new::<T>();
    let s2 = h2.open_session();
    let mut h3 = Harness::new::<T>();
    let s3 = h3.open_session();
    let a: Vec<u64> = h2.call(s2, "rand", &()).reply();
    let b: Vec<u64> = h3.call(s3, "rand", &()).reply();
    assert_eq!(a, b);
    assert!(a.iter().all(|x| *x < 1000));
    let mut rng = Rng::new(1);
    let mut v: Vec<u32> = (0..20).collect();
    rng.shuffle(&mut v);
    let mut sorted = v.clone();
    sorted.sort();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    assert!((0..100)
        .map(|_| rng.next_f64())
        .all(|f| (0.0..1.0).contains(&f)));
}

#[test]
fn znode_operations() {
    let mut h = Harness::new::<T>();
    let s = h.open_session();
    assert_eq!(h.call(s, "create", &path("/a")).reply::<String>(), "/a");
    assert_eq!(
        h.call(s, "create", &path("/a")).reply::<String>(),
        "Some(NodeExists)"
    );
    assert_eq!(
        h.call(s, "create", &path("/x/y")).reply::<String>(),
        "Some(NoNode)"
    );
    assert_eq!(
        h.call(s, "create", &path("bad")).reply::<String>(),
        "Some(BadArguments)"
    );
    assert_eq!(
        h.call(s, "create_seq", &path("/a/q-")).reply::<String>(),
        "/a/q-0000000000"
    );
    assert_eq!(
        h.call(s, "create_seq", &path("/a/q-")).reply::<String>(),
        "/a/q-0000000001"
    );
    assert_eq!(h.call(s, "create", &path("/a/b")).reply::<String>(), "/a/b");
    assert_eq!(
        h.call(s, "children", &path("/a")).reply::<Vec<String>>(),
        vec!["b", "q-0000000000", "q-0000000001"]
    );
    assert_eq!(
        h.call(s, "children", &path("/zz")).reply::<Vec<String>>(),
        vec!["Some(NoNode)"]
    );
    let set = PathArgs {
        path: "/a/b".into(),
        data: b"hi".to_vec(),
        version: Some(0),
    };
    assert_eq!(h.call(s, "set", &set).reply::<String>(), "1");
    assert_eq!(h.call(s, "set", &set).reply::<String>(), "Some(BadVersion)");
    assert_eq!(
        h.call(s, "get", &path("/a/b"))
            .reply::<Option<(Vec<u8>, i32)>>(),
        Some((b"hi".to_vec(), 1))
    );
    assert_eq!(
        h.call(s, "get", &path("/nope"))
            .reply::<Option<(Vec<u8>, i32)>>(),
        None
    );
    assert_eq!(
        h.call(s, "delete", &path("/a")).reply::<String>(),
        "Some(NotEmpty)"
    );
    assert_eq!(
        h.call(s, "delete", &path("/a/b")).reply::<String>(),
        "deleted"
    );
    assert!(!h.call(s, "exists", &path("/a/b")).reply::<bool>());
    h.call(s, "create_all", &path("/p/q/r")).reply::<()>();
    assert!(h.stat("/p/q/r").is_some());
    assert_eq!(h.stat("/a").unwrap().num_children, 2);
    // Ephemerals: owned by the caller, gone with its session, no children.
    assert_eq!(h.call(s, "create_eph", &path("/e")).reply::<String>(), "/e");
    assert_eq!(h.stat("/e").unwrap().ephemeral_owner, s);
    assert_eq!(
        h.call(s, "create", &path("/e/child")).reply::<String>(),
        "Some(NoChildrenForEphemerals)"
    );
    h.close_session(s);
    assert!(h.stat("/e").is_none());
    assert!(h.stat("/a").is_some());
}

#[test]
fn multi_is_all_or_nothing() {
    let mut h = Harness::new::<T>();
    let s = h.open_session();
    h.call(s, "multi_ok", &()).reply::<()>();
    assert_eq!(h.get("/m").unwrap(), b"x");
    let (err, exists): (String, bool) = h.call(s, "multi_bad", &()).reply();
    assert_eq!(err, "Err(Multi { index: 1, code: NoNode })");
    assert!(!exists);
    assert!(h.stat("/m2").is_none());
}

#[test]
fn failed_calls_discard_their_writes() {
    let mut h = Harness::new::<T>();
    let s = h.open_session();
    let r = h.call(s, "write_then_err", &());
    assert_eq!(r.outcome, Outcome::Failed("on purpose".into()));
    assert!(h.stat("/doomed").is_none());
    let r = h.call(s, "write_then_fail", &());
    assert_eq!(r.outcome, Outcome::Failed("explicit".into()));
    assert!(h.stat("/doomed").is_none());
    let r = h.call(s, "write_then_panic", &());
    assert!(
        matches!(&r.outcome, Outcome::Trapped(m) if m.contains("boom")),
        "{r:?}"
    );
    assert!(h.stat("/doomed").is_none());
    let r = h.call(s, "no_reply", &());
    assert_eq!(
        r.outcome,
        Outcome::Failed("function no_reply returned without replying or parking".into())
    );
    // The harness still works after a panic.
    assert_eq!(h.call(s, "reply_twice", &()).reply::<i32>(), 1);
}

#[test]
fn park_complete_and_cancel() {
    let mut h = Harness::new::<T>();
    let a = h.open_session();
    let b = h.open_session();
    let p1 = h.call(a, "park", &"one");
    let p2 = h.call(b, "park", &"two");
    let p3 = h.call(b, "park", &"three");
    assert!(p1.is_parked() && p2.is_parked() && p3.is_parked());
    assert_eq!(
        h.parked().iter().map(|p| p.call_id).collect::<Vec<_>>(),
        vec![p1.call_id, p2.call_id, p3.call_id]
    );
    assert_eq!(h.call(a, "complete_oldest", &()).reply::<i64>(), p1.call_id);
    assert_eq!(
        h.completion_as::<Option<String>>(p1.call_id),
        Some(Ok(Some("one".into())))
    );
    assert_eq!(
        h.call(a, "complete_missing", &()).reply::<String>(),
        "NoNode"
    );
    // Closing b cancels its two parked calls and tells the recipe.
    h.close_session(b);
    assert!(h.parked().is_empty());
    assert_eq!(
        events(&h),
        vec![format!("closed {b} {:?}", vec![p2.call_id, p3.call_id])]
    );
    assert_eq!(h.call(a, "complete_oldest", &()).reply::<i64>(), -1);
    assert!(!h.call(a, "alive", &b).reply::<bool>());
    assert!(h.call(a, "alive", &a).reply::<bool>());
}

#[test]
fn notifications_and_auth() {
    let mut h = Harness::new::<T>();
    let a = h.open_session();
    let b = h.open_session_with_auth(vec![wazoo_sdk::Identity {
        scheme: "digest".into(),
        id: "bob".into(),
    }]);
    assert_eq!(h.call(a, "notify", &(b, "hi")).reply::<String>(), "sent");
    assert_eq!(h.notifications_for::<String>(b), vec!["hi".to_string()]);
    let (sid, auth, bob): (i64, Vec<wazoo_sdk::Identity>, bool) = h.call(b, "whoami", &()).reply();
    assert_eq!((sid, auth.len(), bob), (b, 1, true));
    h.close_session(b);
    assert_eq!(
        h.call(a, "notify", &(b, "late")).reply::<String>(),
        "Some(SessionExpired)"
    );
}

#[test]
fn subscriptions_deliver_node_events() {
    let mut h = Harness::new::<T>();
    let s = h.open_session();
    h.call(s, "subscribe", &"/watched").reply::<()>();
    h.create("/watched", b"", CreateMode::PERSISTENT).unwrap();
    h.create("/watched/x", b"", CreateMode::PERSISTENT).unwrap();
    h.create("/watchedness", b"", CreateMode::PERSISTENT)
        .unwrap();
    h.set("/watched/x", b"1", -1).unwrap();
    h.delete("/watched/x", -1).unwrap();
    let z = h.last_zxid();
    // Each event runs with the zxid of the operation that caused it.
    assert_eq!(
        events(&h),
        vec![
            format!("Created /watched {}", z - 4),
            format!("Created /watched/x {}", z - 3),
            format!("ChildrenChanged /watched {}", z - 3),
            format!("DataChanged /watched/x {}", z - 1),
            format!("Deleted /watched/x {z}"),
            format!("ChildrenChanged /watched {z}"),
        ]
    );
    assert!(h.dropped_events().is_empty());
    let _ = NodeChange::Created;
}

#[test]
fn timers_fire_in_order_and_failed_events_roll_back() {
    let mut h = Harness::new::<T>();
    let s = h.open_session();
    let t0 = h.now_ms();
    h.call(s, "timer", &("late", t0 + 200)).reply::<()>();
    h.call(s, "timer", &("early", t0 + 100)).reply::<()>();
    h.call(s, "timer", &("gone", t0 + 50)).reply::<()>();
    h.call(s, "cancel_timer", &"gone").reply::<()>();
    h.call(s, "timer", &("bad", t0 + 1000)).reply::<()>();
    assert!(h.fire_timers(t0 + 99).is_empty());
    assert_eq!(h.fire_timers(t0 + 500), vec!["early", "late"]);
    assert_eq!(
        events(&h),
        vec![
            format!("timer early at {}", t0 + 500),
            format!("timer late at {}", t0 + 500)
        ]
    );
    assert_eq!(h.fire_timers(t0 + 1000), vec!["bad"]);
    assert!(h.stat("/events/should-vanish").is_none());
    assert_eq!(h.event_failures().len(), 1);
    assert!(h.timers().is_empty());
}

#[test]
fn event_cascades_are_bounded_like_the_server() {
    let mut h = Harness::new::<T>();
    let s = h.open_session();
    h.call(s, "subscribe", &"/loop").reply::<()>();
    h.create("/loop", b"", CreateMode::PERSISTENT).unwrap();
    // Generation 0: "Created /loop" (the handler creates n-0, whose Created and the
    // parent's ChildrenChanged are generation 1, ...): 1 + 2 + 4 + 8 handlers, then the
    // 16 events of generation 4 are dropped.
    assert_eq!(h.children("/loop").unwrap().len(), 15);
    assert_eq!(h.dropped_events().len(), 16);
    assert!(h.event_failures().is_empty());
}
