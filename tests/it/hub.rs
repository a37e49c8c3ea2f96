//! The `hf` source against a real HTTP server on 127.0.0.1 that behaves like the Hugging Face
//! hub: resolve URLs answer with a redirect to a CDN path carrying `X-Linked-Etag`,
//! `X-Linked-Size` and `X-Repo-Commit`; the CDN honours ranges; the listing endpoint lists a
//! repo's files; gated repos answer 401 without the token; unknown things answer 404 with the
//! hub's `X-Error-Code`. Faults (a connection dropped mid-file, corrupted bytes, slow transfer)
//! are injected by the server. The GGUF files it serves are real ones made by quantbench.
use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{stderr, stdout};
use assert_cmd::Command;
use serde_json::Value;
use sha2::{Digest, Sha256};

const TOKEN: &str = "hf_test_SECRET_token_4242";

#[derive(Default, Clone)]
struct Repo {
    commit: String,
    files: BTreeMap<String, Arc<Vec<u8>>>,
    gated: bool,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    /// CDN: close the connection after this many bytes of the named file, once.
    drop_after: Option<(String, usize)>,
    /// CDN: flip a byte in the named file's body.
    corrupt: Option<String>,
    /// CDN: sleep this long per 64 KiB sent.
    slow: Option<Duration>,
    /// Hub: answer this many resolve requests with 503 first.
    fail_next: u32,
    /// Hub (hostile): this `X-Repo-Commit` on every resolve answer.
    commit_override: Option<String>,
    /// Hub (hostile): redirect resolve requests here (`{sha}` = the file's sha256).
    location_override: Option<String>,
    /// CDN (hostile): the named file's body goes on forever, with no Content-Length.
    endless: Option<String>,
    /// Hub (hostile): this `X-Linked-Size` on every resolve answer.
    size_override: Option<u64>,
    /// Every request: (method, path, Range header, had the token).
    log: Vec<(String, String, Option<String>, bool)>,
}

struct FakeHub {
    url: String,
    state: Arc<Mutex<State>>,
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

impl FakeHub {
    /// The Range header of every request to the CDN origin, in order.
    fn cdn_ranges(&self) -> Vec<Option<String>> {
        self.log()
            .into_iter()
            .filter(|l| l.1.starts_with("/cdn/"))
            .map(|l| l.2)
            .collect()
    }

    /// Two listeners, as on the real hub: the hub itself, and the CDN its resolve URLs redirect
    /// to on another origin (another port here), which clients must not send the token to.
    fn start() -> FakeHub {
        FakeHub::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn start_on(hub: TcpListener) -> FakeHub {
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", hub.local_addr().unwrap());
        let cdn_url = format!("http://{}", cdn.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        for listener in [hub, cdn] {
            let (st, cdn_url) = (state.clone(), cdn_url.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let (st, cdn_url) = (st.clone(), cdn_url.clone());
                    std::thread::spawn(move || {
                        let _ = serve(conn, &st, &cdn_url);
                    });
                }
            });
        }
        FakeHub { url, state }
    }

    fn add_repo(&self, name: &str, files: &[(&str, Vec<u8>)], gated: bool) -> String {
        let commit = sha(name.as_bytes())[..40].to_string();
        self.state.lock().unwrap().repos.insert(
            name.to_string(),
            Repo {
                commit: commit.clone(),
                files: files
                    .iter()
                    .map(|(n, b)| (n.to_string(), Arc::new(b.clone())))
                    .collect(),
                gated,
            },
        );
        commit
    }

    fn log(&self) -> Vec<(String, String, Option<String>, bool)> {
        self.state.lock().unwrap().log.clone()
    }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h += &format!("{k}: {v}\r\n");
    }
    if !headers.iter().any(|(k, _)| *k == "Content-Length") {
        h += &format!("Content-Length: {}\r\n", body.len());
    }
    h += "\r\n";
    s.write_all(h.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

fn not_found(s: &mut TcpStream, code: &str) -> std::io::Result<()> {
    respond(
        s,
        "404 Not Found",
        &[("X-Error-Code", code.into())],
        b"not found",
    )
}

fn serve(mut s: TcpStream, st: &Mutex<State>, cdn: &str) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let authed =
        headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));
    let range = headers.get("range").cloned();
    let mut state = st.lock().unwrap();
    state
        .log
        .push((method.clone(), path.clone(), range.clone(), authed));

    // /api/models/OWNER/NAME/revision/REV
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let segs: Vec<&str> = rest.splitn(4, '/').collect();
        let name = format!("{}/{}", segs[0], segs.get(1).unwrap_or(&""));
        let Some(repo) = state.repos.get(&name).cloned() else {
            drop(state);
            return not_found(&mut s, "RepoNotFound");
        };
        drop(state);
        if repo.gated && !authed {
            return respond(&mut s, "401 Unauthorized", &[], b"gated");
        }
        let body = serde_json::json!({
            "id": name,
            "sha": repo.commit,
            "siblings": repo.files.keys().map(|f| serde_json::json!({"rfilename": f})).collect::<Vec<_>>(),
        });
        return respond(
            &mut s,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.to_string().as_bytes(),
        );
    }

    // /cdn/SHA
    if let Some(blob) = path.strip_prefix("/cdn/") {
        let found = state
            .repos
            .values()
            .flat_map(|r| r.files.iter())
            .find(|(_, b)| sha(b) == blob)
            .map(|(n, b)| (n.clone(), b.clone()));
        let Some((name, bytes)) = found else {
            drop(state);
            return not_found(&mut s, "EntryNotFound");
        };
        let mut body = (*bytes).clone();
        if state.corrupt.as_deref() == Some(name.as_str()) {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
        }
        let start: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let drop_at = match &state.drop_after {
            Some((f, n)) if *f == name => {
                let n = *n;
                state.drop_after = None;
                Some(n)
            }
            _ => None,
        };
        let slow = state.slow;
        let endless = state.endless.as_deref() == Some(name.as_str());
        drop(state);
        if endless {
            // the file, then more of it, forever, until the client hangs up
            s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            loop {
                s.write_all(&body)?;
            }
        }
        if start >= body.len() && !body.is_empty() {
            return respond(&mut s, "416 Range Not Satisfiable", &[], b"");
        }
        let total = body.len();
        let part = &body[start..];
        let (status, mut hdrs) = if range.is_some() {
            (
                "206 Partial Content",
                vec![(
                    "Content-Range",
                    format!("bytes {start}-{}/{total}", total - 1),
                )],
            )
        } else {
            ("200 OK", vec![])
        };
        hdrs.push(("Content-Length", part.len().to_string()));
        let mut h = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (k, v) in &hdrs {
            h += &format!("{k}: {v}\r\n");
        }
        h += "\r\n";
        s.write_all(h.as_bytes())?;
        let limit = drop_at.map_or(part.len(), |n| n.min(part.len()));
        for chunk in part[..limit].chunks(64 << 10) {
            s.write_all(chunk)?;
            if let Some(d) = slow {
                std::thread::sleep(d);
            }
        }
        // a dropped connection: stop short of Content-Length
        return s.flush();
    }

    // /OWNER/NAME/resolve/REV/FILE
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() == 5 && segs[2] == "resolve" {
        let name = format!("{}/{}", segs[0], segs[1]);
        let rev = percent_decode(segs[3]);
        let file = percent_decode(segs[4]);
        let Some(repo) = state.repos.get(&name).cloned() else {
            drop(state);
            return not_found(&mut s, "RepoNotFound");
        };
        if state.fail_next > 0 {
            state.fail_next -= 1;
            drop(state);
            return respond(&mut s, "503 Service Unavailable", &[], b"busy");
        }
        drop(state);
        if repo.gated && !authed {
            return respond(&mut s, "401 Unauthorized", &[], b"gated");
        }
        if rev != "main" && rev != repo.commit {
            return not_found(&mut s, "RevisionNotFound");
        }
        let Some(bytes) = repo.files.get(&file) else {
            return not_found(&mut s, "EntryNotFound");
        };
        let sum = sha(bytes);
        let (commit, location, size) = {
            let st = st.lock().unwrap();
            (
                st.commit_override.clone().unwrap_or(repo.commit.clone()),
                st.location_override
                    .as_ref()
                    .map_or_else(|| format!("{cdn}/cdn/{sum}"), |l| l.replace("{sha}", &sum)),
                st.size_override.unwrap_or(bytes.len() as u64),
            )
        };
        return respond(
            &mut s,
            "302 Found",
            &[
                ("Location", location),
                ("X-Repo-Commit", commit),
                ("X-Linked-Etag", format!("\"{sum}\"")),
                ("X-Linked-Size", size.to_string()),
                ("ETag", "\"W/not-the-sha\"".into()),
            ],
            b"",
        );
    }
    drop(state);
    not_found(&mut s, "")
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A listener that answers 404 to everything and records, per request, whether it carried the
/// test token: a host that must never see it.
fn evil_listener(listener: TcpListener) -> (String, Arc<Mutex<Vec<bool>>>) {
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut token = false;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                token |= h.contains(TOKEN);
            }
            log.lock().unwrap().push(token);
            let _ = not_found(&mut conn, "");
        }
    });
    (url, seen)
}

/// A hub port P and a free port whose decimal digits start with P's (P·10 + d): the pair that
/// fooled the old string-prefix origin check.
fn prefix_ports() -> (TcpListener, TcpListener) {
    for p in (2000u16..6500).step_by(37) {
        let Ok(hub) = TcpListener::bind(("127.0.0.1", p)) else {
            continue;
        };
        for d in 0..10u16 {
            if let Ok(other) = TcpListener::bind(("127.0.0.1", p * 10 + d)) {
                return (hub, other);
            }
        }
    }
    panic!("no free port pair")
}

// ---- test helpers ------------------------------------------------------------------------------

/// A [`common::Scratch`] whose quantbench talks to a fake hub, with a hub cache of its own.
struct Scratch {
    base: common::Scratch,
    hub_url: String,
}

/// Real tiny GGUF files (F16, Q8_0, Q4_K_M), made once by quantbench itself.
fn tiny_files() -> &'static BTreeMap<String, Vec<u8>> {
    static FILES: std::sync::OnceLock<BTreeMap<String, Vec<u8>>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let s = common::Scratch::new();
        s.config("schema = 1\n[[model]]\nname = \"t\"\nsynthetic = \"tiny\"\n");
        let out = s.cmd().arg("fetch").output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        ["F16", "Q8_0", "Q4_K_M"]
            .iter()
            .map(|q| {
                let p = s
                    .cache()
                    .join(format!("synthetic/tiny-seed0-w1/tiny-{q}.gguf"));
                (q.to_string(), std::fs::read(p).unwrap())
            })
            .collect()
    })
}

fn tiny(q: &str) -> Vec<u8> {
    tiny_files()[q].clone()
}

impl Scratch {
    fn new(hub: &FakeHub) -> Self {
        Scratch {
            base: common::Scratch::new(),
            hub_url: hub.url.clone(),
        }
    }
    fn path(&self) -> &Path {
        self.base.path()
    }
    fn hub_cache(&self) -> PathBuf {
        self.path().join("hf-cache")
    }
    fn config(&self, models: &str) {
        self.base.config(&format!(
            // quality (on by default for hub models) is tested in tests/quality.rs
            "schema = 1\n[defaults]\nn_gen = 4\nn_prompt = 8\nrepetitions = 1\nwarmup = 0\nquality = false\n{models}"
        ));
    }
    /// quantbench (a plain `std` process) with the hub environment: this fake hub, its own hub
    /// cache, quick retries, and no token, HF_HOME or offline switch from outside.
    fn process(&self) -> std::process::Command {
        // common::process clears every hub variable, the proxies and HOME of the environment
        let mut c = common::process(self.path(), &self.base.cache());
        c.env("HF_ENDPOINT", &self.hub_url)
            .env("HF_HUB_CACHE", self.hub_cache())
            .env("QUANTBENCH_HUB_RETRIES", "3")
            .env("QUANTBENCH_HUB_BACKOFF_MS", "20");
        c
    }
    fn cmd(&self) -> Command {
        Command::from_std(self.process())
    }
    /// `quantbench ARGS` (the subcommand is in `args`, unlike [`common::Scratch::run`]).
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
    /// results.json of the latest run.
    fn report(&self) -> Value {
        let dir = std::fs::read_dir(self.path().join("reports"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap();
        common::json(&dir.join("results.json"))
    }
    /// The cells of the latest run.
    fn cells(&self) -> Vec<Value> {
        common::cells(&self.report()).clone()
    }
}

// ---- tests -----------------------------------------------------------------------------------

#[test]
fn happy_path_measures_and_lays_out_the_cache_like_the_hub() {
    let hub = FakeHub::start();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("tiny-F16.gguf", tiny("F16")),
        ("tiny-Q8_0.gguf", tiny("Q8_0")),
        ("tiny-Q4_K_M.gguf", tiny("Q4_K_M")),
        ("README.md", b"# tiny".to_vec()),
    ];
    let commit = hub.add_repo("acme/tiny-GGUF", &files, false);
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"tiny\"\nhf = \"acme/tiny-GGUF\"\nfile = \"tiny-{QUANT}.gguf\"\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = s.report();
    assert_eq!(r["synthetic_weights"], false);
    for (c, (name, bytes)) in common::cells(&r).iter().zip(&files) {
        assert_eq!(c["status"], "ok", "{c}");
        let o = &c["origin"];
        assert_eq!(o["kind"], "hf");
        assert_eq!(o["repo"], "acme/tiny-GGUF");
        assert_eq!(o["revision"], "main");
        assert_eq!(o["commit"], commit.as_str());
        assert_eq!(o["sha256"], sha(bytes).as_str());
        assert!(o["path"].as_str().unwrap().ends_with(name));
    }
    let csv = std::fs::read_to_string(s.base.run_dir().join("results.csv")).unwrap();
    assert!(csv.contains(&commit), "the commit is in every CSV row");

    // the cache, file by file
    let repo = s.hub_cache().join("models--acme--tiny-GGUF");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        commit
    );
    for (name, bytes) in &files[..3] {
        let blob = repo.join("blobs").join(sha(bytes));
        assert_eq!(std::fs::read(&blob).unwrap(), *bytes);
        let link = repo.join("snapshots").join(&commit).join(name);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from(format!("../../blobs/{}", sha(bytes)))
        );
    }
    let blobs = std::fs::read_dir(repo.join("blobs")).unwrap().count();
    assert_eq!(blobs, 3, "no partial files left, README not fetched");

    // list shows where each file comes from and that it is cached
    let out = s.run(&["list", "--format", "json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    for row in plan["cells"].as_array().unwrap() {
        assert_eq!(row["cached"], true, "{row}");
        assert!(row["source"]
            .as_str()
            .unwrap()
            .starts_with("hf acme/tiny-GGUF@main: tiny-"));
    }
    // a second run downloads nothing: one listing-free HEAD per file, no CDN request
    let before = hub
        .log()
        .iter()
        .filter(|l| l.1.starts_with("/cdn/"))
        .count();
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after = hub
        .log()
        .iter()
        .filter(|l| l.1.starts_with("/cdn/"))
        .count();
    assert_eq!(before, after);
}

#[test]
fn a_missing_quant_is_derived_and_discovery_is_case_insensitive() {
    let hub = FakeHub::start();
    hub.add_repo("acme/only-f16", &[("Only-F16.GGUF", tiny("F16"))], false);
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"only\"\nhf = \"acme/only-f16\"\nderive = true\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = s.cells();
    assert_eq!(c[0]["origin"]["kind"], "hf");
    for d in &c[1..] {
        assert_eq!(d["status"], "ok");
        assert_eq!(d["origin"]["kind"], "derived");
        assert_eq!(d["origin"]["derived_from"], "F16");
        assert!(d["origin"]["path"]
            .as_str()
            .unwrap()
            .contains("/derived/acme--only-f16/"));
    }
    let sizes: Vec<u64> = c
        .iter()
        .map(|c| c["model_info"]["size_bytes"].as_u64().unwrap())
        .collect();
    assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2], "{sizes:?}");

    // without derive the message says what to do
    s.config("[[model]]\nname = \"only\"\nhf = \"acme/only-f16\"\nquants = [\"Q8_0\"]\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(3));
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("no GGUF file for Q8_0") && e.contains("derive = true"),
        "{e}"
    );
}

#[test]
fn ambiguous_discovery_lists_the_candidates() {
    let hub = FakeHub::start();
    hub.add_repo(
        "acme/two",
        &[("a-Q8_0.gguf", tiny("Q8_0")), ("b-q8_0.gguf", tiny("Q8_0"))],
        false,
    );
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"two\"\nhf = \"acme/two\"\nquants = [\"Q8_0\"]\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("a-Q8_0.gguf") && e.contains("b-q8_0.gguf") && e.contains("file ="),
        "{e}"
    );
}

#[test]
fn not_found_names_repo_revision_and_file() {
    let hub = FakeHub::start();
    hub.add_repo("acme/tiny", &[("tiny-F16.gguf", tiny("F16"))], false);
    let s = Scratch::new(&hub);
    s.config(
        "[[model]]\nname = \"nofile\"\nhf = \"acme/tiny\"\nfile = \"tiny-{QUANT}.gguf\"\nquants = [\"Q8_0\"]\n\
         [[model]]\nname = \"norepo\"\nhf = \"acme/nope\"\nfile = \"x-{QUANT}.gguf\"\nquants = [\"Q8_0\"]\n\
         [[model]]\nname = \"norev\"\nhf = \"acme/tiny\"\nrevision = \"v9\"\nfile = \"tiny-{QUANT}.gguf\"\nquants = [\"F16\"]\n",
    );
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let c = s.cells();
    let e = |i: usize| c[i]["error"].as_str().unwrap().to_string();
    assert!(
        e(0).contains("acme/tiny@main: tiny-q8_0.gguf")
            || e(0).contains("acme/tiny@main: tiny-Q8_0.gguf"),
        "{}",
        e(0)
    );
    assert!(
        e(0).contains("404") && e(0).contains("file does not exist"),
        "{}",
        e(0)
    );
    assert!(
        e(1).contains("acme/nope@main") && e(1).contains("repository does not exist"),
        "{}",
        e(1)
    );
    assert!(
        e(2).contains("acme/tiny@v9") && e(2).contains("revision does not exist"),
        "{}",
        e(2)
    );
}

#[test]
fn gated_repos_need_the_token_which_is_never_shown() {
    let hub = FakeHub::start();
    hub.add_repo("acme/gated", &[("g-F16.gguf", tiny("F16"))], true);
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"g\"\nhf = \"acme/gated\"\nquants = [\"F16\"]\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(3));
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("401") && e.contains("HF_TOKEN") && e.contains("licence"),
        "{e}"
    );

    let out = s
        .cmd()
        .args(["run", "-v"])
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.cells()[0]["status"], "ok");
    // the hub got the token, the CDN (another origin) never did
    let log = hub.log();
    assert!(log.iter().any(|l| l.1.contains("/resolve/") && l.3));
    assert!(log
        .iter()
        .filter(|l| l.1.starts_with("/cdn/"))
        .all(|l| !l.3));
    // nowhere in what quantbench printed or wrote
    let mut texts = vec![stdout(&out), stderr(&out)];
    for e in walk(s.path()) {
        if let Ok(t) = std::fs::read(&e) {
            texts.push(String::from_utf8_lossy(&t).into_owned());
        }
    }
    assert!(texts.iter().all(|t| !t.contains(TOKEN)), "the token leaked");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_symlink() {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                // never a FIFO: reading one would block the test
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let hub = FakeHub::start();
    let bytes = tiny("F16");
    hub.add_repo("acme/drop", &[("d-F16.gguf", bytes.clone())], false);
    hub.state.lock().unwrap().drop_after = Some(("d-F16.gguf".into(), 1_000_000));
    // and the hub is briefly overloaded: two 503s before it answers
    hub.state.lock().unwrap().fail_next = 2;
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"d\"\nhf = \"acme/drop\"\nquants = [\"F16\"]\n");
    let out = s.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ranges = hub.cdn_ranges();
    assert_eq!(
        ranges,
        vec![
            Some("bytes=0-".to_string()),
            Some("bytes=1000000-".to_string())
        ],
        "one broken transfer, then a resumed one"
    );
    let heads = hub
        .log()
        .iter()
        .filter(|l| l.1.contains("/resolve/"))
        .count();
    assert!(
        heads >= 3,
        "the 503s were retried: {heads} resolve requests"
    );
    let blob = s
        .hub_cache()
        .join("models--acme--drop/blobs")
        .join(sha(&bytes));
    assert_eq!(std::fs::read(blob).unwrap(), bytes);
}

#[test]
fn a_partial_file_longer_than_the_file_is_fetched_again_from_the_start() {
    let hub = FakeHub::start();
    let bytes = tiny("F16");
    hub.add_repo("acme/long", &[("l-F16.gguf", bytes.clone())], false);
    let s = Scratch::new(&hub);
    // what an earlier download of another, longer file under this etag could leave behind
    let blobs = s.hub_cache().join("models--acme--long/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut junk = vec![0xAB; bytes.len() + 4096];
    junk[..4].copy_from_slice(b"GGUF");
    std::fs::write(blobs.join(format!("{}.incomplete", sha(&bytes))), junk).unwrap();
    s.config("[[model]]\nname = \"l\"\nhf = \"acme/long\"\nquants = [\"F16\"]\n");
    let out = s.run(&["fetch"]);
    // the old code emptied the file but kept writing at its old end, after a run of zeros: the
    // size check then removed it and asked for another run
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(blobs.join(sha(&bytes))).unwrap(), bytes);
    let ranges = hub.cdn_ranges();
    assert_eq!(
        ranges,
        vec![Some("bytes=0-".to_string())],
        "one transfer, from the start"
    );
}

#[test]
fn corrupted_bytes_are_detected_and_removed() {
    let hub = FakeHub::start();
    hub.add_repo("acme/bad", &[("b-F16.gguf", tiny("F16"))], false);
    hub.state.lock().unwrap().corrupt = Some("b-F16.gguf".into());
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"b\"\nhf = \"acme/bad\"\nquants = [\"F16\"]\n");
    let out = s.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sha256 mismatch") && stderr(&out).contains("removed"),
        "{}",
        stderr(&out)
    );
    let blobs = s.hub_cache().join("models--acme--bad/blobs");
    assert_eq!(
        std::fs::read_dir(blobs).unwrap().count(),
        0,
        "no bad blob and no partial left"
    );
    // the server heals: a new fetch succeeds
    hub.state.lock().unwrap().corrupt = None;
    let out = s.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn offline_uses_the_cache_and_names_what_is_missing() {
    let hub = FakeHub::start();
    hub.add_repo(
        "acme/tiny",
        &[("t-F16.gguf", tiny("F16")), ("t-Q8_0.gguf", tiny("Q8_0"))],
        false,
    );
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"t\"\nhf = \"acme/tiny\"\nquants = [\"F16\"]\n");
    assert_eq!(s.run(&["fetch"]).status.code(), Some(0));
    let requests = hub.log().len();

    // hit: measured with the cache alone, no request made
    let out = s.run(&["run", "--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(hub.log().len(), requests);
    // HF_HUB_OFFLINE=1 means the same
    let out = s
        .cmd()
        .args(["run"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(hub.log().len(), requests);

    // miss: a quant not downloaded
    s.config("[[model]]\nname = \"t\"\nhf = \"acme/tiny\"\nquants = [\"Q8_0\"]\n");
    let out = s.run(&["run", "--offline"]);
    assert_eq!(out.status.code(), Some(3));
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("offline") && e.contains("acme/tiny@main") && e.contains("quantbench fetch"),
        "{e}"
    );
    // and a repo never fetched
    s.config("[[model]]\nname = \"x\"\nhf = \"acme/never\"\nquants = [\"F16\"]\n");
    let out = s.run(&["run", "--offline"]);
    assert_eq!(out.status.code(), Some(3));
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(e.contains("acme/never@main is not in the hub cache"), "{e}");
    assert_eq!(
        hub.log().len(),
        requests,
        "offline never touches the network"
    );
}

#[test]
fn sharded_files_are_fetched_whole_and_loaded_from_the_first() {
    let hub = FakeHub::start();
    let preset = quantbench::presets::preset("tiny").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    preset
        .write_split(0, 3, |i| {
            std::fs::File::create(tmp.path().join(i.to_string()))
        })
        .unwrap();
    let shards: Vec<Vec<u8>> = (0..3)
        .map(|i| std::fs::read(tmp.path().join(i.to_string())).unwrap())
        .collect();
    let names: Vec<String> = (1..=3)
        .map(|i| format!("big-F16-{i:05}-of-00003.gguf"))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = names
        .iter()
        .map(String::as_str)
        .zip(shards.clone())
        .collect();
    hub.add_repo("acme/sharded", &files, false);
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"big\"\nhf = \"acme/sharded\"\nquants = [\"F16\"]\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = &s.cells()[0];
    assert_eq!(c["status"], "ok", "{c}");
    assert!(c["origin"]["path"]
        .as_str()
        .unwrap()
        .ends_with("big-F16-00001-of-00003.gguf"));
    let total: usize = shards.iter().map(Vec::len).sum();
    assert_eq!(c["origin"]["size_bytes"].as_u64().unwrap() as usize, total);
    let commit = &c["origin"]["commit"].as_str().unwrap().to_string();
    for n in &names {
        let p = s
            .hub_cache()
            .join("models--acme--sharded/snapshots")
            .join(commit)
            .join(n);
        assert!(p.exists(), "{n} fetched");
    }
}

#[test]
fn a_killed_fetch_resumes_when_restarted() {
    let hub = FakeHub::start();
    let q = [
        ("m-F16.gguf", tiny("F16")),
        ("m-Q8_0.gguf", tiny("Q8_0")),
        ("m-Q4_K_M.gguf", tiny("Q4_K_M")),
    ];
    hub.add_repo("acme/slow", &q, false);
    hub.state.lock().unwrap().slow = Some(Duration::from_millis(40));
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"m\"\nhf = \"acme/slow\"\nfile = \"m-{QUANT}.gguf\"\n");
    let mut child = s
        .process()
        .arg("fetch")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // kill it once part of the first file is on disk
    let blobs = s.hub_cache().join("models--acme--slow/blobs");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no partial download appeared"
        );
        let partial = std::fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().ends_with(".incomplete")
                    && e.metadata().map(|m| m.len()).unwrap_or(0) > 500_000
            });
        if partial {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let first = child.wait_with_output().unwrap();
    assert!(stderr(&first).contains("downloading m-F16.gguf"));

    hub.state.lock().unwrap().slow = None;
    let out = s.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("downloading"),
        "progress is shown: {}",
        stderr(&out)
    );
    let resumed = hub
        .log()
        .iter()
        .filter(|l| l.1.starts_with("/cdn/"))
        .filter_map(|l| l.2.clone())
        .any(|r| r != "bytes=0-");
    assert!(
        resumed,
        "the second fetch resumed the partial file: {:?}",
        hub.log()
    );
    for (name, bytes) in &q {
        let _ = name;
        assert_eq!(std::fs::read(blobs.join(sha(bytes))).unwrap(), *bytes);
    }
}

#[test]
#[allow(
    clippy::print_stderr,
    reason = "a skipped test says so in the test's output"
)]
fn python_huggingface_hub_and_quantbench_share_the_cache() {
    // Python's client is the reference; CI installs it (.ci/run). Elsewhere the test says so and
    // passes only when QUANTBENCH_REQUIRE_PYTHON_HUB is unset.
    let have = std::process::Command::new("python3")
        .args(["-c", "import huggingface_hub"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("QUANTBENCH_REQUIRE_PYTHON_HUB").is_none(),
            "python3 -m pip install huggingface_hub"
        );
        eprintln!("skipped: python3 has no huggingface_hub");
        return;
    }
    let hub = FakeHub::start();
    let commit = hub.add_repo(
        "acme/shared",
        &[("s-F16.gguf", tiny("F16")), ("s-Q8_0.gguf", tiny("Q8_0"))],
        false,
    );
    let s = Scratch::new(&hub);
    // quantbench downloads F16; Python finds it offline
    s.config("[[model]]\nname = \"s\"\nhf = \"acme/shared\"\nquants = [\"F16\"]\n");
    assert_eq!(s.run(&["fetch"]).status.code(), Some(0));
    let py = |code: &str, offline: bool| {
        let mut c = std::process::Command::new("python3");
        for k in common::FOREIGN_ENV {
            c.env_remove(k);
        }
        // HOME stays (Python finds its packages there); HF_HOME in the scratch folder keeps a
        // logged-in token file away from the test hub
        c.args(["-c", code])
            .env("HF_HOME", s.path().join("hf-home"))
            .env("HF_ENDPOINT", &s.hub_url)
            .env("HF_HUB_CACHE", s.hub_cache())
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_XET", "1");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        }
        c.output().unwrap()
    };
    let out = py(
        "from huggingface_hub import hf_hub_download as d; print(d('acme/shared', 's-F16.gguf', local_files_only=True))",
        true,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&commit));

    // Python downloads Q8_0; quantbench uses it offline
    let out = py(
        "from huggingface_hub import hf_hub_download as d; print(d('acme/shared', 's-Q8_0.gguf'))",
        false,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    s.config("[[model]]\nname = \"s\"\nhf = \"acme/shared\"\nquants = [\"Q8_0\"]\n");
    let before = hub.log().len();
    let out = s.run(&["run", "--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(hub.log().len(), before);
    assert_eq!(s.cells()[0]["origin"]["commit"], commit.as_str());
}

#[test]
fn a_hostile_commit_or_file_name_cannot_reach_outside_the_cache() {
    let hub = FakeHub::start();
    hub.add_repo("acme/tiny", &[("t-F16.gguf", tiny("F16"))], false);
    let s = Scratch::new(&hub);
    // X-Repo-Commit that climbs out of snapshots/ into the scratch folder
    hub.state.lock().unwrap().commit_override = Some("../../../escape".into());
    s.config("[[model]]\nname = \"t\"\nhf = \"acme/tiny\"\nfile = \"t-{QUANT}.gguf\"\nquants = [\"F16\"]\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        !s.path().join("escape").exists(),
        "a folder was made outside the cache"
    );
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("X-Repo-Commit") && e.contains("40 hexadecimal"),
        "{e}"
    );
    hub.state.lock().unwrap().commit_override = None;

    // a listed file name that climbs out: the listing is refused, nothing is written for it
    hub.add_repo(
        "acme/evil",
        &[
            ("../../../x/evil-F16.gguf", tiny("F16")),
            ("ok-Q8_0.gguf", tiny("Q8_0")),
        ],
        false,
    );
    s.config("[[model]]\nname = \"e\"\nhf = \"acme/evil\"\nquants = [\"F16\"]\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    for outside in [s.path().join("x"), s.hub_cache().join("x")] {
        assert!(
            !outside.exists(),
            "a folder was made outside the snapshot: {outside:?}"
        );
    }
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("unsafe file name in the repository listing") && e.contains("`..`"),
        "{e}"
    );
    // and a config `file` that climbs out is a config error
    s.config("[[model]]\nname = \"e\"\nhf = \"acme/evil\"\nfile = \"../../x-{quant}.gguf\"\n");
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("models.toml:") && stderr(&out).contains("`..`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_token_never_goes_to_another_origin() {
    // a redirect to a port that starts with the hub's port: another origin, no token
    let (hub_listener, other) = prefix_ports();
    let hub = FakeHub::start_on(hub_listener);
    hub.add_repo("acme/gated", &[("g-F16.gguf", tiny("F16"))], true);
    let (evil, seen) = evil_listener(other);
    assert!(evil.starts_with(&hub.url), "{evil} vs {}", hub.url);
    hub.state.lock().unwrap().location_override = Some(format!("{evil}/cdn/{{sha}}"));
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"g\"\nhf = \"acme/gated\"\nquants = [\"F16\"]\n");
    let out = s
        .cmd()
        .args(["run"])
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        !seen.lock().unwrap().is_empty(),
        "the download went to the other port"
    );
    assert!(
        seen.lock().unwrap().iter().all(|t| !t),
        "the token went to another origin"
    );

    // userinfo that makes another host look like the hub: refused outright
    let (evil2, seen2) = evil_listener(TcpListener::bind("127.0.0.1:0").unwrap());
    let hostport = hub.url.trim_start_matches("http://").to_string();
    let evil_hostport = evil2.trim_start_matches("http://").to_string();
    hub.state.lock().unwrap().location_override =
        Some(format!("http://{hostport}@{evil_hostport}/cdn/{{sha}}"));
    let out = s
        .cmd()
        .args(["run"])
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(e.contains("userinfo"), "{e}");
    assert!(
        seen2.lock().unwrap().is_empty(),
        "nothing was sent to the disguised host"
    );
    assert!(!format!("{e}{}", stderr(&out)).contains(TOKEN));
}

#[test]
fn offline_runs_find_quants_derived_by_fetch() {
    let hub = FakeHub::start();
    hub.add_repo("acme/only-f16", &[("o-F16.gguf", tiny("F16"))], false);
    let s = Scratch::new(&hub);
    s.config(
        "[[model]]\nname = \"o\"\nhf = \"acme/only-f16\"\nfile = \"o-{QUANT}.gguf\"\nderive = true\n",
    );
    let out = s.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let requests = hub.log().len();
    let out = s.run(&["run", "--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = s.cells();
    assert!(c.iter().all(|c| c["status"] == "ok"), "{c:?}");
    assert_eq!(c[1]["origin"]["kind"], "derived");
    assert_eq!(
        hub.log().len(),
        requests,
        "offline never touches the network"
    );
}

// ---- secrets, bounded downloads, proxies, certificates ------------------------------------------

/// Whether `secret` appears in what quantbench printed or in any file under the scratch folder.
fn leaked(s: &Scratch, out: &Output, secret: &str) -> Vec<String> {
    let mut places = Vec::new();
    if stdout(out).contains(secret) {
        places.push("stdout".to_string());
    }
    if stderr(out).contains(secret) {
        places.push("stderr".to_string());
    }
    for f in walk(s.path()) {
        if std::fs::read(&f).is_ok_and(|t| String::from_utf8_lossy(&t).contains(secret)) {
            places.push(f.display().to_string());
        }
    }
    places
}

#[test]
fn a_token_with_a_line_ending_works_and_one_with_other_characters_is_refused_unechoed() {
    let hub = FakeHub::start();
    hub.add_repo("acme/gated", &[("g-F16.gguf", tiny("F16"))], true);
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"g\"\nhf = \"acme/gated\"\nquants = [\"F16\"]\n");
    // what `$(cat token)` of a CRLF file, a Kubernetes secret or an env file give
    for (var, value) in [
        ("HF_TOKEN", format!("{TOKEN}\r\n")),
        ("HUGGING_FACE_HUB_TOKEN", format!(" {TOKEN}\n")),
    ] {
        let out = s
            .cmd()
            .args(["run", "--no-plots", "--out", var])
            .env(var, &value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{var}: {}", stderr(&out));
        assert!(leaked(&s, &out, TOKEN).is_empty(), "{var}");
    }
    // the token file too (it was trimmed before)
    std::fs::write(s.path().join("token"), format!("{TOKEN}\r\n")).unwrap();
    let out = s
        .cmd()
        .args(["run", "--no-plots", "--out", "file"])
        .env("HF_TOKEN_PATH", s.path().join("token"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::remove_file(s.path().join("token")).unwrap();

    // a character the HTTP library would refuse (and quote, token and all, in its error)
    let bad = "hf_test_SECRET_ünïcode_4242";
    let before = hub.log().len();
    let out = s
        .cmd()
        .args(["run", "--no-plots", "--out", "bad"])
        .env("HF_TOKEN", bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = common::cells(&common::json(
        &s.base.run_dir_in("bad").join("results.json"),
    ))[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        e.contains("HF_TOKEN") && e.contains("not visible ASCII"),
        "{e}"
    );
    for secret in [bad, "SECRET_ü", "SECRET"] {
        assert_eq!(leaked(&s, &out, secret), Vec::<String>::new(), "{secret}");
    }
    assert!(
        hub.log()[before..].iter().all(|l| !l.3),
        "no request carried a refused token"
    );
}

#[test]
fn a_password_in_hf_endpoint_never_reaches_a_message_or_report() {
    // a private mirror with credentials in its URL, down: the error names it without them
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let hub = FakeHub::start();
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"m\"\nhf = \"acme/m\"\nquants = [\"F16\"]\n");
    let out = s
        .cmd()
        .args(["run", "--no-plots"])
        .env(
            "HF_ENDPOINT",
            format!("http://mirror-user:Pa55w0rd-XYZ@127.0.0.1:{port}"),
        )
        .env("QUANTBENCH_HUB_RETRIES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    for secret in ["Pa55w0rd-XYZ", "mirror-user"] {
        assert_eq!(leaked(&s, &out, secret), Vec::<String>::new(), "{secret}");
    }
}

#[test]
fn a_token_file_that_is_a_fifo_never_blocks() {
    let hub = FakeHub::start();
    hub.add_repo("acme/t", &[("t-F16.gguf", tiny("F16"))], false);
    let s = Scratch::new(&hub);
    let fifo = s.path().join("token-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // a synthetic-only matrix never reads the token (HF_HOME's token file is a FIFO too)
    std::fs::create_dir_all(s.path().join("hf-home")).unwrap();
    std::process::Command::new("mkfifo")
        .arg(s.path().join("hf-home/token"))
        .status()
        .unwrap();
    s.config("[[model]]\nname = \"t\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n");
    for (var, value) in [
        ("HF_TOKEN_PATH", fifo.clone()),
        ("HF_HOME", s.path().join("hf-home")),
    ] {
        for args in [&["list"][..], &["run", "-r", "1", "--no-plots"][..]] {
            let out = s
                .cmd()
                .args(args)
                .env(var, &value)
                .timeout(Duration::from_secs(120))
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{var} {args:?}: {}",
                stderr(&out)
            );
        }
    }
    // a hub model: the token is read when the hub is asked, and a FIFO is refused, not waited on
    s.config("[[model]]\nname = \"t\"\nhf = \"acme/t\"\nquants = [\"F16\"]\n");
    let out = s
        .cmd()
        .args(["run", "--no-plots"])
        .env("HF_TOKEN_PATH", &fifo)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = s.cells()[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("not a regular file") && e.contains("HF_TOKEN_PATH"),
        "{e}"
    );
}

#[test]
fn a_body_longer_than_announced_is_cut_and_nothing_is_kept() {
    let hub = FakeHub::start();
    let bytes = tiny("F16");
    hub.add_repo("acme/endless", &[("e-F16.gguf", bytes.clone())], false);
    hub.state.lock().unwrap().endless = Some("e-F16.gguf".into());
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"e\"\nhf = \"acme/endless\"\nquants = [\"F16\"]\n");
    let out = s
        .cmd()
        .arg("fetch")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains(&format!("more than the {} bytes it announced", bytes.len()))
            && !e.contains("run again to resume"),
        "{e}"
    );
    let blobs = s.hub_cache().join("models--acme--endless/blobs");
    let left: Vec<PathBuf> = walk(&blobs);
    assert!(left.is_empty(), "nothing of the download is kept: {left:?}");
}

#[test]
fn an_absurd_announced_size_is_diagnosed_before_downloading() {
    let hub = FakeHub::start();
    hub.add_repo("acme/huge", &[("h-F16.gguf", tiny("F16"))], false);
    hub.state.lock().unwrap().size_override = Some(1 << 60);
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"h\"\nhf = \"acme/huge\"\nquants = [\"F16\"]\n");
    let out = s.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains(&format!("announced {} bytes", 1u64 << 60))
            && e.contains("free")
            && e.contains("HF_HUB_CACHE"),
        "{e}"
    );
    assert!(
        hub.log().iter().all(|l| !l.1.starts_with("/cdn/")),
        "not a byte was requested"
    );
}

/// An HTTP proxy on 127.0.0.1 that knows one host name nobody else resolves (`hub.test`, sent to
/// 127.0.0.1), forwarding plain requests in absolute form (and tunnelling CONNECT); it logs the
/// host and port of every request. A request that reaches the test hub under that name can only
/// have come through it.
fn start_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://proxy-user:proxy-PW@{}",
        listener.local_addr().unwrap()
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = forward(conn, &seen);
            });
        }
    });
    (url, log)
}

fn forward(mut client: TcpStream, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut r = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut head = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if !h.to_ascii_lowercase().starts_with("proxy-") {
            head.push(h);
        }
    }
    let (authority, path) = if method == "CONNECT" {
        (target.clone(), String::new())
    } else {
        let rest = target.strip_prefix("http://").unwrap_or(&target);
        let (a, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        (a.to_string(), p.to_string())
    };
    log.lock().unwrap().push(authority.clone());
    let upstream = authority.replace("hub.test", "127.0.0.1");
    let mut server = TcpStream::connect(&upstream)?;
    if method == "CONNECT" {
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    } else {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        for h in head {
            req += &h;
        }
        req += "\r\n";
        server.write_all(req.as_bytes())?;
    }
    let mut to_server = server.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut r, &mut to_server);
    });
    std::io::copy(&mut server, &mut client)?;
    Ok(())
}

#[test]
fn the_proxy_variables_are_honoured_and_no_proxy_bypasses_the_proxy() {
    let hub = FakeHub::start();
    let bytes = tiny("F16");
    hub.add_repo("acme/p", &[("p-F16.gguf", bytes.clone())], true);
    let (proxy, via) = start_proxy();
    let hub_port = hub.url.rsplit(':').next().unwrap().to_string();
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"p\"\nhf = \"acme/p\"\nquants = [\"F16\"]\n");
    // the hub under a name only the proxy resolves: the fetch works only through it
    let out = s
        .cmd()
        .arg("fetch")
        .env("HF_ENDPOINT", format!("http://hub.test:{hub_port}"))
        .env("HTTP_PROXY", &proxy)
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = via.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("hub.test:{hub_port}")),
        "the hub was reached through the proxy: {seen:?}"
    );
    assert!(
        hub.log().iter().any(|l| l.1.contains("/resolve/") && l.3),
        "the token reached the hub through the proxy"
    );
    assert!(leaked(&s, &out, "proxy-PW").is_empty());

    // NO_PROXY: the hub and its CDN on 127.0.0.1 are reached directly
    via.lock().unwrap().clear();
    std::fs::remove_dir_all(s.hub_cache()).unwrap();
    let out = s
        .cmd()
        .arg("fetch")
        .env("HTTP_PROXY", &proxy)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(via.lock().unwrap().len(), 0, "NO_PROXY bypassed the proxy");

    // a proxy that is down fails the cell naming it, without its password
    let out = s
        .cmd()
        .args(["run", "--no-plots"])
        .env("HF_ENDPOINT", format!("http://hub.test:{hub_port}"))
        .env("HTTP_PROXY", "http://u:proxy-PW@127.0.0.1:1")
        .env("QUANTBENCH_HUB_RETRIES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(leaked(&s, &out, "proxy-PW").is_empty());
}

/// The test CA and a certificate it signed for 127.0.0.1 (valid until 2126), made once with
/// openssl for this test: `tests/it/tls/`.
fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/tls")
        .join(name)
}

/// An HTTPS server on 127.0.0.1 whose certificate only the test CA vouches for; it answers
/// every request as the hub answers an unknown repository (404 `RepoNotFound`).
fn start_tls_hub() -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_file(tls_fixture("server.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(tls) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(tls, &mut conn);
                let mut r = BufReader::new(&mut s);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nX-Error-Code: RepoNotFound\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    url
}

#[test]
fn the_systems_certificate_store_is_trusted() {
    // a corporate CA: in the system's store (SSL_CERT_FILE here), not among Mozilla's roots
    let url = start_tls_hub();
    let hub = FakeHub::start();
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"c\"\nhf = \"acme/c\"\nquants = [\"F16\"]\n");
    let fetch = |ca: Option<PathBuf>| {
        let mut c = s.cmd();
        c.arg("fetch")
            .env("HF_ENDPOINT", &url)
            .env("QUANTBENCH_HUB_RETRIES", "0");
        if let Some(ca) = ca {
            c.env("SSL_CERT_FILE", ca);
        }
        c.output().unwrap()
    };
    let out = fetch(None);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "an unknown issuer is refused: {}",
        stderr(&out)
    );
    // with the CA in the store, the TLS connection is made and the hub's answer read
    let out = fetch(Some(tls_fixture("ca.pem")));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the repository does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_signal_ends_a_run_blocked_where_it_cannot_stop_cleanly() {
    // a hub that accepts the connection and never answers: the run waits in a read (60 s, then
    // retries) where nothing looks at the stop flag
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let keep = accepted.clone();
    std::thread::spawn(move || {
        for conn in silent.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let hub = FakeHub::start();
    let s = Scratch::new(&hub);
    s.config("[[model]]\nname = \"m\"\nhf = \"acme/m\"\nquants = [\"F16\"]\n");
    let log = s.path().join("run.log");
    let mut c = s.base.process();
    c.args(["run", "--no-plots"])
        .env("HF_ENDPOINT", &url)
        .env("HF_HUB_CACHE", s.hub_cache())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = c.spawn().unwrap();
    common::wait_for(120, "the run to ask the silent hub", || {
        !accepted.lock().unwrap().is_empty()
    });
    let t = std::time::Instant::now();
    common::signal(child.id(), libc::SIGTERM);
    let status = common::wait_bounded(&mut child, 60);
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(143), "{said}");
    assert!(
        t.elapsed() < Duration::from_secs(40),
        "one SIGTERM ended it ({:?})",
        t.elapsed()
    );
    assert!(said.contains("cannot stop cleanly"), "{said}");
}
