//! Shared bits of the examples in `src/bin/`: the `--servers` flag and connecting.
//!
//! Each example runs against a server with the built-in recipes, e.g. the one
//! `./scripts/serve.sh` starts on 127.0.0.1:2181, and stops on its own after a few
//! rounds (`--rounds`), so that it can be smoke-tested (tests/run_examples.rs).

use anyhow::Context;
use wazoo_client::{Client, ConnectOptions, Failover};

/// The flags every example takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Connect string: `host:port[,host:port...]`.
    #[arg(long, default_value = "127.0.0.1:2181")]
    pub servers: String,
    /// Session timeout, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: i32,
}

impl Common {
    /// A new session, reconnecting across connection loss (the wrappers catch up by
    /// themselves after a reconnect).
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let opts = ConnectOptions {
            timeout_ms: self.session_timeout_ms,
            ..Default::default()
        };
        Client::connect_with(&self.servers, opts, Failover::reconnecting())
            .await
            .with_context(|| format!("connecting to {}", self.servers))
    }
}

/// Creates `path` (persistent, open ACL, with `data`) unless it exists.
pub async fn ensure_node(client: &Client, path: &str, data: &[u8]) -> anyhow::Result<()> {
    match client
        .create(path, data, wazoo_client::open_acl_unsafe(), 0)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(wazoo_proto::ErrorCode::NodeExists) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {path}")),
    }
}
