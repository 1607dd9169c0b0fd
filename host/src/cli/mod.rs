//! `wazoo cli --servers HOST:PORT[,...]`: an interactive shell in the manner of
//! ZooKeeper's zkCli.sh.
//!
//! Three ways to run it:
//! - interactive (stdin is a terminal): a `[zk: ADDR(CONNECTED) N]` prompt;
//! - script (stdin is not a terminal): one command per line, no prompt; a failing
//!   command prints its error and the next line runs; the exit status is 1 if any
//!   command failed;
//! - one-shot (`-c "CMD"`): runs CMD, exits 1 if it failed.
//!
//! Results go to stdout, errors to stderr (zkCli's wording: `Node does not exist: /x`,
//! otherwise the error code's name). Watch events print as
//! `WATCHER:: WatchedEvent state:SyncConnected type:NodeDataChanged path:/x` and
//! messages pushed by recipes as `RECIPE:: <module> <json payload>`, between commands.

mod commands;
pub mod format;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedReceiver};
use wazoo_client::{Client, ConnectOptions, RecipeMessage, WatchedEvent};

use crate::recipe_cli::{client_error_text, parse_auth, parse_servers, reply_to_text, ConnArgs};

/// How long one server gets to accept the connection and the session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requested session timeout (the server clamps it).
const SESSION_TIMEOUT_MS: i32 = 30_000;

#[derive(clap::Args, Debug)]
pub struct CliArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Run this one command, print its result and exit (status 1 if it failed).
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    pub command: Option<String>,
}

/// What one command did, for the loop.
pub(crate) enum Outcome {
    Ok,
    Failed,
    Quit,
}

/// The shell's session and the streams it prints between commands.
pub(crate) struct Shell {
    pub(crate) client: Client,
    pub(crate) server: String,
    events: Option<UnboundedReceiver<WatchedEvent>>,
    messages: Option<UnboundedReceiver<RecipeMessage>>,
    count: u64,
}

impl Shell {
    /// Prints the watch events and recipe messages received so far.
    fn drain(&mut self) {
        let mut out = std::io::stdout().lock();
        if let Some(rx) = &mut self.events {
            while let Ok(e) = rx.try_recv() {
                let _ = writeln!(out, "{}", format::format_event(&e));
            }
        }
        if let Some(rx) = &mut self.messages {
            while let Ok(m) = rx.try_recv() {
                let _ = writeln!(out, "{}", format_message(&m));
            }
        }
        let _ = out.flush();
    }

    fn prompt(&self) {
        let state = if self.client.is_closed() {
            "CLOSED"
        } else {
            "CONNECTED"
        };
        print!("[zk: {}({state}) {}] ", self.server, self.count);
        let _ = std::io::stdout().flush();
    }
}

/// `RECIPE:: <module> <json payload>`.
pub fn format_message(m: &RecipeMessage) -> String {
    format!("RECIPE:: {} {}", m.module, reply_to_text(&m.payload))
}

/// Runs the shell; the exit status says whether everything succeeded.
pub async fn run(args: CliArgs) -> ExitCode {
    let mut shell = match connect(&args.conn).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = if let Some(cmd) = &args.command {
        let r = line(&mut shell, cmd).await;
        shell.drain();
        match r {
            Outcome::Failed => ExitCode::FAILURE,
            _ => ExitCode::SUCCESS,
        }
    } else {
        repl(&mut shell).await
    };
    let client = shell.client.clone();
    drop(shell);
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, client.close()).await;
    status
}

/// Reads stdin line by line (on a plain thread, so a pending read never holds up the
/// runtime's shutdown) and runs each line.
async fn repl(shell: &mut Shell) -> ExitCode {
    let interactive = std::io::stdin().is_terminal();
    let (tx, mut lines) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut buf = String::new();
        loop {
            buf.clear();
            match stdin.read_line(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx
                        .send(buf.trim_end_matches(['\n', '\r']).to_string())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    if interactive {
        println!(
            "Connected to {} (session 0x{:x}); type help for the commands",
            shell.server,
            shell.client.session_id()
        );
    }
    let mut failed = false;
    loop {
        shell.drain();
        if interactive {
            shell.prompt();
        }
        let next = if interactive {
            // Show events that arrive while waiting for input.
            loop {
                tokio::select! {
                    l = lines.recv() => break l,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        let before = events_pending(shell);
                        if before {
                            println!();
                            shell.drain();
                            shell.prompt();
                        }
                    }
                }
            }
        } else {
            lines.recv().await
        };
        let Some(l) = next else {
            if interactive {
                println!();
            }
            break;
        };
        match line(shell, &l).await {
            Outcome::Ok => {}
            Outcome::Failed => failed = true,
            Outcome::Quit => break,
        }
    }
    shell.drain();
    if failed && !interactive {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn events_pending(shell: &Shell) -> bool {
    shell.events.as_ref().is_some_and(|r| !r.is_empty())
        || shell.messages.as_ref().is_some_and(|r| !r.is_empty())
}

/// Runs one input line; blank lines and `#` comments do nothing.
async fn line(shell: &mut Shell, text: &str) -> Outcome {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Outcome::Ok;
    }
    shell.count += 1;
    let words = match format::tokenize(trimmed) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return Outcome::Failed;
        }
    };
    let r = commands::execute(shell, &words).await;
    let _ = std::io::stdout().flush();
    r
}

/// Connects to the first server of the list that accepts a session, then
/// authenticates if asked to.
async fn connect(conn: &ConnArgs) -> Result<Shell, String> {
    let servers = parse_servers(&conn.servers)?;
    let auth = conn.auth.as_deref().map(parse_auth).transpose()?;
    let opts = ConnectOptions {
        timeout_ms: SESSION_TIMEOUT_MS,
        ..ConnectOptions::default()
    };
    let mut failures = Vec::new();
    for server in &servers {
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(server, opts.clone())).await {
            Ok(Ok(client)) => {
                if let Some((scheme, credentials)) = &auth {
                    client
                        .add_auth(scheme, credentials)
                        .await
                        .map_err(|e| client_error_text(&e))?;
                }
                let events = client.take_events();
                let messages = client.take_recipe_messages();
                return Ok(Shell {
                    client,
                    server: server.clone(),
                    events,
                    messages,
                    count: 0,
                });
            }
            Ok(Err(e)) => failures.push(format!("{server}: {}", client_error_text(&e))),
            Err(_) => failures.push(format!("{server}: timed out")),
        }
    }
    Err(format!(
        "ConnectionLoss: no server accepted a session ({})",
        failures.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_messages_print_as_json() {
        let m = RecipeMessage {
            module: "lock".into(),
            payload: rmp_serde::to_vec_named(&serde_json::json!({"path": "/l", "n": 2})).unwrap(),
            zxid: 5,
        };
        assert_eq!(format_message(&m), r#"RECIPE:: lock {"n":2,"path":"/l"}"#);
    }
}
