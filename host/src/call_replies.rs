//! Where a recipe call's answer goes: one connection's bookkeeping between the replies
//! its sequencer sends and the completions the state machine pushes.
//!
//! A parked call is answered twice: by its reply (sent by the connection's sequencer
//! once the call's entry is applied) and later by its completion (pushed while the
//! entry that completes it is applied). The two travel different paths, so the
//! completion can be ready before the sequencer got to the reply. Two things need
//! them in order:
//! - a plain call's completion notification must follow its "parked" reply (the client
//!   matches the notification by the call id the reply carries);
//! - a call sent with `CALL_DEFER_REPLY` gets no "parked" reply at all: its completion
//!   *is* its reply, sent with the call's xid, so the connection must know the xid
//!   before the completion can go out.
//!
//! So while any recipe call of the connection waits for the sequencer, a completion
//! for a call id the sequencer has not reached yet is held back (with everything
//! recipe-related queued behind it, to keep their order) until the sequencer has
//! passed that call id. Call ids are zxids, which increase in apply order, and the
//! sequencer answers in apply order, so "passed" is a comparison. Watch events are
//! never held.
//!
//! The struct is pure bookkeeping: it hands the frames to send to `emit`. The
//! [`crate::watch::WatchManager`] owns one per connection and calls it under the same
//! lock as everything else it sends to that connection, which is what orders them.

use std::collections::{HashMap, VecDeque};
use wazoo_proto::recipe::{CALL_DEFER_REPLY, CALL_PARKED, CALL_QUIET, NOTIFY_CALL_COMPLETED};
use wazoo_proto::response::{encode_recipe_notification_frame, encode_reply_frame};
use wazoo_proto::{ErrorCode, RecipeNotification, Response};

/// A parked call sent with `CALL_DEFER_REPLY`, waiting for its completion.
#[derive(Debug, Clone, Copy)]
struct Deferred {
    xid: i32,
    quiet: bool,
}

/// One connection's recipe-call bookkeeping; see the module docs.
#[derive(Debug, Default)]
pub struct CallReplies {
    /// Recipe calls read from the connection whose result the sequencer has not
    /// handled yet.
    in_flight: u32,
    /// The largest call id (zxid) the sequencer has handled.
    answered_upto: i64,
    /// Parked `CALL_DEFER_REPLY` calls by call id.
    deferred: HashMap<i64, Deferred>,
    /// Recipe notifications held back, oldest first, with their zxids.
    held: VecDeque<(i64, RecipeNotification)>,
}

impl CallReplies {
    /// The connection's reader proposed a recipe call.
    pub fn call_sent(&mut self) {
        self.in_flight += 1;
    }

    /// The sequencer has the result of a recipe call sent with `flags`: emits its
    /// reply (unless deferred or quiet), then whatever was held for it.
    pub fn call_answered(
        &mut self,
        xid: i32,
        flags: i32,
        zxid: i64,
        result: &Result<Response, ErrorCode>,
        emit: &mut (impl FnMut(Vec<u8>) + ?Sized),
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.answered_upto = self.answered_upto.max(zxid);
        let quiet = flags & CALL_QUIET != 0;
        match result {
            Ok(Response::RecipeCall {
                state: CALL_PARKED,
                call_id,
                ..
            }) => {
                self.answered_upto = self.answered_upto.max(*call_id);
                if flags & CALL_DEFER_REPLY != 0 {
                    self.deferred.insert(*call_id, Deferred { xid, quiet });
                } else {
                    emit(encode_reply_frame(xid, zxid, result));
                }
            }
            // A completed call; a failure (a recipe error body, or a plain code) is
            // always answered.
            Ok(Response::RecipeCall { .. }) if quiet => {}
            _ => emit(encode_reply_frame(xid, zxid, result)),
        }
        self.flush(emit);
    }

    /// A recipe notification for this connection's session, from the state machine.
    pub fn notification(
        &mut self,
        zxid: i64,
        n: &RecipeNotification,
        emit: &mut (impl FnMut(Vec<u8>) + ?Sized),
    ) {
        if !self.held.is_empty() || self.must_hold(n) {
            self.held.push_back((zxid, n.clone()));
            return;
        }
        self.send(zxid, n, emit);
    }

    /// Whether a completion may be for a call the sequencer has not answered yet.
    fn must_hold(&self, n: &RecipeNotification) -> bool {
        n.kind == NOTIFY_CALL_COMPLETED
            && !self.deferred.contains_key(&n.call_id)
            && self.in_flight > 0
            && n.call_id > self.answered_upto
    }

    fn flush(&mut self, emit: &mut (impl FnMut(Vec<u8>) + ?Sized)) {
        while let Some((_, n)) = self.held.front() {
            if self.must_hold(n) {
                return;
            }
            if let Some((zxid, n)) = self.held.pop_front() {
                self.send(zxid, &n, emit);
            }
        }
    }

    /// Emits `n`: as the reply of its deferred call, or as a notification.
    fn send(
        &mut self,
        zxid: i64,
        n: &RecipeNotification,
        emit: &mut (impl FnMut(Vec<u8>) + ?Sized),
    ) {
        let deferred = if n.kind == NOTIFY_CALL_COMPLETED {
            self.deferred.remove(&n.call_id)
        } else {
            None
        };
        let Some(d) = deferred else {
            emit(encode_recipe_notification_frame(zxid, n));
            return;
        };
        let result = if n.err == 0 {
            if d.quiet {
                return;
            }
            Ok(Response::RecipeCall {
                state: wazoo_proto::recipe::CALL_COMPLETED,
                call_id: n.call_id,
                reply: n.payload.clone(),
            })
        } else {
            Ok(Response::RecipeFailure {
                code: ErrorCode::from_i32(n.err).unwrap_or(ErrorCode::RecipeFailed),
                message: n.message.clone(),
            })
        };
        emit(encode_reply_frame(d.xid, zxid, &result));
    }

    /// Counts for tests and diagnostics: (calls in flight, deferred calls, held).
    #[cfg(test)]
    fn counts(&self) -> (u32, usize, usize) {
        (self.in_flight, self.deferred.len(), self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wazoo_proto::consts::xid::RECIPE_NOTIFICATION;
    use wazoo_proto::recipe::{CALL_COMPLETED, NOTIFY_MESSAGE};
    use wazoo_proto::{Reader, Record, ReplyHeader};

    /// What a frame is, decoded: (xid, err, call id or 0, payload or message).
    fn decode(f: &[u8]) -> (i32, i32, i64, Vec<u8>) {
        let mut r = Reader::new(&f[4..]);
        let h = ReplyHeader::decode(&mut r).unwrap();
        if h.xid == RECIPE_NOTIFICATION {
            let n = RecipeNotification::decode(&mut r).unwrap();
            return (h.xid, n.err, n.call_id, n.payload);
        }
        if h.err != 0 {
            let message = if r.is_empty() {
                vec![]
            } else {
                r.read_ustring().unwrap().into_bytes()
            };
            return (h.xid, h.err, 0, message);
        }
        match Response::decode(wazoo_proto::consts::op::RECIPE_CALL, &mut r).unwrap() {
            Response::RecipeCall {
                state,
                call_id,
                reply,
            } => {
                // A parked reply shows as the payload "<parked>".
                if state == CALL_PARKED {
                    return (h.xid, 0, call_id, b"<parked>".to_vec());
                }
                assert_eq!(state, CALL_COMPLETED);
                (h.xid, 0, call_id, reply)
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn parked(call_id: i64) -> Result<Response, ErrorCode> {
        Ok(Response::RecipeCall {
            state: CALL_PARKED,
            call_id,
            reply: vec![],
        })
    }

    fn completion(call_id: i64, err: i32, payload: &[u8]) -> RecipeNotification {
        RecipeNotification {
            kind: NOTIFY_CALL_COMPLETED,
            module: "lock".into(),
            call_id,
            err,
            message: if err == 0 {
                String::new()
            } else {
                "it failed".into()
            },
            payload: payload.to_vec(),
        }
    }

    fn message(payload: &[u8]) -> RecipeNotification {
        RecipeNotification {
            kind: NOTIFY_MESSAGE,
            module: "lock".into(),
            call_id: 0,
            err: 0,
            message: String::new(),
            payload: payload.to_vec(),
        }
    }

    type Emit<'a> = &'a mut dyn FnMut(Vec<u8>);

    fn run(f: impl FnOnce(&mut CallReplies, Emit<'_>)) -> Vec<(i32, i32, i64, Vec<u8>)> {
        let mut c = CallReplies::default();
        let mut frames = Vec::new();
        f(&mut c, &mut |fr| frames.push(fr));
        frames.iter().map(|f| decode(f)).collect()
    }

    #[test]
    fn a_deferred_call_gets_one_reply_with_its_xid_when_it_completes() {
        let mut c = CallReplies::default();
        let mut frames = Vec::new();
        let mut emit = |f: Vec<u8>| frames.push(f);
        c.call_sent();
        c.call_answered(7, CALL_DEFER_REPLY, 100, &parked(100), &mut emit);
        assert_eq!(c.counts(), (0, 1, 0));
        c.notification(200, &completion(100, 0, b"granted"), &mut emit);
        assert_eq!(c.counts(), (0, 0, 0));
        let got: Vec<_> = frames.iter().map(|f| decode(f)).collect();
        assert_eq!(got, vec![(7, 0, 100, b"granted".to_vec())]);
    }

    #[test]
    fn a_completion_ahead_of_the_sequencer_waits_for_its_call() {
        // The completion (entry 200) is pushed before the sequencer handled the call
        // (entry 100): deferred, it becomes the reply; plain, it follows the parked
        // reply. A message pushed behind it keeps its place.
        for flags in [CALL_DEFER_REPLY, 0] {
            let got = run(|c, emit| {
                c.call_sent();
                c.notification(200, &completion(100, 0, b"granted"), emit);
                c.notification(200, &message(b"hello"), emit);
                assert_eq!(c.counts(), (1, 0, 2));
                c.call_answered(7, flags, 100, &parked(100), emit);
                assert_eq!(c.counts(), (0, 0, 0));
            });
            let expected = if flags == CALL_DEFER_REPLY {
                vec![
                    (7, 0, 100, b"granted".to_vec()),
                    (RECIPE_NOTIFICATION, 0, 0, b"hello".to_vec()),
                ]
            } else {
                vec![
                    (7, 0, 100, b"<parked>".to_vec()),
                    (RECIPE_NOTIFICATION, 0, 100, b"granted".to_vec()),
                    (RECIPE_NOTIFICATION, 0, 0, b"hello".to_vec()),
                ]
            };
            assert_eq!(got, expected, "flags {flags}");
        }
    }

    #[test]
    fn completions_of_calls_already_answered_are_not_held() {
        // A call of this session parked on another connection (id 50, below what the
        // sequencer has answered): delivered at once even while a call is in flight.
        let got = run(|c, emit| {
            c.call_sent();
            c.call_answered(
                1,
                0,
                60,
                &Ok(Response::RecipeCall {
                    state: CALL_COMPLETED,
                    call_id: 60,
                    reply: vec![],
                }),
                emit,
            );
            c.call_sent();
            c.notification(70, &completion(50, 0, b"x"), emit);
            assert_eq!(c.counts(), (1, 0, 0));
        });
        assert_eq!(got[1], (RECIPE_NOTIFICATION, 0, 50, b"x".to_vec()));
    }

    #[test]
    fn a_completion_for_a_call_of_another_connection_is_released_when_nothing_is_in_flight() {
        let got = run(|c, emit| {
            c.call_sent();
            c.notification(300, &completion(250, 0, b"moved"), emit);
            assert_eq!(c.counts(), (1, 0, 1));
            // The connection's own call (id 200) completes at once.
            c.call_answered(
                3,
                0,
                200,
                &Ok(Response::RecipeCall {
                    state: CALL_COMPLETED,
                    call_id: 200,
                    reply: b"r".to_vec(),
                }),
                emit,
            );
            assert_eq!(c.counts(), (0, 0, 0));
        });
        assert_eq!(
            got,
            vec![
                (3, 0, 200, b"r".to_vec()),
                (RECIPE_NOTIFICATION, 0, 250, b"moved".to_vec())
            ]
        );
    }

    #[test]
    fn quiet_calls_are_answered_only_when_they_fail() {
        let got = run(|c, emit| {
            // Completed at once: nothing.
            c.call_sent();
            c.call_answered(
                1,
                CALL_QUIET,
                10,
                &Ok(Response::RecipeCall {
                    state: CALL_COMPLETED,
                    call_id: 10,
                    reply: vec![],
                }),
                emit,
            );
            // Failed at once: the error.
            c.call_sent();
            c.call_answered(
                2,
                CALL_QUIET,
                11,
                &Ok(Response::RecipeFailure {
                    code: ErrorCode::RecipeFailed,
                    message: "not the holder".into(),
                }),
                emit,
            );
            // Deferred and quiet: nothing when it succeeds, the error when it fails.
            c.call_sent();
            c.call_answered(3, CALL_QUIET | CALL_DEFER_REPLY, 12, &parked(12), emit);
            c.call_sent();
            c.call_answered(4, CALL_QUIET | CALL_DEFER_REPLY, 13, &parked(13), emit);
            c.notification(20, &completion(12, 0, b"ok"), emit);
            c.notification(
                21,
                &completion(13, ErrorCode::RecipeCancelled.code(), b""),
                emit,
            );
            assert_eq!(c.counts(), (0, 0, 0));
        });
        assert_eq!(
            got,
            vec![
                (
                    2,
                    ErrorCode::RecipeFailed.code(),
                    0,
                    b"not the holder".to_vec()
                ),
                (
                    4,
                    ErrorCode::RecipeCancelled.code(),
                    0,
                    b"it failed".to_vec()
                ),
            ]
        );
    }

    #[test]
    fn a_plain_error_code_is_answered_even_when_quiet() {
        let got = run(|c, emit| {
            c.call_sent();
            c.call_answered(5, CALL_QUIET, 10, &Err(ErrorCode::NoAuth), emit);
        });
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 5);
        assert_eq!(got[0].1, ErrorCode::NoAuth.code());
    }
}
