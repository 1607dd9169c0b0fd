//! The SDK's error type.

use std::fmt;

use crate::abi::ErrorCode;

/// Result of the SDK's calls and of recipe handlers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a host call or a handler failed.
///
/// A handler that returns `Err(e)` fails its call with `e.to_string()` as the message
/// and all its writes are discarded, so `?` is the normal way to give up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host answered a call with a ZooKeeper error code (`NoNode`, `BadVersion`, ...).
    Host(ErrorCode),
    /// A `multi` failed: the index of the op that failed and its error.
    Multi { index: usize, code: ErrorCode },
    /// Call arguments, a znode's data or a host response did not decode.
    Decode(String),
    /// A value did not encode as MessagePack.
    Encode(String),
    /// The called function does not exist in this recipe.
    UnknownFunction(String),
    /// A failure of the recipe's own, with this message.
    Failed(String),
}

impl Error {
    /// A recipe failure with a message: `return Err(Error::msg("queue is full"))`.
    pub fn msg(message: impl Into<String>) -> Error {
        Error::Failed(message.into())
    }

    /// The ZooKeeper error code, for errors that come from the host.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Host(code) | Error::Multi { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is the host's `NoNode`.
    pub fn is_no_node(&self) -> bool {
        self.code() == Some(ErrorCode::NoNode)
    }

    /// Whether this is the host's `NodeExists`.
    pub fn is_node_exists(&self) -> bool {
        self.code() == Some(ErrorCode::NodeExists)
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Error {
        Error::Host(code)
    }
}

impl From<rmp_serde::decode::Error> for Error {
    fn from(e: rmp_serde::decode::Error) -> Error {
        Error::Decode(e.to_string())
    }
}

impl From<rmp_serde::encode::Error> for Error {
    fn from(e: rmp_serde::encode::Error) -> Error {
        Error::Encode(e.to_string())
    }
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::Failed(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::Failed(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Host(code) => write!(f, "host error {code:?}"),
            Error::Multi { index, code } => write!(f, "multi op {index} failed: {code:?}"),
            Error::Decode(m) => write!(f, "decode error: {m}"),
            Error::Encode(m) => write!(f, "encode error: {m}"),
            Error::UnknownFunction(name) => write!(f, "unknown function {name}"),
            Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_codes() {
        assert_eq!(
            Error::UnknownFunction("f".into()).to_string(),
            "unknown function f"
        );
        assert_eq!(Error::msg("plain").to_string(), "plain");
        assert_eq!(
            Error::Host(ErrorCode::NoNode).to_string(),
            "host error NoNode"
        );
        let multi = Error::Multi {
            index: 2,
            code: ErrorCode::BadVersion,
        };
        assert_eq!(multi.to_string(), "multi op 2 failed: BadVersion");
        assert_eq!(multi.code(), Some(ErrorCode::BadVersion));
        assert!(Error::from(ErrorCode::NoNode).is_no_node());
        assert!(Error::from(ErrorCode::NodeExists).is_node_exists());
        assert_eq!(Error::from("x").code(), None);
    }
}
