//! `wazoo recipe upload|list|call|delete|runtime|adopt-runtime`: the recipe command
//! line (client side).
//!
//! Each command opens one session on the first server of `--servers` that accepts a
//! connection, optionally authenticates (`--auth digest:user:pass`), performs one
//! recipe operation (docs/PROTOCOL.md, "Recipe extension") and closes the session.
//! Failures print `error: NAME: message` (the error code's stable name and the
//! server's reason) on stderr and exit with status 1.

use serde::de::{self, Deserializer as _, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use wazoo_client::{Client, ClientError, ConnectOptions, RecipeInfo};

/// Port assumed for a `--servers` entry without one (ZooKeeper's client port).
pub const DEFAULT_PORT: u16 = 2181;
/// How long one server gets to accept the connection and the session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requested session timeout. The client also gives up on a server that sends
/// nothing (not even ping replies, which queue behind a slow reply) for this long,
/// so it is generous: an upload's validation can take a while.
const SESSION_TIMEOUT_MS: i32 = 40_000;

#[derive(clap::Subcommand, Debug)]
pub enum RecipeCommand {
    /// Upload a wasm module as the next version of recipe NAME; prints
    /// `NAME version N sha256 HEX`.
    Upload(UploadArgs),
    /// List recipes (every recipe, or the versions of NAME).
    List(ListArgs),
    /// Call FUNCTION of recipe NAME with JSON arguments; prints the reply as JSON.
    Call(CallArgs),
    /// Delete recipe NAME (every version, or only --version N).
    Delete(DeleteArgs),
    /// Show the determinism profile the cluster pins and the one of the server
    /// answering, and whether they match.
    Runtime(RuntimeArgs),
    /// Pin the answering server's determinism profile as the cluster's, after every
    /// server was upgraded to a build whose profile changed; prints the pinned id.
    AdoptRuntime(AdoptRuntimeArgs),
}

/// Where and as whom to connect.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Servers to try in order, `host:port` (comma-separated or repeated); the first
    /// that accepts a session is used. A missing port means 2181.
    #[arg(long, required = true, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub servers: Vec<String>,
    /// Authenticate before the operation, `SCHEME:CREDENTIALS`, e.g.
    /// `digest:admin:secret` (uploads and deletes need ADMIN when ACLs require it).
    #[arg(long, value_name = "SCHEME:CREDENTIALS")]
    pub auth: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Recipe name: `[A-Za-z0-9_.-]{1,64}`.
    pub name: String,
    /// The compiled module (`.wasm`).
    pub file: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Only this recipe's versions (default: every recipe).
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Recipe version to run (default: the latest).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub version: i32,
    /// Recipe name.
    pub name: String,
    /// The recipe function to call.
    pub function: String,
    /// Arguments as JSON, sent as MessagePack (objects become maps).
    #[arg(default_value = "null")]
    pub args: String,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Recipe name.
    pub name: String,
    /// Delete only this version (default: every version).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub version: i32,
}

#[derive(clap::Args, Debug)]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(clap::Args, Debug)]
pub struct AdoptRuntimeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Why a command failed; `Display` is the line printed after `error: `.
#[derive(Debug)]
pub enum CliError {
    /// Bad command-line input, found before connecting.
    Usage(String),
    /// No server of the list accepted a session.
    Connect(String),
    /// The server (or the connection) failed the operation.
    Client(ClientError),
    /// Anything else (reading the module file...).
    Other(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Connect(m) | CliError::Other(m) => f.write_str(m),
            CliError::Client(e) => f.write_str(&client_error_text(e)),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(e)
    }
}

/// `NAME: message` for server errors (the code's stable name first), as printed.
pub fn client_error_text(e: &ClientError) -> String {
    match e {
        // Already `NAME` or `NAME: message`.
        ClientError::Recipe { .. } => e.to_string(),
        ClientError::Zk(code) => code.name().to_string(),
        ClientError::ConnectionClosed => "ConnectionLoss: connection closed".to_string(),
        other => other.to_string(),
    }
}

/// Runs one recipe command and reports the outcome as the process's exit status.
pub async fn run(cmd: RecipeCommand) -> ExitCode {
    match execute(cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one recipe command, printing its result on stdout.
pub async fn execute(cmd: RecipeCommand) -> Result<(), CliError> {
    match cmd {
        RecipeCommand::Upload(a) => {
            let module = std::fs::read(&a.file)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", a.file.display())))?;
            let client = connect(&a.conn).await?;
            let up = client.recipe_upload(&a.name, &module).await;
            finish(client).await;
            let up = up?;
            println!("{} version {} sha256 {}", up.name, up.version, up.sha256);
        }
        RecipeCommand::List(a) => {
            let client = connect(&a.conn).await?;
            let list = client.recipe_list(a.name.as_deref().unwrap_or("")).await;
            finish(client).await;
            print!("{}", format_table(&list?));
        }
        RecipeCommand::Call(a) => {
            let args = json_to_msgpack(&a.args).map_err(CliError::Usage)?;
            let client = connect(&a.conn).await?;
            let reply = client
                .recipe_call(&a.name, a.version, &a.function, args)
                .await;
            finish(client).await;
            let reply = reply?;
            if reply.is_empty() {
                eprintln!("(empty reply)");
            } else {
                println!("{}", reply_to_text(&reply));
            }
        }
        RecipeCommand::Delete(a) => {
            let client = connect(&a.conn).await?;
            let r = client.recipe_delete(&a.name, a.version).await;
            finish(client).await;
            r?;
        }
        RecipeCommand::Runtime(a) => {
            let client = connect(&a.conn).await?;
            let info = client.recipe_runtime_info().await;
            finish(client).await;
            let (pinned, local) = info?;
            print!("{}", format_runtime_info(&pinned, &local));
        }
        RecipeCommand::AdoptRuntime(a) => {
            let client = connect(&a.conn).await?;
            let pinned = client.recipe_adopt_runtime().await;
            finish(client).await;
            println!("pinned: {}", pinned?);
        }
    }
    Ok(())
}

/// What `wazoo recipe runtime` prints: the pinned profile, this server's, and whether
/// they match (and what to do when they do not).
pub fn format_runtime_info(pinned: &str, local: &str) -> String {
    let shown_local = if local.is_empty() {
        "(no recipe runtime)"
    } else {
        local
    };
    let mut out = String::new();
    if pinned.is_empty() {
        out.push_str("pinned: (none yet; the first upload pins this server's profile)\n");
        out.push_str(&format!("this server: {shown_local}\n"));
    } else {
        out.push_str(&format!("pinned: {pinned}\n"));
        out.push_str(&format!("this server: {shown_local}\n"));
        if pinned == local {
            out.push_str("match: yes\n");
        } else {
            out.push_str(
                "match: no (recipe calls proposed by this server fail with \
                 RecipeRuntimeMismatch; once every server is upgraded, run `wazoo recipe \
                 adopt-runtime`)\n",
            );
        }
    }
    out
}

/// Ends the session politely; a failure here changes nothing for the user.
async fn finish(client: Client) {
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, client.close()).await;
}

/// Connects to the first server of the list that accepts a session, then
/// authenticates if asked to.
async fn connect(conn: &ConnArgs) -> Result<Client, CliError> {
    let servers = parse_servers(&conn.servers).map_err(CliError::Usage)?;
    let auth = conn
        .auth
        .as_deref()
        .map(parse_auth)
        .transpose()
        .map_err(CliError::Usage)?;
    let opts = ConnectOptions {
        timeout_ms: SESSION_TIMEOUT_MS,
        ..ConnectOptions::default()
    };
    let mut failures = Vec::new();
    let mut client = None;
    for server in &servers {
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(server, opts.clone())).await {
            Ok(Ok(c)) => {
                client = Some(c);
                break;
            }
            Ok(Err(e)) => failures.push(format!("{server}: {}", client_error_text(&e))),
            Err(_) => failures.push(format!("{server}: timed out")),
        }
    }
    let Some(client) = client else {
        return Err(CliError::Connect(format!(
            "ConnectionLoss: no server accepted a session ({})",
            failures.join("; ")
        )));
    };
    if let Some((scheme, credentials)) = auth {
        if let Err(e) = client.add_auth(&scheme, &credentials).await {
            return Err(CliError::Client(e));
        }
    }
    Ok(client)
}

/// `--servers` values (each possibly comma-separated) as `host:port` addresses, in
/// order. A missing port is [`DEFAULT_PORT`]; IPv6 hosts are bracketed (`[::1]:2181`).
pub fn parse_servers(values: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for entry in values.iter().flat_map(|v| v.split(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if entry.contains('/') {
            return Err(format!(
                "--servers: {entry:?}: a chroot suffix is not supported"
            ));
        }
        let addr = if entry.starts_with('[') {
            // [v6]:port or [v6]
            match entry.find(']') {
                Some(end) if end == entry.len() - 1 => format!("{entry}:{DEFAULT_PORT}"),
                Some(end) if entry[end + 1..].starts_with(':') => {
                    check_port(entry, &entry[end + 2..])?;
                    entry.to_string()
                }
                _ => return Err(format!("--servers: {entry:?} is not [host]:port")),
            }
        } else {
            match entry.split_once(':') {
                None => format!("{entry}:{DEFAULT_PORT}"),
                Some((host, port)) => {
                    if host.is_empty() || port.contains(':') {
                        return Err(format!(
                            "--servers: {entry:?} is not host:port (bracket IPv6 hosts: [::1]:2181)"
                        ));
                    }
                    check_port(entry, port)?;
                    entry.to_string()
                }
            }
        };
        out.push(addr);
    }
    if out.is_empty() {
        return Err("--servers: give at least one host:port".into());
    }
    Ok(out)
}

fn check_port(entry: &str, port: &str) -> Result<(), String> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("--servers: {entry:?}: bad port {port:?}")),
    }
}

/// `--auth SCHEME:CREDENTIALS` → the auth packet's scheme and bytes
/// (`digest:user:pass` → `("digest", b"user:pass")`).
pub fn parse_auth(s: &str) -> Result<(String, Vec<u8>), String> {
    match s.split_once(':') {
        Some((scheme, cred)) if !scheme.is_empty() && !cred.is_empty() => {
            Ok((scheme.to_string(), cred.as_bytes().to_vec()))
        }
        _ => Err(format!(
            "--auth: {s:?} is not SCHEME:CREDENTIALS (e.g. digest:user:password)"
        )),
    }
}

/// JSON text → MessagePack, objects as maps (`rmp_serde::to_vec_named`).
pub fn json_to_msgpack(json: &str) -> Result<Vec<u8>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("invalid JSON arguments: {e}"))?;
    rmp_serde::to_vec_named(&v).map_err(|e| format!("cannot encode the arguments: {e}"))
}

/// MessagePack → JSON. Binary becomes an array of byte values, map keys that are not
/// strings become their JSON text, NaN/infinite floats become null. `None` unless
/// `bytes` is exactly one MessagePack value.
pub fn msgpack_to_json(bytes: &[u8]) -> Option<serde_json::Value> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let v = de.deserialize_any(JsonVisitor).ok()?;
    (de.position() == bytes.len() as u64).then_some(v)
}

/// What `wazoo recipe call` prints for a reply: its JSON, or its hex if it is not
/// MessagePack.
pub fn reply_to_text(bytes: &[u8]) -> String {
    match msgpack_to_json(bytes) {
        Some(v) => v.to_string(),
        None => hex(bytes),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds a `serde_json::Value` from any self-describing input, accepting what JSON
/// lacks (bytes, non-string keys).
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Array(
            v.iter().map(|&b| serde_json::Value::from(b)).collect(),
        ))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // MessagePack extension values arrive as a newtype around (type, bytes).
        d.deserialize_any(JsonVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element_seed(JsonSeed)? {
            v.push(x);
        }
        Ok(serde_json::Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = serde_json::Map::new();
        while let Some((k, v)) = map.next_entry_seed(JsonSeed, JsonSeed)? {
            let key = match k {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            m.insert(key, v);
        }
        Ok(serde_json::Value::Object(m))
    }
}

struct JsonSeed;

impl<'de> de::DeserializeSeed<'de> for JsonSeed {
    type Value = serde_json::Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// The `wazoo recipe list` table: name, version, sha256 prefix, size, created (UTC).
pub fn format_table(infos: &[RecipeInfo]) -> String {
    let header = ["NAME", "VERSION", "SHA256", "SIZE", "CREATED"];
    let rows: Vec<[String; 5]> = infos
        .iter()
        .map(|i| {
            [
                i.name.clone(),
                i.version.to_string(),
                i.sha256.chars().take(12).collect(),
                i.size.to_string(),
                format_ms_utc(i.ctime),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i == 4 {
                l.push_str(c);
            } else if i == 1 || i == 3 {
                // Numbers right-aligned.
                l.push_str(&format!("{c:>w$}  "));
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    out
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn format_ms_utc(ms: i64) -> String {
    let (y, m, d, h, mi, s, _) = crate::tools::civil_utc(ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn servers_lists() {
        assert_eq!(
            parse_servers(&s(&["a:1,b:2", " c:3 "])).unwrap(),
            s(&["a:1", "b:2", "c:3"])
        );
        assert_eq!(
            parse_servers(&s(&["localhost", "[::1]:2182", "[::1]", ",,x:9,"])).unwrap(),
            s(&["localhost:2181", "[::1]:2182", "[::1]:2181", "x:9"])
        );
        for bad in [
            "",
            ",",
            "a:",
            "a:0",
            "a:70000",
            "a:b",
            ":1",
            "::1",
            "a:1/chroot",
            "[::1",
        ] {
            assert!(parse_servers(&s(&[bad])).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn auth_flag() {
        assert_eq!(
            parse_auth("digest:admin:s3cret").unwrap(),
            ("digest".to_string(), b"admin:s3cret".to_vec())
        );
        for bad in ["digest", "digest:", ":x", ""] {
            assert!(parse_auth(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_arguments_become_named_msgpack() {
        let b = json_to_msgpack(r#"{"path":"/a","n":3}"#).unwrap();
        // fixmap of 2, keys as strings.
        assert_eq!(b[0], 0x82);
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Args {
            path: String,
            n: u32,
        }
        let a: Args = rmp_serde::from_slice(&b).unwrap();
        assert_eq!(
            a,
            Args {
                path: "/a".into(),
                n: 3
            }
        );
        assert_eq!(json_to_msgpack("null").unwrap(), vec![0xc0]);
        assert_eq!(json_to_msgpack("[1,-2]").unwrap(), vec![0x92, 0x01, 0xfe]);
        assert!(json_to_msgpack("{nope")
            .unwrap_err()
            .contains("invalid JSON"));
    }

    #[test]
    fn replies_round_trip_to_json() {
        for v in [
            json!(null),
            json!(true),
            json!(-5),
            json!(u64::MAX),
            json!(1.5),
            json!("hé"),
            json!([1, "x", [], {}]),
            json!({"a": {"b": [1, 2, null]}, "c": "d"}),
        ] {
            let b = rmp_serde::to_vec_named(&v).unwrap();
            assert_eq!(msgpack_to_json(&b), Some(v.clone()), "{v}");
            assert_eq!(reply_to_text(&b), v.to_string());
        }
    }

    #[test]
    fn replies_json_can_not_say_directly() {
        // bin8 of 3 bytes → array of numbers.
        assert_eq!(
            msgpack_to_json(&[0xc4, 3, 1, 2, 255]),
            Some(json!([1, 2, 255]))
        );
        // A struct with a byte field, as a recipe would send it.
        #[derive(serde::Serialize)]
        struct R {
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
            ok: bool,
        }
        let b = rmp_serde::to_vec_named(&R {
            data: vec![9, 8],
            ok: true,
        })
        .unwrap();
        assert_eq!(reply_to_text(&b), r#"{"data":[9,8],"ok":true}"#);
        // Integer map keys become strings.
        assert_eq!(
            msgpack_to_json(&[0x81, 0x01, 0xa1, b'x']),
            Some(json!({"1": "x"}))
        );
        // fixext1: a newtype around (type, data).
        assert!(msgpack_to_json(&[0xd4, 0x05, 0xaa]).is_some());
        // A tuple (array) of an unsigned and a float32.
        assert_eq!(
            msgpack_to_json(&[0x92, 0xcc, 200, 0xca, 0x3f, 0x80, 0, 0]),
            Some(json!([200, 1.0]))
        );
    }

    #[test]
    fn undecodable_replies_print_as_hex() {
        assert_eq!(reply_to_text(&[0xc1]), "c1");
        // Truncated: str8 announcing 5 bytes, 1 present.
        assert_eq!(reply_to_text(&[0xd9, 5, b'a']), "d905 61".replace(' ', ""));
        // Two values where one is expected.
        assert_eq!(reply_to_text(&[0x01, 0x02]), "0102");
        assert_eq!(msgpack_to_json(&[]), None);
    }

    #[test]
    fn table_and_dates() {
        assert_eq!(format_ms_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_ms_utc(1_795_461_972_999), "2026-11-23T19:26:12Z");
        assert_eq!(format_ms_utc(-1), "1969-12-31T23:59:59Z");
        let t = format_table(&[
            RecipeInfo {
                name: "lock".into(),
                version: 12,
                sha256: "0123456789abcdef".repeat(4),
                size: 34567,
                ctime: 0,
                zxid: 1,
            },
            RecipeInfo {
                name: "a-much-longer-name".into(),
                version: 1,
                sha256: "ff".repeat(32),
                size: 9,
                ctime: 951_782_400_000,
                zxid: 2,
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME "));
        assert!(lines[1].contains("lock") && lines[1].contains(" 12 "));
        assert!(lines[1].contains("0123456789ab ") && !lines[1].contains("0123456789abc"));
        assert!(lines[1].ends_with("1970-01-01T00:00:00Z"));
        assert!(lines[2].contains("2000-02-29T00:00:00Z"));
        // Columns line up.
        let col = lines[0].find("VERSION").unwrap();
        assert_eq!(lines[2].find("a-much").unwrap(), 0);
        assert!(lines[1].len() == lines[2].len() && col > 0);
        assert_eq!(format_table(&[]).lines().count(), 1);
    }

    #[test]
    fn runtime_info_says_whether_profiles_match() {
        let t = format_runtime_info("a", "a");
        assert_eq!(t, "pinned: a\nthis server: a\nmatch: yes\n");
        let t = format_runtime_info("a", "b");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(&lines[..2], ["pinned: a", "this server: b"]);
        assert!(lines[2].starts_with("match: no") && lines[2].contains("adopt-runtime"));
        let t = format_runtime_info("", "b");
        assert!(t.starts_with("pinned: (none"), "{t}");
        assert!(t.contains("this server: b\n") && !t.contains("match"));
    }

    #[test]
    fn errors_print_stable_names() {
        let e = CliError::Client(ClientError::Recipe {
            code: wazoo_proto::ErrorCode::RecipeFailed,
            message: "unknown function x".into(),
        });
        assert_eq!(
            format!("error: {e}"),
            "error: RecipeFailed: unknown function x"
        );
        let e = CliError::Client(ClientError::Zk(wazoo_proto::ErrorCode::AuthFailed));
        assert_eq!(e.to_string(), "AuthFailed");
    }

    #[test]
    fn command_line_parses() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(subcommand)]
            cmd: RecipeCommand,
        }
        let t = T::try_parse_from([
            "t",
            "call",
            "--servers",
            "a:1,b:2",
            "--version",
            "3",
            "lock",
            "acquire",
            r#"{"x":1}"#,
        ])
        .unwrap();
        let RecipeCommand::Call(c) = t.cmd else {
            panic!()
        };
        assert_eq!(
            (c.version, c.name.as_str(), c.function.as_str()),
            (3, "lock", "acquire")
        );
        assert_eq!(c.conn.servers, s(&["a:1,b:2"]));
        let t = T::try_parse_from(["t", "delete", "--servers", "a:1", "lock"]).unwrap();
        let RecipeCommand::Delete(d) = t.cmd else {
            panic!()
        };
        assert_eq!(d.version, -1);
        let t = T::try_parse_from([
            "t",
            "upload",
            "--servers",
            "a:1",
            "--auth",
            "digest:u:p",
            "lock",
            "x.wasm",
        ])
        .unwrap();
        let RecipeCommand::Upload(u) = t.cmd else {
            panic!()
        };
        assert_eq!(u.conn.auth.as_deref(), Some("digest:u:p"));
        assert!(
            T::try_parse_from(["t", "list"]).is_err(),
            "--servers is required"
        );
        let t = T::try_parse_from(["t", "list", "--servers", "a:1"]).unwrap();
        assert!(matches!(
            t.cmd,
            RecipeCommand::List(ListArgs { name: None, .. })
        ));
        let t = T::try_parse_from(["t", "runtime", "--servers", "a:1"]).unwrap();
        assert!(matches!(t.cmd, RecipeCommand::Runtime(_)));
        let t = T::try_parse_from([
            "t",
            "adopt-runtime",
            "--servers",
            "a:1",
            "--auth",
            "digest:admin:pw",
        ])
        .unwrap();
        let RecipeCommand::AdoptRuntime(a) = t.cmd else {
            panic!()
        };
        assert_eq!(a.conn.auth.as_deref(), Some("digest:admin:pw"));
        assert!(T::try_parse_from(["t", "adopt-runtime"]).is_err());
    }
}
