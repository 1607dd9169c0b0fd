//! ZooKeeper's error codes (`KeeperException.Code`), the only errors a client ever
//! sees on the wire. Names are stable: they appear in logs, metrics and the CLI.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$m:meta])* $name:ident = $code:literal),* $(,)?) => {
        /// A ZooKeeper error code as carried in `ReplyHeader.err`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(i32)]
        pub enum ErrorCode {
            $($(#[$m])* $name = $code,)*
        }

        impl ErrorCode {
            pub fn from_i32(code: i32) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }

            /// ZooKeeper's name for the code, e.g. `NONODE`-style names are Java's; we use
            /// the `Code` enum's CamelCase names.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($name),)*
                }
            }
        }
    };
}

error_codes! {
    Ok = 0,
    SystemError = -1,
    RuntimeInconsistency = -2,
    DataInconsistency = -3,
    ConnectionLoss = -4,
    MarshallingError = -5,
    Unimplemented = -6,
    OperationTimeout = -7,
    BadArguments = -8,
    UnknownSession = -12,
    NewConfigNoQuorum = -13,
    ReconfigInProgress = -14,
    ApiError = -100,
    NoNode = -101,
    NoAuth = -102,
    BadVersion = -103,
    NoChildrenForEphemerals = -108,
    NodeExists = -110,
    NotEmpty = -111,
    SessionExpired = -112,
    InvalidCallback = -113,
    InvalidAcl = -114,
    AuthFailed = -115,
    SessionMoved = -118,
    NotReadOnly = -119,
    EphemeralOnLocalSession = -120,
    NoWatcher = -121,
    RequestTimeout = -122,
    ReconfigDisabled = -123,
    SessionClosedRequireSaslAuth = -124,
    QuotaExceeded = -125,
    ThrottledOp = -127,
    // Wazoo's recipe extension (docs/PROTOCOL.md, "Recipe extension"); never sent
    // to a client that does not use the recipe opcodes.
    /// The uploaded module is not valid wasm, or does not implement the recipe ABI.
    RecipeInvalid = -1100,
    /// The recipe trapped (unreachable, out-of-bounds access, ABI violation...).
    RecipeTrap = -1101,
    /// The invocation ran out of fuel.
    RecipeFuelExhausted = -1102,
    /// A resource limit (memory, reply size, writes per call...) was exceeded.
    RecipeLimitExceeded = -1103,
    /// The recipe itself reported a failure (its message says why).
    RecipeFailed = -1104,
    /// No recipe (or no such version, or no such function) by that name.
    RecipeNotFound = -1105,
    /// A parked call was cancelled (its session ended, the recipe was deleted...).
    RecipeCancelled = -1106,
    /// The replicas' recipe runtimes disagree (determinism profile mismatch).
    RecipeRuntimeMismatch = -1107,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl std::error::Error for ErrorCode {}

impl ErrorCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Result of a ZooKeeper operation.
pub type ZkResult<T> = Result<T, ErrorCode>;

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes_round_trip() {
        for c in [-1, -8, -101, -102, -110, -112, -115, -121, -127, 0] {
            assert_eq!(ErrorCode::from_i32(c).unwrap().code(), c);
        }
        assert_eq!(ErrorCode::from_i32(-9999), None);
        assert_eq!(ErrorCode::NoNode.name(), "NoNode");
    }

    #[test]
    fn recipe_codes_are_stable() {
        let all = [
            (ErrorCode::RecipeInvalid, -1100, "RecipeInvalid"),
            (ErrorCode::RecipeTrap, -1101, "RecipeTrap"),
            (ErrorCode::RecipeFuelExhausted, -1102, "RecipeFuelExhausted"),
            (ErrorCode::RecipeLimitExceeded, -1103, "RecipeLimitExceeded"),
            (ErrorCode::RecipeFailed, -1104, "RecipeFailed"),
            (ErrorCode::RecipeNotFound, -1105, "RecipeNotFound"),
            (ErrorCode::RecipeCancelled, -1106, "RecipeCancelled"),
            (
                ErrorCode::RecipeRuntimeMismatch,
                -1107,
                "RecipeRuntimeMismatch",
            ),
        ];
        for (c, n, name) in all {
            assert_eq!(c.code(), n);
            assert_eq!(ErrorCode::from_i32(n), Some(c));
            assert_eq!(c.name(), name);
        }
    }
}
