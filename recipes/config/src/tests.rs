use super::*;
use wazoo_sdk::testing::Harness;
use wazoo_sdk::Rng;

fn publish(key: &str, value: &[u8], expected_version: Option<i64>) -> PublishArgs {
    PublishArgs {
        key: key.into(),
        value: ByteBuf::from(value.to_vec()),
        expected_version,
    }
}

fn sub(key: &str, prefix: bool) -> SubscribeArgs {
    SubscribeArgs {
        key: key.into(),
        prefix,
    }
}

fn key(k: &str) -> KeyArgs {
    KeyArgs { key: k.into() }
}

fn test_seed(test: &str) -> u64 {
    wazoo_sdk::testing::test_seed(test, "WAZOO_TEST_SEED")
}

#[test]
fn publish_and_get() {
    let mut h = Harness::new::<Config>();
    let s = h.open_session();
    assert_eq!(
        h.call(s, "get", &key("db.url")).reply::<Option<Entry>>(),
        None
    );
    assert_eq!(
        h.call(s, "publish", &publish("db.url", b"pg://a", None))
            .reply::<PublishReply>(),
        PublishReply { version: 1 }
    );
    assert_eq!(
        h.call(s, "publish", &publish("db.url", b"pg://b", None))
            .reply::<PublishReply>(),
        PublishReply { version: 2 }
    );
    assert_eq!(
        h.call(s, "get", &key("db.url")).reply::<Option<Entry>>(),
        Some(Entry {
            key: "db.url".into(),
            value: ByteBuf::from(b"pg://b".to_vec()),
            version: 2
        })
    );
    // The value is stored as is: zkCli shows it.
    assert_eq!(h.get(&format!("{KEYS}/db.url")).unwrap(), b"pg://b");
    assert_eq!(h.stat(&format!("{KEYS}/db.url")).unwrap().version, 1);
    // Values may be sent as str as well.
    #[derive(serde::Serialize)]
    struct StrPublish<'a> {
        key: &'a str,
        value: &'a str,
    }
    let r: PublishReply = h
        .call(
            s,
            "publish",
            &StrPublish {
                key: "name",
                value: "wazoo",
            },
        )
        .reply();
    assert_eq!(r.version, 1);
    assert_eq!(h.get(&format!("{KEYS}/name")).unwrap(), b"wazoo");
    for bad in ["", "a/b", ".", ".."] {
        assert!(h
            .call(s, "publish", &publish(bad, b"x", None))
            .failure()
            .unwrap()
            .contains("bad key"));
    }
    assert!(h
        .call(
            s,
            "publish",
            &publish(&"k".repeat(MAX_KEY_LEN + 1), b"x", None)
        )
        .failure()
        .is_some());
    assert!(h
        .call(s, "nope", &key("x"))
        .failure()
        .unwrap()
        .contains("unknown function"));
}

#[test]
fn conditional_publish() {
    let mut h = Harness::new::<Config>();
    let s = h.open_session();
    let sub_s = h.open_session();
    h.call(sub_s, "subscribe", &sub("k", false))
        .reply::<SubscribeReply>();
    // 0: only if the key does not exist yet.
    assert_eq!(
        h.call(s, "publish", &publish("k", b"a", Some(0)))
            .reply::<PublishReply>(),
        PublishReply { version: 1 }
    );
    let err = h.call(s, "publish", &publish("k", b"b", Some(0)));
    assert_eq!(
        err.failure().unwrap(),
        "version mismatch: key k is at version 1, not 0"
    );
    assert!(h
        .call(s, "publish", &publish("k", b"b", Some(2)))
        .failure()
        .unwrap()
        .contains("version mismatch"));
    assert_eq!(
        h.call(s, "publish", &publish("k", b"b", Some(1)))
            .reply::<PublishReply>(),
        PublishReply { version: 2 }
    );
    assert!(h
        .call(s, "publish", &publish("other", b"b", Some(3)))
        .failure()
        .unwrap()
        .contains("version mismatch"));
    assert_eq!(
        h.call(s, "get", &key("other")).reply::<Option<Entry>>(),
        None
    );
    // Failed publishes changed nothing and notified nobody.
    let seen: Vec<Change> = h.notifications_for(sub_s);
    assert_eq!(
        seen.iter()
            .map(|c| (c.version, &c.value[..]))
            .collect::<Vec<_>>(),
        vec![(1, &b"a"[..]), (2, &b"b"[..])]
    );
}

#[test]
fn subscribers_see_every_version_in_order() {
    let seed = test_seed("config::subscribers_see_every_version_in_order");
    let mut rng = Rng::new(seed);
    let mut h = Harness::new::<Config>();
    let publisher = h.open_session();
    let keys = ["app.a", "app.b", "db.url", "db.pool"];
    let exact = h.open_session();
    let app = h.open_session();
    let all = h.open_session();
    let both = h.open_session();
    h.call(exact, "subscribe", &sub("db.url", false))
        .reply::<SubscribeReply>();
    h.call(app, "subscribe", &sub("app.", true))
        .reply::<SubscribeReply>();
    h.call(all, "subscribe", &sub("", true))
        .reply::<SubscribeReply>();
    // Subscribed to a key and to a prefix of it: told once per publish.
    h.call(both, "subscribe", &sub("db.url", false))
        .reply::<SubscribeReply>();
    h.call(both, "subscribe", &sub("db", true))
        .reply::<SubscribeReply>();
    let mut published: Vec<(String, Vec<u8>, i64)> = Vec::new();
    let mut versions = std::collections::BTreeMap::<&str, i64>::new();
    for i in 0..300 {
        let k = keys[rng.below(keys.len() as u64) as usize];
        let value = format!("{k}={i}").into_bytes();
        let v: PublishReply = h
            .call(publisher, "publish", &publish(k, &value, None))
            .reply();
        let expected = versions.entry(k).or_insert(0);
        *expected += 1;
        assert_eq!(v.version, *expected);
        published.push((k.to_string(), value, v.version));
    }
    let check = |h: &Harness, s: i64, matches: &dyn Fn(&str) -> bool| {
        let seen: Vec<(String, Vec<u8>, i64)> = h
            .notifications_for::<Change>(s)
            .into_iter()
            .map(|c| {
                assert_eq!(c.event, "config");
                (c.key, c.value.into_vec(), c.version)
            })
            .collect();
        let expected: Vec<_> = published
            .iter()
            .filter(|(k, _, _)| matches(k))
            .cloned()
            .collect();
        assert_eq!(seen, expected, "session {s:#x}");
    };
    check(&h, exact, &|k| k == "db.url");
    check(&h, app, &|k| k.starts_with("app."));
    check(&h, all, &|_| true);
    check(&h, both, &|k| k.starts_with("db"));
    assert!(h.notifications_for::<Change>(publisher).is_empty());
    println!("versions {versions:?}");
}

#[test]
fn subscribe_replies_current_values() {
    let mut h = Harness::new::<Config>();
    let s = h.open_session();
    for (k, v) in [("a.x", "1"), ("a.y", "2"), ("b", "3")] {
        h.call(s, "publish", &publish(k, v.as_bytes(), None))
            .reply::<PublishReply>();
    }
    h.call(s, "publish", &publish("a.y", b"22", None))
        .reply::<PublishReply>();
    let sub_s = h.open_session();
    let r: SubscribeReply = h.call(sub_s, "subscribe", &sub("a.", true)).reply();
    assert_eq!(
        r.entries
            .iter()
            .map(|e| (e.key.as_str(), &e.value[..], e.version))
            .collect::<Vec<_>>(),
        vec![("a.x", &b"1"[..], 1), ("a.y", &b"22"[..], 2)]
    );
    let r: SubscribeReply = h.call(sub_s, "subscribe", &sub("b", false)).reply();
    assert_eq!(r.entries.len(), 1);
    let r: SubscribeReply = h.call(sub_s, "subscribe", &sub("missing", false)).reply();
    assert!(r.entries.is_empty());
    // Subscribing again is harmless (and still one notification per publish).
    h.call(sub_s, "subscribe", &sub("b", false))
        .reply::<SubscribeReply>();
    h.call(s, "publish", &publish("b", b"4", None))
        .reply::<PublishReply>();
    assert_eq!(h.notifications_for::<Change>(sub_s).len(), 1);
    // A key appearing later under a subscribed prefix is pushed too.
    h.call(s, "publish", &publish("a.z", b"new", None))
        .reply::<PublishReply>();
    let last = h.notifications_for::<Change>(sub_s).pop().unwrap();
    assert_eq!((last.key.as_str(), last.version), ("a.z", 1));
}

#[test]
fn unsubscribe_and_session_end_drop_subscriptions() {
    let mut h = Harness::new::<Config>();
    let p = h.open_session();
    let s = h.open_session();
    h.call(s, "subscribe", &sub("k", false))
        .reply::<SubscribeReply>();
    h.call(s, "subscribe", &sub("", true))
        .reply::<SubscribeReply>();
    // The layout.
    let me = format!("{s:016x}");
    assert_eq!(
        h.stat(&format!("{KEY_SUBS}/k/{me}"))
            .unwrap()
            .ephemeral_owner,
        s
    );
    assert_eq!(
        h.stat(&format!("{PREFIX_SUBS}/=/{me}"))
            .unwrap()
            .ephemeral_owner,
        s
    );
    assert_eq!(
        h.children(&format!("{SESSIONS}/{me}")).unwrap(),
        vec!["key=k", "prefix="]
    );
    assert!(h.call(s, "unsubscribe", &sub("k", false)).reply::<bool>());
    assert!(!h.call(s, "unsubscribe", &sub("k", false)).reply::<bool>());
    assert!(h.stat(&format!("{KEY_SUBS}/k")).is_none());
    h.call(p, "publish", &publish("k", b"1", None))
        .reply::<PublishReply>();
    assert_eq!(
        h.notifications_for::<Change>(s).len(),
        1,
        "through the prefix only"
    );
    h.close_session(s);
    h.clear_outputs();
    h.call(p, "publish", &publish("k", b"2", None))
        .reply::<PublishReply>();
    assert!(h.notifications().is_empty());
    assert!(h.children(KEY_SUBS).is_none_or(|c| c.is_empty()));
    assert!(
        h.children(PREFIX_SUBS).unwrap().is_empty(),
        "{:?}",
        h.paths()
    );
    assert!(h.children(SESSIONS).unwrap().is_empty(), "{:?}", h.paths());
    assert!(h.event_failures().is_empty());
}

#[test]
fn sessions_with_the_high_bit_set() {
    // A server id of 128 or more makes session ids negative.
    let mut h = Harness::new::<Config>();
    let s: i64 = (0x80u64 << 56 | 0x1234) as i64;
    assert!(s < 0);
    h.call(s, "subscribe", &sub("k", false))
        .reply::<SubscribeReply>();
    let p = h.open_session();
    h.call(p, "publish", &publish("k", b"1", None))
        .reply::<PublishReply>();
    assert_eq!(h.notifications_for::<Change>(s).len(), 1);
    h.close_session(s);
    assert!(h.children(SESSIONS).unwrap().is_empty());
}
