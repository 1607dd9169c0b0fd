//! Every testkit function against the native harness (except `spin`, which would hang:
//! the harness has no fuel).

use serde::Serialize;
use serde_bytes::ByteBuf;
use wazoo_sdk::testing::{Harness, Outcome};
use wazoo_sdk::{CreateMode, Identity};

use super::*;

fn harness() -> (Harness, i64) {
    let mut h = Harness::new::<Testkit>().with_module("testkit", 3);
    let s = h.open_session();
    (h, s)
}

fn put_args(path: &str, data: &[u8]) -> PutArgs {
    PutArgs {
        path: path.into(),
        data: ByteBuf::from(data.to_vec()),
    }
}

fn nil(h: &mut Harness, s: i64, function: &str, args: &impl Serialize) {
    let r = h.call(s, function, args);
    assert_eq!(r.reply_bytes(), Some(&[0xc0][..]), "{function}: {r:?}");
}

fn log_lines(h: &Harness, path: &str) -> Vec<String> {
    String::from_utf8(h.get(path).unwrap_or_default())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn echo() {
    let (mut h, s) = harness();
    let v = (1, "two", vec![3.5]);
    assert_eq!(
        h.call(s, "echo", &v).reply::<(i32, String, Vec<f64>)>(),
        (1, "two".into(), vec![3.5])
    );
    assert_eq!(
        h.call_raw(s, "echo", vec![]).reply_bytes(),
        Some(&[0xc0][..])
    );
}

#[test]
fn put_get_create_delete() {
    let (mut h, s) = harness();
    let r: PutReply = h.call(s, "put", &put_args("/a/b/c", b"one")).reply();
    assert_eq!(
        r,
        PutReply {
            path: "/a/b/c".into(),
            version: 0
        }
    );
    let r: PutReply = h.call(s, "put", &put_args("/a/b/c", b"two")).reply();
    assert_eq!(r.version, 1);
    assert_eq!(h.get("/a/b/c").unwrap(), b"two");
    // `data` may be a str as well as a bin.
    #[derive(Serialize)]
    struct StrData<'a> {
        path: &'a str,
        data: &'a str,
    }
    h.call(
        s,
        "put",
        &StrData {
            path: "/s",
            data: "text",
        },
    )
    .reply::<PutReply>();
    assert_eq!(h.get("/s").unwrap(), b"text");
    let g: Option<GetReply> = h
        .call(
            s,
            "get",
            &PathArgs {
                path: "/a/b/c".into(),
                version: -1,
            },
        )
        .reply();
    assert_eq!(
        g,
        Some(GetReply {
            data: ByteBuf::from(b"two".to_vec()),
            version: 1
        })
    );
    let g: Option<GetReply> = h
        .call(
            s,
            "get",
            &PathArgs {
                path: "/nope".into(),
                version: -1,
            },
        )
        .reply();
    assert_eq!(g, None);

    let create = |path: &str, sequential, ephemeral| CreateArgs {
        path: path.into(),
        data: ByteBuf::from(b"x".to_vec()),
        sequential,
        ephemeral,
    };
    assert_eq!(
        h.call(s, "create", &create("/q-", true, false))
            .reply::<String>(),
        "/q-0000000002"
    );
    assert_eq!(
        h.call(s, "create", &create("/e", false, true))
            .reply::<String>(),
        "/e"
    );
    assert_eq!(h.stat("/e").unwrap().ephemeral_owner, s);
    let dup = h.call(s, "create", &create("/e", false, false));
    assert_eq!(dup.failure(), Some("host error NodeExists"));
    nil(
        &mut h,
        s,
        "delete",
        &PathArgs {
            path: "/a/b/c".into(),
            version: 1,
        },
    );
    assert!(h.stat("/a/b/c").is_none());
    let bad = h.call(
        s,
        "delete",
        &PathArgs {
            path: "/a".into(),
            version: -1,
        },
    );
    assert_eq!(bad.failure(), Some("host error NotEmpty"));
    h.close_session(s);
    assert!(h.stat("/e").is_none());
}

#[test]
fn put_then_fail_writes_nothing() {
    let (mut h, s) = harness();
    let r = h.call(s, "put_then_fail", &put_args("/x/y", b"data"));
    assert_eq!(
        r.outcome,
        Outcome::Failed("put_then_fail: failing on purpose".into())
    );
    assert!(h.stat("/x").is_none());
    assert_eq!(h.paths(), vec!["/"]);
}

#[test]
fn park_complete_list() {
    let (mut h, s) = harness();
    let other = h.open_session();
    let p1 = h.call(s, "park", &"first");
    let p2 = h.call(other, "park", &());
    assert!(p1.is_parked() && p2.is_parked());
    let listed: Vec<ParkedInfo> = h.call(s, "list_parked", &()).reply();
    assert_eq!(
        listed,
        vec![
            ParkedInfo {
                call_id: p1.call_id,
                session_id: s,
                function: "park".into()
            },
            ParkedInfo {
                call_id: p2.call_id,
                session_id: other,
                function: "park".into()
            },
        ]
    );
    let done = CompleteArgs {
        call_id: p1.call_id,
        value: Some(Value::from("done")),
        error: None,
    };
    nil(&mut h, s, "complete", &done);
    assert_eq!(
        h.completion_as::<String>(p1.call_id),
        Some(Ok("done".into()))
    );
    let again = h.call(s, "complete", &done);
    assert_eq!(
        again.failure(),
        Some(format!("no parked call {}", p1.call_id).as_str())
    );
    let failed = CompleteArgs {
        call_id: p2.call_id,
        value: None,
        error: Some("nope".into()),
    };
    nil(&mut h, s, "complete", &failed);
    assert_eq!(h.completion(p2.call_id), Some(Err("nope".into())));
}

#[test]
fn complete_all() {
    let (mut h, s) = harness();
    let a = h.call(s, "park", &"a");
    let b = h.call(s, "park", &());
    assert_eq!(h.call(s, "complete_all", &()).reply::<usize>(), 2);
    assert_eq!(h.completion_as::<String>(a.call_id), Some(Ok("a".into())));
    assert_eq!(h.completion_as::<()>(b.call_id), Some(Ok(())));
    let c = h.call(s, "park", &"c");
    let all = CompleteAllArgs {
        value: Some(Value::from(7)),
    };
    assert_eq!(h.call(s, "complete_all", &all).reply::<usize>(), 1);
    assert_eq!(h.completion_as::<i32>(c.call_id), Some(Ok(7)));
    assert_eq!(h.call(s, "complete_all", &()).reply::<usize>(), 0);
}

#[test]
fn notify() {
    let (mut h, s) = harness();
    let other = h.open_session();
    nil(
        &mut h,
        s,
        "notify",
        &NotifyArgs {
            session: other,
            msg: Value::from("hello"),
        },
    );
    assert_eq!(
        h.notifications_for::<String>(other),
        vec!["hello".to_string()]
    );
    h.close_session(other);
    let r = h.call(
        s,
        "notify",
        &NotifyArgs {
            session: other,
            msg: Value::Nil,
        },
    );
    assert_eq!(r.failure(), Some("host error SessionExpired"));
}

#[test]
fn subscribe_logs_and_notifies() {
    let (mut h, s) = harness();
    let sub = SubscribeArgs {
        prefix: "/app".into(),
        log: None,
        notify: Some(s),
    };
    nil(&mut h, s, "subscribe", &sub);
    // Everything: testkit's own znodes are ignored, so this does not loop.
    nil(
        &mut h,
        s,
        "subscribe",
        &SubscribeArgs {
            prefix: "/".into(),
            log: Some("/testkit/all".into()),
            notify: None,
        },
    );
    h.create("/app", b"", CreateMode::PERSISTENT).unwrap();
    h.set("/app", b"1", -1).unwrap();
    h.create("/other", b"", CreateMode::PERSISTENT).unwrap();
    assert_eq!(
        log_lines(&h, DEFAULT_LOG),
        vec!["Created /app", "DataChanged /app"]
    );
    assert_eq!(
        log_lines(&h, "/testkit/all"),
        vec![
            "Created /app",
            "ChildrenChanged /",
            "DataChanged /app",
            "Created /other",
            "ChildrenChanged /"
        ]
    );
    assert_eq!(
        h.notifications_for::<NodeNotification>(s),
        vec![
            NodeNotification {
                path: "/app".into(),
                change: "Created".into()
            },
            NodeNotification {
                path: "/app".into(),
                change: "DataChanged".into()
            },
        ]
    );
    // The recipe's own writes count too.
    h.call(s, "put", &put_args("/app/child", b""))
        .reply::<PutReply>();
    assert_eq!(log_lines(&h, DEFAULT_LOG).len(), 4);
    nil(
        &mut h,
        s,
        "unsubscribe",
        &PrefixArgs {
            prefix: "/app".into(),
        },
    );
    h.delete("/app/child", -1).unwrap();
    assert_eq!(log_lines(&h, DEFAULT_LOG).len(), 4);
    assert!(h.subscriptions().contains("/"));
    assert!(!h.subscriptions().contains("/app"));
}

#[test]
fn a_log_under_the_prefix_does_not_loop() {
    let (mut h, s) = harness();
    nil(
        &mut h,
        s,
        "subscribe",
        &SubscribeArgs {
            prefix: "/".into(),
            log: Some("/mylog".into()),
            notify: None,
        },
    );
    h.create("/x", b"", CreateMode::PERSISTENT).unwrap();
    // Creating /testkit (by `subscribe`) changed "/", so did creating /mylog (by that
    // event); then "/x". Changes of /mylog itself are not logged.
    assert_eq!(
        log_lines(&h, "/mylog"),
        vec![
            "ChildrenChanged /",
            "ChildrenChanged /",
            "Created /x",
            "ChildrenChanged /"
        ]
    );
    assert!(h.event_failures().is_empty());
}

#[test]
fn watch_session_records_cancelled_calls() {
    let (mut h, s) = harness();
    let watched = h.open_session();
    nil(
        &mut h,
        s,
        "watch_session",
        &SessionArgs {
            session: Some(watched),
        },
    );
    assert!(h
        .call(
            s,
            "session_alive",
            &SessionArgs {
                session: Some(watched)
            }
        )
        .reply::<bool>());
    let p = h.call(watched, "park", &());
    h.close_session(watched);
    assert_eq!(
        h.get_as::<Vec<i64>>(&format!("/testkit/closed/{watched}")),
        Some(vec![p.call_id])
    );
    assert!(!h
        .call(
            s,
            "session_alive",
            &SessionArgs {
                session: Some(watched)
            }
        )
        .reply::<bool>());
    // Watching a session that has ended fails; unwatching stops the event.
    let r = h.call(
        s,
        "watch_session",
        &SessionArgs {
            session: Some(watched),
        },
    );
    assert_eq!(r.failure(), Some("host error SessionExpired"));
    let third = h.open_session();
    nil(&mut h, third, "watch_session", &());
    nil(
        &mut h,
        s,
        "unwatch_session",
        &SessionArgs {
            session: Some(third),
        },
    );
    h.close_session(third);
    assert!(h.stat(&format!("/testkit/closed/{third}")).is_none());
}

#[test]
fn timers() {
    let (mut h, s) = harness();
    let t0 = h.now_ms();
    nil(
        &mut h,
        s,
        "set_timer",
        &TimerArgs {
            name: "t1".into(),
            at_ms: t0 + 1000,
        },
    );
    nil(
        &mut h,
        s,
        "set_timer",
        &TimerArgs {
            name: "t2".into(),
            at_ms: t0 + 2000,
        },
    );
    nil(
        &mut h,
        s,
        "cancel_timer",
        &TimerArgs {
            name: "t2".into(),
            at_ms: 0,
        },
    );
    assert!(h.fire_timers(t0 + 999).is_empty());
    assert_eq!(h.fire_timers(t0 + 1500), vec!["t1"]);
    assert_eq!(h.get_as::<i64>("/testkit/timers/t1"), Some(t0 + 1500));
    assert!(h.fire_timers(t0 + 5000).is_empty());
    assert!(h.stat("/testkit/timers/t2").is_none());
}

#[test]
fn whoami_now_random_log() {
    let (mut h, _) = harness();
    let s = h.open_session_with_auth(vec![Identity {
        scheme: "digest".into(),
        id: "alice:x".into(),
    }]);
    let w: Whoami = h.call(s, "whoami", &()).reply();
    assert_eq!(w.session_id, s);
    assert_eq!(
        w.auth,
        vec![Identity {
            scheme: "digest".into(),
            id: "alice:x".into()
        }]
    );
    h.set_now_ms(1_800_000_000_000);
    let r = h.call(s, "now", &());
    let n: Now = r.reply();
    assert_eq!(
        (n.call_id, n.zxid, n.now_ms),
        (r.call_id, r.call_id, 1_800_000_000_000)
    );
    assert_eq!((n.module.as_str(), n.version), ("testkit", 3));
    let a: [u64; 4] = h.call(s, "random", &()).reply();
    let b: [u64; 4] = h.call(s, "random", &()).reply();
    assert_ne!(a, b);
    nil(
        &mut h,
        s,
        "log",
        &LogArgs {
            msg: "hello log".into(),
        },
    );
    assert!(h.logs().contains(&"hello log".to_string()));
}

#[test]
fn failures() {
    let (mut h, s) = harness();
    let r = h.call(
        s,
        "fail",
        &FailArgs {
            message: "because".into(),
        },
    );
    assert_eq!(r.outcome, Outcome::Failed("because".into()));
    let r = h.call(s, "trap", &());
    assert!(matches!(r.outcome, Outcome::Trapped(_)), "{r:?}");
    let r = h.call(s, "no_reply", &());
    assert_eq!(
        r.failure(),
        Some("function no_reply returned without replying or parking")
    );
    let r = h.call(s, "frob", &());
    assert_eq!(r.failure(), Some("unknown function frob"));
}

#[test]
fn limits_helpers() {
    let (mut h, s) = harness();
    assert_eq!(
        h.call(s, "alloc", &AllocArgs { bytes: 1 << 20 })
            .reply::<u64>(),
        1 << 20
    );
    let r: ByteBuf = h.call(s, "big_reply", &BigReplyArgs { len: 1000 }).reply();
    assert_eq!(r.len(), 1000);
    nil(
        &mut h,
        s,
        "many_writes",
        &ManyWritesArgs {
            prefix: "/many/w".into(),
            count: 5,
        },
    );
    assert_eq!(h.children("/many/w").unwrap().len(), 5);
}
