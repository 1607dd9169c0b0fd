//! Wazoo's recipe extension of the wire protocol: constants and validation shared by
//! the server, the client and the CLI. The records are in [`crate::records`]
//! (`Recipe*`), the typed requests and replies in [`crate::request`] and
//! [`crate::response`]; docs/PROTOCOL.md, "Recipe extension", is the prose version.

use crate::consts::op;
use crate::error::ErrorCode;

/// `RecipeCallResponse.state`: the call ran to completion; `reply` holds its result.
pub const CALL_COMPLETED: i32 = 0;
/// `RecipeCallResponse.state`: the call is parked; its result arrives later in a
/// [`NOTIFY_CALL_COMPLETED`] notification carrying the same `call_id`.
pub const CALL_PARKED: i32 = 1;

/// `RecipeCallRequest.flags` bit: if the call parks, send no "parked" reply; the
/// call's one reply (same xid, `CALL_COMPLETED` or an error) is sent when it
/// completes, possibly after the replies to later requests of the session.
pub const CALL_DEFER_REPLY: i32 = 1;
/// `RecipeCallRequest.flags` bit: send no reply when the call completes without
/// error (immediately, or later with [`CALL_DEFER_REPLY`]); an error is still
/// answered. A parked reply (without `CALL_DEFER_REPLY`) is still sent.
pub const CALL_QUIET: i32 = 2;
/// Every `RecipeCallRequest.flags` bit this version knows; a call with others is
/// BadArguments.
pub const CALL_FLAGS_KNOWN: i32 = CALL_DEFER_REPLY | CALL_QUIET;

/// `RecipeNotification.kind`: a parked call completed.
pub const NOTIFY_CALL_COMPLETED: i32 = 1;
/// `RecipeNotification.kind`: a message a recipe pushed to this session.
pub const NOTIFY_MESSAGE: i32 = 2;

/// `RecipeDeleteRequest.version` meaning every version; `RecipeCallRequest.version`
/// meaning the latest one.
pub const ANY_VERSION: i32 = -1;

/// Longest recipe name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `opcode` is one of the recipe extension's (1000..=1005).
pub fn is_recipe_op(opcode: i32) -> bool {
    matches!(
        opcode,
        op::RECIPE_UPLOAD
            | op::RECIPE_LIST
            | op::RECIPE_DELETE
            | op::RECIPE_CALL
            | op::RECIPE_ADOPT_RUNTIME
            | op::RECIPE_RUNTIME_INFO
    )
}

/// A recipe name must match `[A-Za-z0-9_.-]{1,64}`; anything else is BadArguments.
pub fn validate_recipe_name(name: &str) -> Result<(), ErrorCode> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::BadArguments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_names() {
        for ok in ["a", "lock", "my-recipe_1.2", "A.B-C_d", &"x".repeat(64)] {
            assert_eq!(validate_recipe_name(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            "a/b",
            "a b",
            "é",
            "a\0",
            "lock!",
            &"x".repeat(65),
            "../x",
        ] {
            // "../x" contains '/', which is refused.
            assert_eq!(
                validate_recipe_name(bad),
                Err(ErrorCode::BadArguments),
                "{bad:?}"
            );
        }
        // Dots alone are allowed by the pattern.
        assert_eq!(validate_recipe_name(".."), Ok(()));
    }

    #[test]
    fn recipe_ops() {
        assert!((1000..=1005).all(is_recipe_op));
        assert!(!is_recipe_op(999) && !is_recipe_op(1006) && !is_recipe_op(op::CREATE));
    }
}
