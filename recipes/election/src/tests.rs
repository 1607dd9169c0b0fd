use std::collections::BTreeMap;

use super::*;
use wazoo_sdk::testing::Harness;
use wazoo_sdk::Rng;

fn name(n: &str) -> NameArgs {
    NameArgs { name: n.into() }
}

fn join(n: &str, data: &[u8]) -> JoinArgs {
    JoinArgs {
        name: n.into(),
        data: Some(ByteBuf::from(data.to_vec())),
    }
}

fn leader_of(h: &mut Harness, s: i64, n: &str) -> Option<Leader> {
    h.call(s, "leader", &name(n)).reply()
}

fn test_seed(test: &str) -> u64 {
    wazoo_sdk::testing::test_seed(test, "WAZOO_TEST_SEED")
}

#[test]
fn first_candidate_leads_the_others_queue() {
    let mut h = Harness::new::<Election>();
    let s: Vec<i64> = (0..3).map(|_| h.open_session()).collect();
    assert_eq!(leader_of(&mut h, s[0], "e"), None);
    let r = h.call(s[0], "join", &join("e", b"node-0"));
    assert_eq!(
        r.reply::<JoinReply>(),
        JoinReply {
            leader: true,
            epoch: Some(r.call_id),
            position: None
        }
    );
    for (i, sess) in s.iter().enumerate().skip(1) {
        let reply: JoinReply = h.call(*sess, "join", &join("e", b"x")).reply();
        assert_eq!(
            reply,
            JoinReply {
                leader: false,
                epoch: None,
                position: Some(i as u32)
            }
        );
    }
    let l = leader_of(&mut h, s[2], "e").unwrap();
    assert_eq!(
        (l.session, l.epoch, &l.data[..]),
        (s[0], r.call_id, &b"node-0"[..])
    );
    // Joining again (a retry) replies the standing, and changes nothing.
    let again: JoinReply = h.call(s[1], "join", &join("e", b"again")).reply();
    assert_eq!((again.leader, again.position), (false, Some(1)));
    let again: JoinReply = h.call(s[0], "join", &join("e", b"again")).reply();
    assert_eq!(again.epoch, Some(r.call_id));
    assert_eq!(
        h.children(&format!("{ROOT}/e/candidates")).unwrap().len(),
        3
    );
    // A session may be a candidate of several elections; without data, data is empty.
    let r = h.call(s[1], "join", &name("other"));
    assert!(r.reply::<JoinReply>().leader);
    assert_eq!(leader_of(&mut h, s[0], "other").unwrap().data.len(), 0);
    // Nobody was notified: promotions at join are in the reply.
    assert!(h.notifications().is_empty());
    assert!(h
        .call(s[0], "join", &name(".sessions"))
        .failure()
        .unwrap()
        .contains("bad election name"));
    assert!(h
        .call(s[0], "join", &name("a/b"))
        .failure()
        .unwrap()
        .contains("bad election name"));
    assert!(h
        .call(s[0], "nope", &name("e"))
        .failure()
        .unwrap()
        .contains("unknown function"));
}

#[test]
fn layout_is_readable_and_tidied() {
    let mut h = Harness::new::<Election>();
    let a = h.open_session();
    let b = h.open_session();
    let o = h.open_session();
    h.call(a, "join", &join("e", b"A")).reply::<JoinReply>();
    h.call(b, "join", &join("e", b"B")).reply::<JoinReply>();
    h.call(o, "observe", &name("e")).reply::<Option<Leader>>();
    let dir = format!("{ROOT}/e");
    assert_eq!(
        h.children(&format!("{dir}/candidates")).unwrap(),
        vec!["c-0000000000", "c-0000000001"]
    );
    let c1: Candidate = h.get_as(&format!("{dir}/candidates/c-0000000001")).unwrap();
    assert_eq!(c1.session_id, b);
    assert_eq!(&c1.data[..], b"B");
    assert_eq!(
        h.stat(&format!("{dir}/candidates/c-0000000001"))
            .unwrap()
            .ephemeral_owner,
        b
    );
    let l: Leader = h.get_as(&format!("{dir}/leader")).unwrap();
    assert_eq!((l.session, l.candidate.as_str()), (a, "c-0000000000"));
    let obs = format!("{dir}/observers/{o:016x}");
    assert_eq!(h.stat(&obs).unwrap().ephemeral_owner, o);
    // Everyone goes: nothing is left.
    h.call(a, "resign", &name("e")).reply::<ResignReply>();
    h.close_session(b);
    assert!(h.stat(&dir).is_some(), "the observer keeps it");
    assert!(h.call(o, "unobserve", &name("e")).reply::<bool>());
    assert!(!h.call(o, "unobserve", &name("e")).reply::<bool>());
    assert!(h.stat(&dir).is_none(), "{:?}", h.paths());
    assert!(h.event_failures().is_empty());
}

#[test]
fn leader_session_ending_promotes_the_next_and_notifies_only_it_and_observers() {
    let mut h = Harness::new::<Election>();
    let s: Vec<i64> = (0..4).map(|_| h.open_session()).collect();
    let obs = h.open_session();
    let first: JoinReply = h.call(s[0], "join", &join("e", b"0")).reply();
    for sess in &s[1..] {
        h.call(*sess, "join", &join("e", format!("{sess}").as_bytes()))
            .reply::<JoinReply>();
    }
    let current: Option<Leader> = h.call(obs, "observe", &name("e")).reply();
    assert_eq!(current.unwrap().session, s[0]);
    let mut last_epoch = first.epoch.unwrap();
    for i in 1..s.len() {
        h.clear_outputs();
        h.close_session(s[i - 1]);
        let all = h.notifications();
        assert_eq!(
            all.len(),
            2,
            "exactly the promoted candidate and the observer: {all:?}"
        );
        let elected: Vec<Elected> = h.notifications_for(s[i]);
        assert_eq!(elected.len(), 1);
        assert_eq!(
            (elected[0].event.as_str(), elected[0].name.as_str()),
            ("elected", "e")
        );
        assert!(elected[0].epoch > last_epoch, "epochs strictly increase");
        for other in &s[i + 1..] {
            assert!(h.notifications_for::<Elected>(*other).is_empty(), "no herd");
        }
        let seen: Vec<LeaderChanged> = h.notifications_for(obs);
        assert_eq!(
            seen,
            vec![LeaderChanged {
                event: "leader".into(),
                name: "e".into(),
                session: Some(s[i]),
                epoch: Some(elected[0].epoch),
                data: Some(ByteBuf::from(format!("{}", s[i]).into_bytes())),
            }]
        );
        let l = leader_of(&mut h, obs, "e").unwrap();
        assert_eq!((l.session, l.epoch), (s[i], elected[0].epoch));
        last_epoch = elected[0].epoch;
    }
    // The last leader goes: observers hear that nobody leads.
    h.clear_outputs();
    h.close_session(s[3]);
    let seen: Vec<LeaderChanged> = h.notifications_for(obs);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].session, seen[0].epoch, &seen[0].data),
        (None, None, &None)
    );
    assert_eq!(leader_of(&mut h, obs, "e"), None);
    assert!(h.event_failures().is_empty());
}

#[test]
fn a_waiting_candidates_session_ending_removes_it_quietly() {
    let mut h = Harness::new::<Election>();
    let a = h.open_session();
    let b = h.open_session();
    let c = h.open_session();
    let obs = h.open_session();
    h.call(a, "join", &name("e")).reply::<JoinReply>();
    h.call(b, "join", &name("e")).reply::<JoinReply>();
    h.call(c, "join", &name("e")).reply::<JoinReply>();
    h.call(obs, "observe", &name("e")).reply::<Option<Leader>>();
    h.clear_outputs();
    h.close_session(b);
    assert!(h.notifications().is_empty(), "not a change of leader");
    assert_eq!(
        h.children(&format!("{ROOT}/e/candidates")).unwrap().len(),
        2
    );
    // c moved up: it is next.
    h.call(a, "resign", &name("e")).reply::<ResignReply>();
    assert_eq!(h.notifications_for::<Elected>(c).len(), 1);
    assert_eq!(leader_of(&mut h, c, "e").unwrap().session, c);
}

#[test]
fn resign() {
    let mut h = Harness::new::<Election>();
    let a = h.open_session();
    let b = h.open_session();
    let c = h.open_session();
    let obs = h.open_session();
    assert_eq!(
        h.call(obs, "observe", &name("e")).reply::<Option<Leader>>(),
        None
    );
    let ea = h
        .call(a, "join", &name("e"))
        .reply::<JoinReply>()
        .epoch
        .unwrap();
    // The observer saw a take the lead.
    let seen: Vec<LeaderChanged> = h.notifications_for(obs);
    assert_eq!(
        (seen.len(), seen[0].session, seen[0].epoch),
        (1, Some(a), Some(ea))
    );
    h.call(b, "join", &name("e")).reply::<JoinReply>();
    h.call(c, "join", &name("e")).reply::<JoinReply>();
    assert!(h
        .call(obs, "resign", &name("e"))
        .failure()
        .unwrap()
        .contains("not a candidate"));

    // A waiting candidate leaves the queue: nobody hears of it.
    h.clear_outputs();
    assert_eq!(
        h.call(b, "resign", &name("e")).reply::<ResignReply>(),
        ResignReply { was_leader: false }
    );
    assert!(h.notifications().is_empty());
    // The leader steps down: the next in join order (c) leads.
    assert_eq!(
        h.call(a, "resign", &name("e")).reply::<ResignReply>(),
        ResignReply { was_leader: true }
    );
    let elected: Vec<Elected> = h.notifications_for(c);
    assert_eq!(elected.len(), 1);
    assert!(elected[0].epoch > ea);
    assert!(h.notifications_for::<Elected>(a).is_empty());
    assert!(h.notifications_for::<Elected>(b).is_empty());
    assert_eq!(h.notifications_for::<LeaderChanged>(obs).len(), 1);
    // a may join again, at the back.
    let r: JoinReply = h.call(a, "join", &name("e")).reply();
    assert_eq!((r.leader, r.position), (false, Some(1)));
    h.clear_outputs();
    h.call(c, "resign", &name("e")).reply::<ResignReply>();
    h.call(a, "resign", &name("e")).reply::<ResignReply>();
    let seen: Vec<LeaderChanged> = h.notifications_for(obs);
    assert_eq!(
        seen.iter().map(|l| l.session).collect::<Vec<_>>(),
        vec![Some(a), None]
    );
}

#[test]
fn observers_closing_are_dropped() {
    let mut h = Harness::new::<Election>();
    let a = h.open_session();
    let o1 = h.open_session();
    let o2 = h.open_session();
    h.call(o1, "observe", &name("e")).reply::<Option<Leader>>();
    h.call(o2, "observe", &name("e")).reply::<Option<Leader>>();
    // Observing twice is harmless.
    h.call(o2, "observe", &name("e")).reply::<Option<Leader>>();
    h.close_session(o1);
    assert_eq!(h.children(&format!("{ROOT}/e/observers")).unwrap().len(), 1);
    h.call(a, "join", &name("e")).reply::<JoinReply>();
    assert_eq!(h.notifications_for::<LeaderChanged>(o2).len(), 1);
    assert!(h.stat(&format!("{SESSIONS}/{a:016x}/e")).is_some());
    h.close_session(o2);
    h.close_session(a);
    assert!(h.stat(&format!("{ROOT}/e")).is_none(), "{:?}", h.paths());
    assert!(h.stat(SESSIONS).is_none(), "{:?}", h.paths());
    assert!(h.event_failures().is_empty());
}

/// Random joins, resignations and session ends against a model: the leader is always
/// the earliest live candidate, epochs strictly increase, and only the promoted
/// candidate and the observers hear of a promotion.
#[test]
fn random_churn_matches_the_model() {
    let seed = test_seed("election::random_churn_matches_the_model");
    let mut rng = Rng::new(seed);
    let mut h = Harness::new::<Election>();
    let obs = h.open_session();
    h.call(obs, "observe", &name("e")).reply::<Option<Leader>>();
    let mut live: Vec<i64> = Vec::new();
    // The model: candidates in join order.
    let mut queue: Vec<i64> = Vec::new();
    let mut last_epoch = 0i64;
    let mut epochs_seen = Vec::new();
    for step in 0..400 {
        h.clear_outputs();
        let before = queue.first().copied();
        match rng.below(5) {
            0 | 1 => {
                let s = if live.is_empty() || rng.below(3) == 0 {
                    let s = h.open_session();
                    live.push(s);
                    s
                } else {
                    live[rng.below(live.len() as u64) as usize]
                };
                let r = h.call(s, "join", &name("e"));
                if let Some(i) = queue.iter().position(|c| *c == s) {
                    let reply: JoinReply = r.reply();
                    assert_eq!(reply.leader, i == 0, "step {step}");
                    if i > 0 {
                        assert_eq!(reply.position, Some(i as u32), "step {step}");
                    }
                } else {
                    let reply: JoinReply = r.reply();
                    assert_eq!(reply.leader, queue.is_empty(), "step {step}");
                    if !reply.leader {
                        assert_eq!(reply.position, Some(queue.len() as u32));
                    }
                    queue.push(s);
                }
            }
            2 => {
                if live.is_empty() {
                    continue;
                }
                let s = live[rng.below(live.len() as u64) as usize];
                let r = h.call(s, "resign", &name("e"));
                match queue.iter().position(|c| *c == s) {
                    Some(i) => {
                        let reply: ResignReply = r.reply();
                        assert_eq!(reply.was_leader, i == 0, "step {step}");
                        queue.remove(i);
                    }
                    None => assert!(r.failure().is_some(), "step {step}"),
                }
            }
            _ => {
                if live.is_empty() {
                    continue;
                }
                let i = rng.below(live.len() as u64) as usize;
                let s = live.remove(i);
                h.close_session(s);
                queue.retain(|c| *c != s);
            }
        }
        let after = queue.first().copied();
        let l = leader_of(&mut h, obs, "e");
        assert_eq!(l.as_ref().map(|l| l.session), after, "step {step}");
        let mut expected_notified = 0;
        if after != before {
            let seen: Vec<LeaderChanged> = h.notifications_for(obs);
            assert_eq!(seen.len(), 1, "step {step}");
            assert_eq!(seen[0].session, after, "step {step}");
            expected_notified += 1;
            if let Some(new) = after {
                let epoch = seen[0].epoch.unwrap();
                assert!(
                    epoch > last_epoch,
                    "step {step}: epoch {epoch} after {last_epoch}"
                );
                last_epoch = epoch;
                epochs_seen.push(epoch);
                assert_eq!(l.unwrap().epoch, epoch);
                // A promotion at join is in the reply; a later one is notified.
                let elected: Vec<Elected> = h.notifications_for(new);
                if before.is_some() {
                    assert_eq!(elected.len(), 1, "step {step}");
                    assert_eq!(elected[0].epoch, epoch);
                    expected_notified += 1;
                } else {
                    assert!(elected.is_empty(), "step {step}");
                }
            }
        }
        assert_eq!(
            h.notifications().len(),
            expected_notified,
            "step {step}: no herd"
        );
    }
    assert!(h.event_failures().is_empty());
    let counts: BTreeMap<&str, usize> = [("promotions", epochs_seen.len())].into();
    println!("{counts:?}");
}

/// A session finds its candidacy through its `.sessions` entry (one read, whatever the
/// number of candidates); a stale entry never makes it another session's candidacy;
/// an entry written before the pointer existed (empty) still works by searching.
#[test]
fn candidacy_is_found_through_the_session_entry() {
    let mut h = Harness::new::<Election>();
    let (a, b) = (h.open_session(), h.open_session());
    let r: JoinReply = h.call(a, "join", &join("p", b"a")).reply();
    assert!(r.leader);
    let entry: SessionEntry = h.get_as(&format!("{SESSIONS}/{a:016x}/p")).expect("entry");
    let node = entry.candidate.expect("points at the candidate");
    let c: Candidate = h
        .get_as(&format!("{}/{node}", candidates_dir("p")))
        .expect("candidate znode");
    assert_eq!(c.session_id, a);
    // Resign empties the election (tidied away); b's join restarts the sequence, so
    // b's znode has the name a's stale pointer still names.
    assert!(
        h.call(a, "resign", &name("p"))
            .reply::<ResignReply>()
            .was_leader
    );
    let rb: JoinReply = h.call(b, "join", &join("p", b"b")).reply();
    assert!(rb.leader);
    let b_entry: SessionEntry = h.get_as(&format!("{SESSIONS}/{b:016x}/p")).expect("entry");
    assert_eq!(b_entry.candidate, Some(node.clone()), "same name again");
    // a is not a candidate: its resign fails and b keeps leading.
    assert_eq!(
        h.call(a, "resign", &name("p")).failure(),
        Some("session is not a candidate in election p")
    );
    assert_eq!(leader_of(&mut h, a, "p").unwrap().session, b);
    // An old-style empty entry: the candidates are searched.
    h.set(&format!("{SESSIONS}/{b:016x}/p"), &[], -1).unwrap();
    let again: JoinReply = h.call(b, "join", &join("p", b"b")).reply();
    assert!(
        again.leader,
        "found by searching: still the leader, not a second candidacy"
    );
    assert_eq!(h.children(&candidates_dir("p")).unwrap().len(), 1);
    // a joins again: a fresh pointer.
    let ra: JoinReply = h.call(a, "join", &join("p", b"a2")).reply();
    assert_eq!((ra.leader, ra.position), (false, Some(1)));
    assert!(
        !h.call(a, "resign", &name("p"))
            .reply::<ResignReply>()
            .was_leader
    );
}
