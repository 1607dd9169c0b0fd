//! The shell's commands (zkCli.sh spelling) and the `recipe` ones.

use std::future::Future;
use std::pin::Pin;

use wazoo_client::proto::{PathRequest, Request, Response, SetAclRequest};
use wazoo_client::{open_acl_unsafe, Client, ClientError};

use super::format::{format_acl, format_stat, parse_acl, zk_error_text};
use super::{Outcome, Shell};
use crate::recipe_cli::{client_error_text, format_table, json_to_msgpack, reply_to_text};

pub const HELP: &str = "\
wazoo cli --servers host:port[,host:port...] [--auth scheme:credentials] [-c cmd]
\tls [-s] [-w] path
\tget [-s] [-w] path
\tset [-s] [-v version] path data
\tcreate [-s] [-e] [-c] [-t ttl] path [data] [acl]
\tdelete [-v version] path
\tdeleteall path
\tstat path
\tgetAcl path
\tsetAcl path acl
\taddauth scheme auth
\tsync path
\twhoami
\tgetEphemerals [path]
\trecipe list [name]
\trecipe upload name file
\trecipe call name function [json]
\trecipe delete name [version]
\thelp
\tquit
";

/// A command's failure: the line printed on stderr.
type Res = Result<(), String>;

/// Splits leading `-x` / `-x VALUE` options from the positional words.
struct Opts {
    flags: Vec<char>,
    values: Vec<(char, String)>,
    args: Vec<String>,
}

fn parse_opts(words: &[String], with_value: &[char], allowed: &[char]) -> Result<Opts, String> {
    let mut o = Opts {
        flags: Vec::new(),
        values: Vec::new(),
        args: Vec::new(),
    };
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let mut cs = w.chars();
        if w.len() == 2 && cs.next() == Some('-') {
            let c = cs.next().unwrap();
            if with_value.contains(&c) {
                let v = it
                    .next()
                    .ok_or_else(|| format!("option -{c} needs a value"))?;
                o.values.push((c, v.clone()));
                continue;
            }
            if allowed.contains(&c) {
                o.flags.push(c);
                continue;
            }
            return Err(format!("unknown option -{c}"));
        }
        o.args.push(w.clone());
    }
    Ok(o)
}

impl Opts {
    fn has(&self, c: char) -> bool {
        self.flags.contains(&c)
    }
    fn value(&self, c: char) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.as_str())
    }
    fn int(&self, c: char, default: i64) -> Result<i64, String> {
        match self.value(c) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("-{c}: {v:?} is not a number")),
        }
    }
}

fn check_path(p: &str) -> Res {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(format!("Path must start with / character: {p}"))
    }
}

/// `[a, b, c]` as Java prints a list.
fn list_text(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn usage(u: &str) -> String {
    format!("usage: {u}")
}

/// Runs one tokenized command.
pub(super) async fn execute(shell: &mut Shell, words: &[String]) -> Outcome {
    let (cmd, rest) = (words[0].as_str(), &words[1..]);
    let r = match cmd {
        "quit" | "exit" => return Outcome::Quit,
        "help" | "h" | "?" => {
            print!("{HELP}");
            Ok(())
        }
        "ls" => ls(&shell.client, rest).await,
        "get" => get(&shell.client, rest).await,
        "set" => set(&shell.client, rest).await,
        "create" => create(&shell.client, rest).await,
        "delete" => delete(&shell.client, rest).await,
        "deleteall" | "rmr" => deleteall_cmd(&shell.client, rest).await,
        "stat" => stat(&shell.client, rest).await,
        "getAcl" => get_acl(&shell.client, rest).await,
        "setAcl" => set_acl(&shell.client, rest).await,
        "addauth" => addauth(&shell.client, rest).await,
        "sync" => sync(&shell.client, rest).await,
        "whoami" => whoami(&shell.client).await,
        "getEphemerals" => get_ephemerals(&shell.client, rest).await,
        "recipe" => recipe(&shell.client, rest).await,
        other => {
            eprint!("Unknown command: {other}\n{HELP}");
            return Outcome::Failed;
        }
    };
    match r {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            eprintln!("{e}");
            Outcome::Failed
        }
    }
}

async fn ls(c: &Client, w: &[String]) -> Res {
    let o = parse_opts(w, &[], &['s', 'w'])?;
    let [path] = o.args.as_slice() else {
        return Err(usage("ls [-s] [-w] path"));
    };
    check_path(path)?;
    let (mut children, stat) = c
        .get_children2(path, o.has('w'))
        .await
        .map_err(|e| zk_error_text(&e, path))?;
    children.sort();
    println!("{}", list_text(&children));
    if o.has('s') {
        print!("{}", format_stat(&stat));
    }
    Ok(())
}

async fn get(c: &Client, w: &[String]) -> Res {
    let o = parse_opts(w, &[], &['s', 'w'])?;
    let [path] = o.args.as_slice() else {
        return Err(usage("get [-s] [-w] path"));
    };
    check_path(path)?;
    let (data, stat) = c
        .get_data(path, o.has('w'))
        .await
        .map_err(|e| zk_error_text(&e, path))?;
    match data {
        Some(d) => println!("{}", String::from_utf8_lossy(&d)),
        None => println!("null"),
    }
    if o.has('s') {
        print!("{}", format_stat(&stat));
    }
    Ok(())
}

async fn set(c: &Client, w: &[String]) -> Res {
    let o = parse_opts(w, &['v'], &['s'])?;
    let [path, data] = o.args.as_slice() else {
        return Err(usage("set [-s] [-v version] path data"));
    };
    check_path(path)?;
    let version = o.int('v', -1)? as i32;
    let stat = c
        .set_data(path, data.as_bytes(), version)
        .await
        .map_err(|e| zk_error_text(&e, path))?;
    if o.has('s') {
        print!("{}", format_stat(&stat));
    }
    Ok(())
}

async fn create(c: &Client, w: &[String]) -> Res {
    const U: &str = "create [-s] [-e] [-c] [-t ttl] path [data] [acl]";
    let o = parse_opts(w, &['t'], &['s', 'e', 'c'])?;
    let (path, data, acl) = match o.args.as_slice() {
        [p] => (p, "", None),
        [p, d] => (p, d.as_str(), None),
        [p, d, a] => (p, d.as_str(), Some(a)),
        _ => return Err(usage(U)),
    };
    check_path(path)?;
    let acl = match acl {
        Some(a) => parse_acl(a)?,
        None => open_acl_unsafe(),
    };
    let (seq, eph, container) = (o.has('s'), o.has('e'), o.has('c'));
    let ttl = o.value('t').map(|_| o.int('t', 0)).transpose()?;
    if container && (seq || eph) {
        return Err("-c cannot be combined with -s or -e".into());
    }
    if ttl.is_some() && (eph || container) {
        return Err("TTLs can only be used with persistent nodes (-t with -e or -c)".into());
    }
    let created = if let Some(ttl) = ttl {
        let flags = if seq { 6 } else { 5 };
        c.create_ttl(path, data.as_bytes(), acl, flags, ttl)
            .await
            .map(|(p, _)| p)
    } else {
        let flags = if container {
            4
        } else {
            i32::from(eph) + 2 * i32::from(seq)
        };
        c.create(path, data.as_bytes(), acl, flags).await
    }
    .map_err(|e| zk_error_text(&e, path))?;
    println!("Created {created}");
    Ok(())
}

async fn delete(c: &Client, w: &[String]) -> Res {
    let o = parse_opts(w, &['v'], &[])?;
    let [path] = o.args.as_slice() else {
        return Err(usage("delete [-v version] path"));
    };
    check_path(path)?;
    let version = o.int('v', -1)? as i32;
    c.delete(path, version)
        .await
        .map_err(|e| zk_error_text(&e, path))
}

async fn deleteall_cmd(c: &Client, w: &[String]) -> Res {
    let [path] = w else {
        return Err(usage("deleteall path"));
    };
    check_path(path)?;
    deleteall(c, path.clone())
        .await
        .map_err(|(e, p)| zk_error_text(&e, &p))
}

/// The recursion's future; an error carries the path it happened on.
type BoxedDelete<'a> = Pin<Box<dyn Future<Output = Result<(), (ClientError, String)>> + Send + 'a>>;

/// Deletes `path` and everything under it (children first); nodes that vanish on the
/// way are fine.
fn deleteall(c: &Client, path: String) -> BoxedDelete<'_> {
    Box::pin(async move {
        let children = match c.get_children(&path, false).await {
            Ok(ch) => ch,
            Err(e) => return Err((e, path)),
        };
        for child in children {
            let p = if path == "/" {
                format!("/{child}")
            } else {
                format!("{path}/{child}")
            };
            match deleteall(c, p).await {
                Ok(()) => {}
                Err((ClientError::Zk(wazoo_client::proto::ErrorCode::NoNode), _)) => {}
                Err(e) => return Err(e),
            }
        }
        if path == "/" {
            return Ok(());
        }
        c.delete(&path, -1).await.map_err(|e| (e, path))
    })
}

async fn stat(c: &Client, w: &[String]) -> Res {
    let o = parse_opts(w, &[], &['w'])?;
    let [path] = o.args.as_slice() else {
        return Err(usage("stat [-w] path"));
    };
    check_path(path)?;
    match c.exists(path, o.has('w')).await {
        Ok(Some(s)) => {
            print!("{}", format_stat(&s));
            Ok(())
        }
        Ok(None) => Err(format!("Node does not exist: {path}")),
        Err(e) => Err(zk_error_text(&e, path)),
    }
}

async fn get_acl(c: &Client, w: &[String]) -> Res {
    let o = parse_opts(w, &[], &['s'])?;
    let [path] = o.args.as_slice() else {
        return Err(usage("getAcl [-s] path"));
    };
    check_path(path)?;
    match req(c, Request::GetAcl(PathRequest { path: path.clone() }), path).await? {
        Response::GetAcl { acl, stat } => {
            print!("{}", format_acl(&acl));
            if o.has('s') {
                print!("{}", format_stat(&stat));
            }
            Ok(())
        }
        other => Err(format!("unexpected reply {other:?}")),
    }
}

async fn set_acl(c: &Client, w: &[String]) -> Res {
    let o = parse_opts(w, &['v'], &['s'])?;
    let [path, acl] = o.args.as_slice() else {
        return Err(usage("setAcl [-s] [-v version] path acl"));
    };
    check_path(path)?;
    let acl = parse_acl(acl)?;
    let version = o.int('v', -1)? as i32;
    let r = req(
        c,
        Request::SetAcl(SetAclRequest {
            path: path.clone(),
            acl,
            version,
        }),
        path,
    )
    .await?;
    if let (true, Response::Stat(s)) = (o.has('s'), &r) {
        print!("{}", format_stat(s));
    }
    Ok(())
}

async fn addauth(c: &Client, w: &[String]) -> Res {
    let [scheme, auth] = w else {
        return Err(usage("addauth scheme auth"));
    };
    c.add_auth(scheme, auth.as_bytes())
        .await
        .map_err(|e| client_error_text(&e))
}

async fn sync(c: &Client, w: &[String]) -> Res {
    let [path] = w else {
        return Err(usage("sync path"));
    };
    check_path(path)?;
    req(c, Request::Sync(PathRequest { path: path.clone() }), path).await?;
    println!("Sync is OK");
    Ok(())
}

async fn whoami(c: &Client) -> Res {
    match req(c, Request::WhoAmI, "").await? {
        Response::WhoAmI(infos) => {
            println!("Auth scheme: User");
            for i in infos {
                println!("{}: {}", i.auth_scheme, i.user);
            }
            Ok(())
        }
        other => Err(format!("unexpected reply {other:?}")),
    }
}

async fn get_ephemerals(c: &Client, w: &[String]) -> Res {
    let path = match w {
        [] => "/".to_string(),
        [p] => p.clone(),
        _ => return Err(usage("getEphemerals [path]")),
    };
    check_path(&path)?;
    match req(
        c,
        Request::GetEphemerals(PathRequest { path: path.clone() }),
        &path,
    )
    .await?
    {
        Response::Ephemerals(mut e) => {
            e.sort();
            println!("{}", list_text(&e));
            Ok(())
        }
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// A raw request; an error code becomes zkCli's message for `path`.
async fn req(c: &Client, r: Request, path: &str) -> Result<Response, String> {
    match c.request(r).await {
        Ok((_, Ok(resp))) => Ok(resp),
        Ok((_, Err(code))) => Err(zk_error_text(&ClientError::Zk(code), path)),
        Err(e) => Err(zk_error_text(&e, path)),
    }
}

async fn recipe(c: &Client, w: &[String]) -> Res {
    const U: &str =
        "recipe list [name] | upload name file | call name function [json] | delete name [version]";
    let err = |e: ClientError| format!("error: {}", client_error_text(&e));
    match w.first().map(String::as_str) {
        Some("list") => {
            let name = match &w[1..] {
                [] => "",
                [n] => n.as_str(),
                _ => return Err(usage(U)),
            };
            let list = c.recipe_list(name).await.map_err(err)?;
            print!("{}", format_table(&list));
        }
        Some("upload") => {
            let [_, name, file] = w else {
                return Err(usage(U));
            };
            let module =
                std::fs::read(file).map_err(|e| format!("error: cannot read {file}: {e}"))?;
            let up = c.recipe_upload(name, &module).await.map_err(err)?;
            println!("{} version {} sha256 {}", up.name, up.version, up.sha256);
        }
        Some("call") => {
            if w.len() < 3 {
                return Err(usage(U));
            }
            // Unquoted JSON with spaces arrives as several words.
            let json = if w.len() > 3 {
                w[3..].join(" ")
            } else {
                "null".to_string()
            };
            let args = json_to_msgpack(&json).map_err(|e| format!("error: BadArguments: {e}"))?;
            let reply = c.recipe_call(&w[1], -1, &w[2], args).await.map_err(err)?;
            if reply.is_empty() {
                println!("(empty reply)");
            } else {
                println!("{}", reply_to_text(&reply));
            }
        }
        Some("delete") => {
            let (name, version) = match &w[1..] {
                [n] => (n, -1),
                [n, v] => (
                    n,
                    v.parse::<i32>()
                        .map_err(|_| format!("version {v:?} is not a number"))?,
                ),
                _ => return Err(usage(U)),
            };
            c.recipe_delete(name, version).await.map_err(err)?;
        }
        _ => return Err(usage(U)),
    }
    Ok(())
}
