use super::*;
use wazoo_sdk::testing::{CallResult, Harness};
use wazoo_sdk::Rng;

fn enter_args(n: &str, parties: u32) -> EnterArgs {
    EnterArgs {
        name: n.into(),
        parties,
    }
}

fn name(n: &str) -> NameArgs {
    NameArgs { name: n.into() }
}

fn test_seed(test: &str) -> u64 {
    wazoo_sdk::testing::test_seed(test, "WAZOO_TEST_SEED")
}

/// How many completions each call id got.
fn completions_of(h: &Harness, id: i64) -> usize {
    h.completions().iter().filter(|(c, _)| *c == id).count()
}

#[test]
fn n_party_barrier_releases_exactly_n_with_one_reply_each() {
    let mut h = Harness::new::<Barrier>();
    let s: Vec<i64> = (0..7).map(|_| h.open_session()).collect();
    let waits: Vec<CallResult> = s[..4]
        .iter()
        .map(|x| h.call(*x, "enter", &enter_args("b", 5)))
        .collect();
    assert!(waits.iter().all(|w| w.is_parked()));
    let dir = format!("{ROOT}/b/party");
    assert_eq!(h.get_as::<Group>(&dir).unwrap().parties, 5);
    assert_eq!(h.children(&dir).unwrap().len(), 4);
    assert_eq!(
        h.get_as::<PartyMember>(&format!("{dir}/{:016x}", s[0]))
            .unwrap(),
        PartyMember {
            call_id: waits[0].call_id
        }
    );
    assert!(h.completions().is_empty());
    // Other party count: refused, nothing changes.
    assert!(h
        .call(s[4], "enter", &enter_args("b", 3))
        .failure()
        .unwrap()
        .contains("waits for 5"));
    // The same session again (a retry): the new call replaces the old one, which fails;
    // it still counts once.
    let old = waits[0].clone();
    let mut waits = waits;
    waits[0] = h.call(s[0], "enter", &enter_args("b", 5));
    assert!(waits[0].is_parked());
    assert!(h
        .completion(old.call_id)
        .unwrap()
        .unwrap_err()
        .contains("superseded"));
    assert_eq!(h.children(&dir).unwrap().len(), 4);
    h.clear_outputs();
    // The fifth releases all five.
    let last = h.call(s[4], "enter", &enter_args("b", 5));
    let released: Released = last.reply();
    assert_eq!(
        released,
        Released {
            generation: last.call_id,
            parties: 5
        }
    );
    assert_eq!(h.completions().len(), 4);
    assert_eq!(completions_of(&h, old.call_id), 0);
    for w in &waits {
        assert_eq!(completions_of(&h, w.call_id), 1);
        assert_eq!(
            h.completion_as::<Released>(w.call_id).unwrap().unwrap(),
            released
        );
    }
    assert!(h.parked().is_empty());
    assert!(
        h.stat(&format!("{ROOT}/b")).is_none(),
        "reset: {:?}",
        h.paths()
    );
    // The next round starts from zero, and may have another size.
    h.clear_outputs();
    let a = h.call(s[5], "enter", &enter_args("b", 2));
    assert!(a.is_parked());
    let b: Released = h.call(s[6], "enter", &enter_args("b", 2)).reply();
    assert!(b.generation > released.generation);
    assert_eq!(h.completion_as::<Released>(a.call_id).unwrap().unwrap(), b);
    // One party: at once.
    assert_eq!(
        h.call(s[0], "enter", &enter_args("one", 1))
            .reply::<Released>()
            .parties,
        1
    );
    for bad in [0, MAX_PARTIES + 1] {
        assert!(h
            .call(s[0], "enter", &enter_args("b", bad))
            .failure()
            .unwrap()
            .contains("parties"));
    }
    assert!(h
        .call(s[0], "enter", &enter_args(".sessions", 2))
        .failure()
        .unwrap()
        .contains("bad barrier name"));
    assert!(h
        .call(s[0], "enter", &enter_args("a/b", 2))
        .failure()
        .unwrap()
        .contains("bad barrier name"));
}

#[test]
fn a_member_whose_session_ends_no_longer_counts() {
    let mut h = Harness::new::<Barrier>();
    let s: Vec<i64> = (0..4).map(|_| h.open_session()).collect();
    let w0 = h.call(s[0], "enter", &enter_args("b", 3));
    let w1 = h.call(s[1], "enter", &enter_args("b", 3));
    h.close_session(s[1]);
    assert_eq!(h.children(&format!("{ROOT}/b/party")).unwrap().len(), 1);
    // Two more are needed, not one.
    let w2 = h.call(s[2], "enter", &enter_args("b", 3));
    assert!(w2.is_parked());
    assert!(h.completions().is_empty());
    let r: Released = h.call(s[3], "enter", &enter_args("b", 3)).reply();
    assert_eq!(r.parties, 3);
    assert_eq!(completions_of(&h, w0.call_id), 1);
    assert_eq!(
        completions_of(&h, w1.call_id),
        0,
        "the closed session is not answered"
    );
    assert_eq!(completions_of(&h, w2.call_id), 1);
    // Everyone gone before release: nothing is left behind.
    let lone = h.open_session();
    h.call(lone, "enter", &enter_args("c", 2));
    h.close_session(lone);
    assert!(h.stat(&format!("{ROOT}/c")).is_none(), "{:?}", h.paths());
    assert!(h.event_failures().is_empty());
}

/// Random enters and session ends: each release answers exactly `parties` live members,
/// once each, and nobody else.
#[test]
fn random_n_party_rounds() {
    let seed = test_seed("barrier::random_n_party_rounds");
    let mut rng = Rng::new(seed);
    let mut h = Harness::new::<Barrier>();
    let parties = 4u32;
    let mut waiting: Vec<(i64, i64)> = Vec::new(); // (session, call id)
    let mut answered = std::collections::BTreeSet::new();
    let mut rounds = 0;
    for step in 0..500 {
        if !waiting.is_empty() && rng.below(4) == 0 {
            let (s, id) = waiting.remove(rng.below(waiting.len() as u64) as usize);
            h.close_session(s);
            assert_eq!(completions_of(&h, id), 0, "step {step}");
            continue;
        }
        let s = h.open_session();
        let r = h.call(s, "enter", &enter_args("r", parties));
        if waiting.len() as u32 + 1 == parties {
            let rel: Released = r.reply();
            assert_eq!(rel.parties, parties);
            for (_, id) in waiting.drain(..) {
                assert_eq!(completions_of(&h, id), 1, "step {step}");
                assert!(answered.insert(id));
            }
            rounds += 1;
        } else {
            assert!(r.is_parked(), "step {step}");
            waiting.push((s, r.call_id));
        }
        assert_eq!(
            h.completions().len(),
            answered.len(),
            "step {step}: only members answered"
        );
    }
    assert!(h.event_failures().is_empty());
    println!("rounds {rounds}");
}

#[test]
fn double_barrier_enter_waits_for_all_and_leave_waits_until_all_left() {
    let mut h = Harness::new::<Barrier>();
    let s: Vec<i64> = (0..4).map(|_| h.open_session()).collect();
    let first = h.call(s[0], "double_enter", &enter_args("d", 3));
    // A retried enter replaces the parked one.
    let e0 = h.call(s[0], "double_enter", &enter_args("d", 3));
    assert!(h
        .completion(first.call_id)
        .unwrap()
        .unwrap_err()
        .contains("superseded"));
    let e1 = h.call(s[1], "double_enter", &enter_args("d", 3));
    assert!(e0.is_parked() && e1.is_parked());
    let dir = format!("{ROOT}/d/double");
    assert_eq!(
        h.get_as::<Group>(&dir).unwrap().phase.as_deref(),
        Some(ENTERING)
    );
    assert!(h
        .call(s[0], "double_leave", &name("d"))
        .failure()
        .unwrap()
        .contains("not inside"));
    let e2 = h.call(s[2], "double_enter", &enter_args("d", 3));
    let rel: Released = e2.reply();
    assert_eq!(rel.parties, 3);
    assert_eq!(
        h.completion_as::<Released>(e0.call_id).unwrap().unwrap(),
        rel
    );
    assert_eq!(
        h.completion_as::<Released>(e1.call_id).unwrap().unwrap(),
        rel
    );
    assert_eq!(
        h.get_as::<Group>(&dir).unwrap().phase.as_deref(),
        Some(INSIDE)
    );
    // Latecomers wait for the next round.
    assert!(h
        .call(s[3], "double_enter", &enter_args("d", 3))
        .failure()
        .unwrap()
        .contains("in progress"));

    h.clear_outputs();
    let l0 = h.call(s[0], "double_leave", &name("d"));
    assert!(l0.is_parked());
    // A retried leave replaces the parked one.
    let old = l0;
    let l0 = h.call(s[0], "double_leave", &name("d"));
    assert!(l0.is_parked());
    assert!(h
        .completion(old.call_id)
        .unwrap()
        .unwrap_err()
        .contains("superseded"));
    // A retried enter while inside replies the release again.
    assert_eq!(
        h.call(s[1], "double_enter", &enter_args("d", 3))
            .reply::<Released>(),
        rel
    );
    h.clear_outputs();
    let l1 = h.call(s[1], "double_leave", &name("d"));
    assert!(l1.is_parked());
    assert!(h.completions().is_empty(), "s2 is still inside");
    assert_eq!(
        h.get_as::<DoubleMember>(&format!("{dir}/{:016x}", s[0]))
            .unwrap(),
        DoubleMember {
            state: LEAVING.into(),
            call_id: Some(l0.call_id)
        }
    );
    let l2 = h.call(s[2], "double_leave", &name("d"));
    let left: Released = l2.reply();
    assert_eq!(left.generation, l2.call_id);
    assert_eq!(
        h.completion_as::<Released>(l0.call_id).unwrap().unwrap(),
        left
    );
    assert_eq!(
        h.completion_as::<Released>(l1.call_id).unwrap().unwrap(),
        left
    );
    assert_eq!(h.completions().len(), 2);
    assert!(h.stat(&format!("{ROOT}/d")).is_none(), "{:?}", h.paths());
    // A new round.
    assert!(h
        .call(s[3], "double_enter", &enter_args("d", 1))
        .is_replied());
    assert!(h.call(s[3], "double_leave", &name("d")).is_replied());
}

#[test]
fn double_barrier_members_whose_session_ends_count_as_left() {
    let mut h = Harness::new::<Barrier>();
    let s: Vec<i64> = (0..4).map(|_| h.open_session()).collect();
    // Entering: a member that goes no longer counts.
    let e0 = h.call(s[0], "double_enter", &enter_args("d", 3));
    h.call(s[3], "double_enter", &enter_args("d", 3));
    h.close_session(s[3]);
    let e1 = h.call(s[1], "double_enter", &enter_args("d", 3));
    assert!(e1.is_parked());
    h.call(s[2], "double_enter", &enter_args("d", 3))
        .reply::<Released>();
    assert_eq!(completions_of(&h, e0.call_id), 1);
    assert_eq!(completions_of(&h, e1.call_id), 1);
    // Inside: two leave, the third's session ends, which releases the two.
    h.clear_outputs();
    let l0 = h.call(s[0], "double_leave", &name("d"));
    let l1 = h.call(s[1], "double_leave", &name("d"));
    assert!(h.completions().is_empty());
    h.close_session(s[2]);
    let rel: Released = h.completion_as(l0.call_id).unwrap().unwrap();
    assert_eq!(rel.parties, 2);
    assert_eq!(completions_of(&h, l1.call_id), 1);
    assert!(h.stat(&format!("{ROOT}/d")).is_none(), "{:?}", h.paths());
    assert!(h.event_failures().is_empty());

    // Everyone inside goes away without leaving: the round is over too.
    let a = h.open_session();
    let b = h.open_session();
    h.call(a, "double_enter", &enter_args("x", 2));
    h.call(b, "double_enter", &enter_args("x", 2))
        .reply::<Released>();
    assert!(h.stat(&format!("{SESSIONS}/{a:016x}/x")).is_some());
    h.close_session(a);
    h.close_session(b);
    assert!(h.stat(&format!("{ROOT}/x")).is_none(), "{:?}", h.paths());
    assert!(
        h.stat(&format!("{SESSIONS}/{a:016x}")).is_none(),
        "{:?}",
        h.paths()
    );
    for s in s {
        h.close_session(s);
    }
    assert!(h.stat(SESSIONS).is_none(), "{:?}", h.paths());
    assert_eq!(h.children(ROOT).unwrap(), Vec::<String>::new());
}

#[test]
fn set_remove_barrier() {
    let mut h = Harness::new::<Barrier>();
    let owner = h.open_session();
    let w: Vec<i64> = (0..3).map(|_| h.open_session()).collect();
    // Not set: wait returns at once.
    assert!(h.call(w[0], "wait", &name("g")).is_replied());
    h.call(owner, "set", &name("g")).reply::<()>();
    h.call(owner, "set", &name("g")).reply::<()>();
    let set: SetBy = h.get_as(&format!("{ROOT}/g/set")).unwrap();
    assert_eq!(set.session, owner);
    let waits: Vec<CallResult> = w.iter().map(|s| h.call(*s, "wait", &name("g"))).collect();
    assert!(waits.iter().all(|c| c.is_parked()));
    // Another barrier is independent.
    let other = h.call(w[0], "wait", &name("other"));
    assert!(other.is_replied());
    h.close_session(w[2]);
    assert_eq!(
        h.call(owner, "remove", &name("g")).reply::<RemoveReply>(),
        RemoveReply { released: 2 }
    );
    assert_eq!(completions_of(&h, waits[0].call_id), 1);
    assert_eq!(completions_of(&h, waits[1].call_id), 1);
    assert_eq!(completions_of(&h, waits[2].call_id), 0);
    assert!(h.parked().is_empty());
    assert!(h.stat(&format!("{ROOT}/g")).is_none());
    assert!(h.call(w[0], "wait", &name("g")).is_replied());
    assert_eq!(
        h.call(owner, "remove", &name("g")).reply::<RemoveReply>(),
        RemoveReply { released: 0 }
    );
}

#[test]
fn kinds_of_one_name_are_independent() {
    let mut h = Harness::new::<Barrier>();
    let a = h.open_session();
    let b = h.open_session();
    h.call(a, "set", &name("n")).reply::<()>();
    let p = h.call(a, "enter", &enter_args("n", 2));
    let d = h.call(b, "double_enter", &enter_args("n", 2));
    let w = h.call(b, "wait", &name("n"));
    assert!(p.is_parked() && d.is_parked() && w.is_parked());
    assert_eq!(
        h.children(&format!("{ROOT}/n")).unwrap(),
        vec!["double", "party", "set"]
    );
    h.call(b, "enter", &enter_args("n", 2)).reply::<Released>();
    assert_eq!(completions_of(&h, p.call_id), 1);
    assert_eq!(completions_of(&h, d.call_id), 0);
    assert_eq!(completions_of(&h, w.call_id), 0);
    assert!(h
        .call(a, "nope", &name("n"))
        .failure()
        .unwrap()
        .contains("unknown function"));
}
