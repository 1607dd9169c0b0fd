//! `noop`: the benchmark baseline. Its one function, `noop`, replies nil at once (no host
//! call other than the reply), so a benchmark of it measures the recipe machinery alone.

use wazoo_sdk::{Call, Error, Recipe, Result};

pub struct Noop;

impl Recipe for Noop {
    fn call(call: &Call) -> Result<()> {
        match call.function() {
            // MessagePack nil, without going through serde.
            "noop" => wazoo_sdk::reply_raw(vec![0xc0]),
            other => Err(Error::UnknownFunction(other.to_string())),
        }
    }
}

wazoo_sdk::recipe!(Noop);

#[cfg(test)]
mod tests {
    use super::Noop;
    use wazoo_sdk::testing::Harness;

    #[test]
    fn noop_replies_nil() {
        let mut h = Harness::new::<Noop>();
        let s = h.open_session();
        let r = h.call_raw(s, "noop", Vec::new());
        assert_eq!(r.reply_bytes(), Some(&[0xc0][..]));
        h.call(s, "noop", &()).reply::<()>();
        assert_eq!(
            h.call(s, "other", &()).failure(),
            Some("unknown function other")
        );
    }
}
