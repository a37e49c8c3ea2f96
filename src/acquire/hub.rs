//! The Hugging Face hub: resolving files (templates or discovery in the repo listing),
//! downloading them as reliably as the hub's own clients, and the cache in the hub's standard
//! layout, shared with Python's `huggingface_hub`:
//!
//! ```text
//! $HF_HUB_CACHE/models--OWNER--NAME/blobs/ETAG            (ETAG = the sha256 for LFS files)
//!                                   blobs/ETAG.incomplete (a partial download, resumed)
//!                                   refs/REVISION         (the commit a branch or tag pointed at)
//!                                   snapshots/COMMIT/FILE -> ../../blobs/ETAG
//! $HF_HUB_CACHE/.locks/models--OWNER--NAME/ETAG.lock       (flock, as Python's filelock)
//! ```
//!
//! Why not the `hf-hub` crate: its 0.4 sync client resumes, but neither verifies size and sha256
//! against what the hub announced, nor tells 401 from 404, nor retries the metadata request, and
//! it keeps partial files under a name Python does not know. This module does those on `ureq`.
//! The token is never printed, logged or written anywhere. Never prints; progress goes through
//! [`super::Progress`].

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::Progress;
use crate::quant::Quant;
use crate::redact::Secrets;
use crate::safe_path::{self, check_commit, check_relative, check_segment, join_under};

/// A hub token; its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where the hub token comes from. Nothing is read until a request to the hub needs it: a
/// synthetic-only matrix never opens the token file (which may be a FIFO or on a hung mount).
#[derive(Clone)]
pub enum TokenSource {
    None,
    /// An environment variable (`HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`) and its value as set.
    Env {
        var: &'static str,
        value: String,
    },
    /// The token file (`HF_TOKEN_PATH`, else `$HF_HOME/token`); absent means no token.
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::None => f.write_str("TokenSource::None"),
            TokenSource::Env { var, .. } => write!(f, "TokenSource::Env({var}, <redacted>)"),
            TokenSource::File(p) => write!(f, "TokenSource::File({})", p.display()),
        }
    }
}

/// The largest token file read (hub tokens are under 100 bytes).
const MAX_TOKEN_FILE: u64 = 4096;

impl TokenSource {
    /// The token, read now: trimmed (a line ending from `$(cat token)`, a Kubernetes secret or a
    /// CRLF env file is not part of it), refused with a message that never echoes it when it
    /// holds anything but visible ASCII, read only from a regular file of at most 4 KiB.
    fn read(&self) -> Result<Option<Token>> {
        let (text, from) = match self {
            TokenSource::None => return Ok(None),
            TokenSource::Env { var, value } => (value.clone(), (*var).to_string()),
            TokenSource::File(path) => match read_token_file(path)? {
                Some(t) => (t, format!("the token file {}", path.display())),
                None => return Ok(None),
            },
        };
        let t = text.trim();
        if t.is_empty() {
            return Ok(None);
        }
        if let Some(i) = t.chars().position(|c| !c.is_ascii_graphic()) {
            bail!(
                "{from}: the hub token holds a character that is not visible ASCII (character {} \
                 of {}); refusing to send it. Set it to the token alone (`hf_…`, no quotes, \
                 spaces or line breaks inside), or unset it for public repositories",
                i + 1,
                t.chars().count()
            );
        }
        Ok(Some(Token(t.to_string())))
    }

    /// The value as set, for redaction (the trimmed token is found by [`Secrets::add`]).
    fn raw(&self) -> Option<&str> {
        match self {
            TokenSource::Env { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// The token file's text: `None` when there is no file; an error (never a hang) when it is not a
/// regular file, is too big or cannot be read.
fn read_token_file(path: &Path) -> Result<Option<String>> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer forever
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading the hub token file {}; make it readable, or set HF_TOKEN_PATH to \
                     another file",
                    path.display()
                )
            })
        }
    };
    let md = f
        .metadata()
        .with_context(|| format!("reading the hub token file {}", path.display()))?;
    if !md.is_file() {
        bail!(
            "the hub token file {} is not a regular file (a FIFO, a device or a folder); \
             quantbench reads a token only from a regular file: point HF_TOKEN_PATH at one, or \
             set HF_TOKEN",
            path.display()
        );
    }
    if md.len() > MAX_TOKEN_FILE {
        bail!(
            "the hub token file {} holds {} bytes, more than a token ({MAX_TOKEN_FILE} at most); \
             is HF_TOKEN_PATH the right file?",
            path.display(),
            md.len()
        );
    }
    let mut bytes = Vec::new();
    f.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the hub token file {}", path.display()))?;
    String::from_utf8(bytes).map(Some).map_err(|_| {
        anyhow!(
            "the hub token file {} is not text (not UTF-8); refusing to send it",
            path.display()
        )
    })
}

/// Where and how to reach the hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// Read when a request to the hub first needs it.
    pub token: TokenSource,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `--offline` or `HF_HUB_OFFLINE=1`: cache only.
    pub offline: bool,
    /// Attempts after the first on connection errors, 5xx and 429.
    pub retries: u32,
    /// First back-off delay; doubled each retry, capped at 30 s.
    pub backoff: Duration,
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`.
    pub proxies: super::net::Proxies,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

impl HubConfig {
    /// Reads the environment the way `huggingface_hub` does. Reads no file: the token file is
    /// read when a request first needs it.
    pub fn from_env(offline: bool) -> Self {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        let hf_home = env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache_dir = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]
            .into_iter()
            .find_map(|var| env(var).map(|value| TokenSource::Env { var, value }))
            .unwrap_or_else(|| {
                TokenSource::File(
                    env("HF_TOKEN_PATH")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| hf_home.join("token")),
                )
            });
        let truthy = |k: &str| {
            env(k).is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "ON"))
        };
        HubConfig {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim()
                .trim_end_matches('/')
                .to_string(),
            token,
            cache_dir,
            offline: offline || truthy("HF_HUB_OFFLINE"),
            retries: env("QUANTBENCH_HUB_RETRIES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(5),
            backoff: Duration::from_millis(
                env("QUANTBENCH_HUB_BACKOFF_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000),
            ),
            proxies: super::net::Proxies::from_env(),
        }
    }
}

/// What the hub says about a file before it is downloaded.
#[derive(Clone, Debug, PartialEq)]
pub struct FileMeta {
    /// The commit the revision resolved to (`X-Repo-Commit`).
    pub commit: String,
    /// `X-Linked-Etag` (the sha256 of an LFS file) or `ETag`.
    pub etag: String,
    /// `X-Linked-Size` or `Content-Length`.
    pub size: u64,
    /// Where the bytes are (the CDN URL of a redirect), or the resolve URL itself.
    pub url: String,
}

/// A file in the local cache.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedFile {
    /// The snapshot path (a link to the blob).
    pub path: PathBuf,
    pub commit: String,
    /// The blob's name: the sha256 for LFS files.
    pub etag: String,
}

/// A client for one hub endpoint and cache. Every error of its requests leaves through one
/// redaction point ([`Hub::redacted`]): no token, `Bearer` credential or URL userinfo survives
/// into a message.
pub struct Hub {
    pub cfg: HubConfig,
    /// Direct and through the environment's proxies.
    agents: super::net::Agents,
    /// The token, read at the first request that carries it.
    token: std::sync::OnceLock<Result<Option<Token>, String>>,
}

/// Characters escaped in a revision (everything but letters and digits, like Python's
/// `quote(revision, safe="")`) and in a file path (where `/` stays).
const REV: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
const PATH: &AsciiSet = &REV.remove(b'/');

/// A repository's folder name in the cache and its lock folder: `models--OWNER--NAME`.
fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Transient: worth retrying.
fn transient(code: u16) -> bool {
    code == 429 || code >= 500
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Self {
        Hub {
            agents: super::net::Agents::new(cfg.proxies.clone()),
            cfg,
            token: std::sync::OnceLock::new(),
        }
    }

    /// The token, read from its source the first time it is needed.
    fn token(&self) -> Result<Option<&Token>> {
        match self
            .token
            .get_or_init(|| self.cfg.token.read().map_err(|e| format!("{e:#}")))
        {
            Ok(t) => Ok(t.as_ref()),
            Err(e) => Err(anyhow!("{e}")),
        }
    }

    /// Everything that must never appear in a message: the token as set and as read.
    fn secrets(&self) -> Secrets {
        let mut s = Secrets::default();
        if let Some(raw) = self.cfg.token.raw() {
            s.add(raw);
        }
        if let Some(Ok(Some(t))) = self.token.get() {
            s.add(&t.0);
        }
        s
    }

    /// The one redaction point: every error of a hub request passes here on its way out, its
    /// whole chain rendered with secrets, `Bearer` credentials and URL userinfo replaced. The
    /// HTTP status stays typed ([`http_status`]).
    fn redacted<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| {
            anyhow::Error::new(HttpStatus {
                code: http_status(&e).unwrap_or(0),
                message: self.secrets().redact(&format!("{e:#}")),
            })
        })
    }

    /// `models--OWNER--NAME` under the cache.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cfg.cache_dir.join(repo_folder(repo))
    }

    /// Whether `url` is on the endpoint's origin (same scheme, host and port, parsed, no
    /// userinfo): the only place the token may go.
    fn same_origin(&self, url: &str) -> bool {
        same_origin(&self.cfg.endpoint, url)
    }

    fn request(&self, method: &str, url: &str) -> Result<ureq::Request> {
        let mut r = self.agents.for_url(url)?.request(method, url);
        if self.same_origin(url) {
            if let Some(t) = self.token()? {
                r = r.set("Authorization", &format!("Bearer {}", t.0));
            }
        }
        Ok(r)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        (self.cfg.backoff * 2u32.saturating_pow(attempt)).min(Duration::from_secs(30))
    }

    /// Sends the request `make` builds until it succeeds, fails for good, or the retries are
    /// spent.
    fn with_retries(
        &self,
        what: &str,
        make: impl Fn() -> Result<ureq::Request>,
    ) -> Result<ureq::Response> {
        let mut attempt = 0;
        loop {
            let err = match make()?.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(code, resp)) if transient(code) => {
                    format!("HTTP {code} {}", resp.status_text())
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(status_error(code, &resp, what))
                }
                Err(ureq::Error::Transport(t)) => t.to_string(),
            };
            if attempt >= self.cfg.retries {
                bail!("{what}: {err} (gave up after {} attempts)", attempt + 1);
            }
            std::thread::sleep(self.backoff(attempt));
            attempt += 1;
        }
    }

    fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.cfg.endpoint,
            utf8_percent_encode(revision, REV),
            utf8_percent_encode(file, PATH)
        )
    }

    /// Resolves a file: which commit, which blob (etag), how big, where the bytes are.
    pub fn head(&self, repo: &str, revision: &str, file: &str) -> Result<FileMeta> {
        self.redacted(self.head_unredacted(repo, revision, file))
    }

    fn head_unredacted(&self, repo: &str, revision: &str, file: &str) -> Result<FileMeta> {
        let what = format!("{repo}@{revision}: {file}");
        let mut url = self.resolve_url(repo, revision, file);
        for _ in 0..5 {
            let resp = self.with_retries(&what, || {
                Ok(self
                    .request("HEAD", &url)?
                    .set("Accept-Encoding", "identity"))
            })?;
            let header = |k: &str| resp.header(k).map(str::to_string);
            let status = resp.status();
            let location = header("Location");
            if (300..400).contains(&status) {
                let loc = location.ok_or_else(|| anyhow!("{what}: redirect without Location"))?;
                let target = redirect_target(&url, &loc)
                    .with_context(|| format!("{what}: the hub redirected to {loc:?}"))?;
                if loc.starts_with('/') {
                    // a hub-internal redirect (a renamed repo): ask again there
                    url = target;
                    continue;
                }
                // a redirect to the CDN: the metadata is on this response
                return meta_from(&what, header, target);
            }
            return meta_from(&what, header, url);
        }
        bail!("{what}: too many redirects")
    }

    /// The files of a repo at a revision, and the commit it resolved to.
    pub fn list_files(&self, repo: &str, revision: &str) -> Result<(String, Vec<String>)> {
        self.redacted(self.list_files_unredacted(repo, revision))
    }

    fn list_files_unredacted(&self, repo: &str, revision: &str) -> Result<(String, Vec<String>)> {
        #[derive(Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(Deserialize)]
        struct Info {
            sha: Option<String>,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.cfg.endpoint,
            utf8_percent_encode(revision, REV)
        );
        let what = format!("{repo}@{revision}: listing the repository");
        let resp = self.with_retries(&what, || self.request("GET", &url))?;
        let body = Bounded::new(resp.into_reader(), MAX_LISTING, "the repository listing");
        let info: Info = serde_json::from_reader(body)
            .with_context(|| format!("{what}: the listing is not the JSON the hub sends"))?;
        let commit = info
            .sha
            .ok_or_else(|| anyhow!("{what}: the listing has no commit sha"))?;
        check_commit(&commit, "commit `sha` in the repository listing")
            .map_err(|e| anyhow!("{what}: {e}"))?;
        let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        for f in &files {
            check_relative(f, "file name in the repository listing")
                .map_err(|e| anyhow!("{what}: {e}; refusing the listing"))?;
        }
        Ok((commit, files))
    }

    fn lock(&self, repo: &str, etag: &str) -> Result<File> {
        let dir = join_under(
            &self.cfg.cache_dir.join(".locks"),
            &repo_folder(repo),
            "repository",
        )?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = join_under(&dir, &format!("{etag}.lock"), "ETag")?;
        let f = crate::fsutil::open_lock_file(&path)?;
        // flock, as Python's filelock; released when the file is closed
        f.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(f)
    }

    /// Downloads one file into the cache (resuming a partial download, verifying size and
    /// sha256) and links it into the snapshot of its commit. Returns the cached file.
    pub fn download(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        progress: &dyn Progress,
    ) -> Result<CachedFile> {
        self.redacted(self.download_unredacted(repo, revision, file, progress))
    }

    fn download_unredacted(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        progress: &dyn Progress,
    ) -> Result<CachedFile> {
        check_relative(file, "file name")?;
        let meta = self.head_unredacted(repo, revision, file)?;
        let dir = self.repo_dir(repo);
        let blob = join_under(&dir.join("blobs"), &meta.etag, "ETag")?;
        fs::create_dir_all(blob.parent().expect("has parent"))
            .with_context(|| format!("creating {}", dir.join("blobs").display()))?;
        let _lock = self.lock(repo, &meta.etag)?;
        let complete = fs::metadata(&blob).is_ok_and(|m| m.len() == meta.size);
        if !complete {
            let partial = blob.with_file_name(format!("{}.incomplete", meta.etag));
            self.fetch_bytes(&meta, &partial, file, progress)
                .with_context(|| format!("{repo}@{revision}: downloading {file}"))?;
            verify(&partial, &meta, progress)
                .with_context(|| format!("{repo}@{revision}: {file}"))?;
            crate::fsutil::sync_file(&partial)?;
            fs::rename(&partial, &blob)
                .with_context(|| format!("renaming {} to {}", partial.display(), blob.display()))?;
        }
        let snapshot = join_under(
            &dir.join("snapshots"),
            &format!("{}/{file}", meta.commit),
            "snapshot path",
        )?;
        link_snapshot(&snapshot, &meta.etag, file)?;
        if revision != meta.commit {
            let r = join_under(&dir.join("refs"), revision, "revision")?;
            fs::create_dir_all(r.parent().expect("has parent"))
                .with_context(|| format!("creating {}", dir.join("refs").display()))?;
            fs::write(&r, &meta.commit).with_context(|| format!("writing {}", r.display()))?;
        }
        Ok(CachedFile {
            path: snapshot,
            commit: meta.commit,
            etag: meta.etag,
        })
    }

    /// Appends the missing bytes to `partial`, resuming where it ends; retries transfers that
    /// break off.
    fn fetch_bytes(
        &self,
        meta: &FileMeta,
        partial: &Path,
        file: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (mut f, start) = open_partial(partial, meta.size)?;
        check_room(partial, meta.size - start, meta.size, file)?;
        progress.begin(&format!("downloading {file}"), Some(meta.size));
        progress.advance(start);
        let result = self.fetch_rest(&mut f, start, meta, file, progress);
        progress.end();
        if result
            .as_ref()
            .is_err_and(|e| e.downcast_ref::<TooLong>().is_some())
        {
            // nothing a server that sends more than it announces sent is kept
            drop(f);
            let _ = fs::remove_file(partial);
        }
        result
    }

    /// Requests the bytes from `start` on and appends them to `f` until it holds the whole
    /// file, starting over when the server ignores the range or the partial file cannot be
    /// resumed, and resuming (after a back-off) when the transfer breaks off.
    fn fetch_rest(
        &self,
        f: &mut File,
        mut start: u64,
        meta: &FileMeta,
        file: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut attempt = 0;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if start == meta.size {
                return Ok(());
            }
            let what = format!("GET {file}");
            let resp = self.with_retries(&what, || {
                Ok(self
                    .request("GET", &meta.url)?
                    .set("Range", &format!("bytes={start}-")))
            });
            let resp = match resp {
                Ok(r) => r,
                // nothing left to send: the partial file is already whole
                Err(e) if http_status(&e) == Some(416) => {
                    return if f.metadata()?.len() == meta.size {
                        Ok(())
                    } else {
                        start = restart(f)?;
                        continue;
                    };
                }
                Err(e) => return Err(e),
            };
            if resp.status() == 200 && start > 0 {
                // the server ignored the range: start over
                start = restart(f)?;
            }
            check_length(&resp, meta.size - start, file)?;
            // never more than the announced size: a body that goes on past it fails the
            // download as soon as the first byte too many arrives
            let body = Bounded::new(resp.into_reader(), meta.size - start, file);
            let broke = append_body(body, f, &mut start, meta.size, &mut buf, progress)?;
            f.flush()?;
            if start >= meta.size {
                return Ok(());
            }
            // the connection ended early: resume from here
            if attempt >= self.cfg.retries {
                bail!(
                    "the transfer broke off at byte {start} of {} {}; run again to resume",
                    meta.size,
                    broke.map(|e| format!("({e})")).unwrap_or_default()
                );
            }
            std::thread::sleep(self.backoff(attempt));
            attempt += 1;
        }
    }

    /// The commit a revision points at in the cache (a commit revision is itself).
    pub fn cached_commit(&self, repo: &str, revision: &str) -> Option<String> {
        if safe_path::is_commit(revision) {
            return Some(revision.to_string());
        }
        let r = join_under(&self.repo_dir(repo).join("refs"), revision, "revision").ok()?;
        fs::read_to_string(r)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|c| safe_path::is_commit(c))
    }

    /// A file of a revision in the cache, if it is complete there.
    pub fn cached(&self, repo: &str, revision: &str, file: &str) -> Option<CachedFile> {
        let commit = self.cached_commit(repo, revision)?;
        let path = join_under(
            &self.repo_dir(repo).join("snapshots"),
            &format!("{commit}/{file}"),
            "snapshot path",
        )
        .ok()?;
        let target = fs::canonicalize(&path).ok()?;
        let etag = target.file_name()?.to_string_lossy().into_owned();
        target
            .is_file()
            .then_some(CachedFile { path, commit, etag })
    }

    /// The files of a cached snapshot (for discovery offline).
    pub fn cached_files(&self, repo: &str, commit: &str) -> Vec<String> {
        let Ok(root) = join_under(&self.repo_dir(repo).join("snapshots"), commit, "commit") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}

/// A hub error: a final (not retried) HTTP status, or (`code` 0) any other failure leaving
/// [`Hub::redacted`]. It travels typed inside the `anyhow` error so that callers tell a missing
/// file or an exhausted range from other failures by its code, not by reading the message.
#[derive(Debug)]
pub struct HttpStatus {
    /// The HTTP status; 0 when the failure was not one.
    pub code: u16,
    message: String,
}

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpStatus {}

/// The hub's HTTP status behind `e`, if `e` is (or wraps) one.
pub fn http_status(e: &anyhow::Error) -> Option<u16> {
    e.chain()
        .find_map(|c| c.downcast_ref::<HttpStatus>())
        .map(|s| s.code)
        .filter(|&c| c != 0)
}

fn status_error(code: u16, resp: &ureq::Response, what: &str) -> anyhow::Error {
    anyhow::Error::new(HttpStatus {
        code,
        message: status_message(code, resp, what),
    })
}

fn status_message(code: u16, resp: &ureq::Response, what: &str) -> String {
    let hub_code = resp.header("X-Error-Code").unwrap_or("").to_string();
    let hub_msg = resp.header("X-Error-Message").unwrap_or("").to_string();
    match code {
        401 | 403 => format!(
            "{what}: HTTP {code}: access denied. The repository may be gated or private: set \
             HF_TOKEN to a token of an account that has accepted the model's licence on its hub page{}",
            if hub_msg.is_empty() { String::new() } else { format!(" ({hub_msg})") }
        ),
        404 => {
            let which = match hub_code.as_str() {
                "RepoNotFound" => "the repository does not exist (or is private: set HF_TOKEN)",
                "RevisionNotFound" => "the revision does not exist",
                "EntryNotFound" => "the file does not exist at that revision",
                _ => "not found (check the repository, the revision and the file name)",
            };
            format!("{what}: HTTP 404: {which}")
        }
        416 => format!("{what}: HTTP 416 (range not satisfiable)"),
        _ => format!("{what}: HTTP {code} {}", resp.status_text()),
    }
}

/// Where a redirect from `from` to `location` leads, resolved like a browser (relative to
/// `from`). A target with userinfo (`http://user:pass@host/`) is refused: it is how a URL is made
/// to look like one host while naming another.
fn redirect_target(from: &str, location: &str) -> Result<String> {
    let base = url::Url::parse(from).with_context(|| format!("bad URL {from:?}"))?;
    let target = base
        .join(location)
        .with_context(|| format!("not a URL: {location:?}"))?;
    if !target.username().is_empty() || target.password().is_some() {
        bail!("a redirect target with userinfo (user:password@) is refused");
    }
    if !matches!(target.scheme(), "http" | "https") {
        bail!("a redirect to a {:?} URL is refused", target.scheme());
    }
    Ok(target.into())
}

/// Whether `url` has the origin (scheme, host, port) of `endpoint`, compared parsed, never as
/// strings: `http://h:18311/` is not `http://h:1831`, `http://h:P@other/` is `other`, and
/// `https://huggingface.co.evil.example/` is not `https://huggingface.co`. A URL with userinfo
/// never matches.
fn same_origin(endpoint: &str, url: &str) -> bool {
    let (Ok(e), Ok(u)) = (url::Url::parse(endpoint), url::Url::parse(url)) else {
        return false;
    };
    u.username().is_empty()
        && u.password().is_none()
        && e.scheme() == u.scheme()
        && e.host_str().map(str::to_ascii_lowercase) == u.host_str().map(str::to_ascii_lowercase)
        && e.port_or_known_default() == u.port_or_known_default()
}

fn meta_from(what: &str, header: impl Fn(&str) -> Option<String>, url: String) -> Result<FileMeta> {
    let commit = header("X-Repo-Commit")
        .ok_or_else(|| anyhow!("{what}: the hub sent no X-Repo-Commit (is HF_ENDPOINT a hub?)"))?;
    let commit = commit.trim().to_string();
    check_commit(&commit, "X-Repo-Commit header").map_err(|e| anyhow!("{what}: {e}"))?;
    let etag = header("X-Linked-Etag")
        .or_else(|| header("ETag"))
        .ok_or_else(|| anyhow!("{what}: the hub sent no ETag"))?;
    let etag = etag
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string();
    let size = header("X-Linked-Size")
        .or_else(|| header("Content-Length"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("{what}: the hub sent no file size"))?;
    check_segment(&etag, "ETag").map_err(|e| anyhow!("{what}: {e}"))?;
    Ok(FileMeta {
        commit,
        etag,
        size,
        url,
    })
}

/// Opens (or creates) the partial download and returns it with its length, where the download
/// resumes; one longer than the whole file (`size`) is emptied.
fn open_partial(partial: &Path, size: u64) -> Result<(File, u64)> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)?;
    let mut start = f.seek(SeekFrom::End(0))?;
    if start > size {
        start = restart(&mut f)?;
    }
    Ok((f, start))
}

/// Empties a partial download and moves the write position back to its start (emptying alone
/// would leave the position at the old end: the next bytes would land after a run of zeros).
/// Returns the new start, 0.
fn restart(f: &mut File) -> std::io::Result<u64> {
    f.set_len(0)?;
    f.seek(SeekFrom::Start(0))
}

/// The largest repository listing read (the hub's largest are a few MB).
const MAX_LISTING: u64 = 64 << 20;

/// A body that went on past the size it was allowed: the server announced less than it sent.
#[derive(Debug)]
pub struct TooLong {
    what: String,
    limit: u64,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the server sent more than the {} bytes it announced; the download was \
             discarded (is HF_ENDPOINT a hub, or a proxy in between rewriting answers?)",
            self.what, self.limit
        )
    }
}

impl std::error::Error for TooLong {}

/// The one bounded reader for what the hub sends: at most `limit` bytes of `inner`; when more
/// arrives, reading fails with [`TooLong`] at once (one byte too many is enough to tell).
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
    what: String,
}

impl<R: Read> Bounded<R> {
    fn new(inner: R, limit: u64, what: &str) -> Self {
        Bounded {
            inner,
            left: limit,
            limit,
            what: what.to_string(),
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // the end, unless the server goes on
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(TooLong {
                    what: self.what.clone(),
                    limit: self.limit,
                })),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Refuses a response whose `Content-Length` is more than the `left` bytes still expected.
fn check_length(resp: &ureq::Response, left: u64, file: &str) -> Result<()> {
    match resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(n) if n > left => Err(anyhow::Error::new(TooLong {
            what: format!("{file} (Content-Length {n} where {left} bytes were left)"),
            limit: left,
        })),
        _ => Ok(()),
    }
}

/// Diagnoses an announced size the disk cannot hold before a byte is fetched (a hostile or
/// broken server announcing petabytes, or a disk too small), instead of filling the disk.
fn check_room(partial: &Path, need: u64, size: u64, file: &str) -> Result<()> {
    let Some(free) = free_bytes(partial.parent().unwrap_or(Path::new("."))) else {
        return Ok(());
    };
    if need > free {
        bail!(
            "{file}: the hub announced {size} bytes ({:.1} GB), {need} still to fetch, but only \
             {free} bytes are free in {}; free some space or point HF_HUB_CACHE at a larger disk \
             (an absurd size means HF_ENDPOINT is not answering like the hub)",
            size as f64 / 1e9,
            partial.parent().unwrap_or(Path::new(".")).display()
        );
    }
    Ok(())
}

/// Bytes free for this user on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0).then(|| st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// Copies a response body into `f`, advancing `start` and the progress per chunk, until the
/// body ends (`None`) or the connection breaks (`Some` of the read error). Fails when the
/// download is cancelled (after flushing what arrived), when the body is longer than announced
/// ([`TooLong`]) or when `f` cannot be written.
fn append_body(
    mut reader: impl Read,
    f: &mut File,
    start: &mut u64,
    size: u64,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<Option<std::io::Error>> {
    loop {
        if progress.cancelled() {
            f.flush()?;
            bail!("interrupted at byte {start} of {size}; `quantbench fetch` resumes from there");
        }
        match reader.read(buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                f.write_all(&buf[..n])?;
                *start += n as u64;
                progress.advance(n as u64);
            }
            Err(e) => {
                if e.get_ref().is_some_and(|i| i.is::<TooLong>()) {
                    let inner = e.into_inner().expect("checked");
                    let too_long = inner.downcast::<TooLong>().expect("checked");
                    return Err(anyhow::Error::new(*too_long));
                }
                return Ok(Some(e));
            }
        }
    }
}

/// Checks a finished download against the hub's size and, for LFS files, sha256. A bad file is
/// removed, so the next attempt starts clean.
fn verify(path: &Path, meta: &FileMeta, progress: &dyn Progress) -> Result<()> {
    let len = fs::metadata(path)?.len();
    if len != meta.size {
        fs::remove_file(path).ok();
        bail!(
            "size mismatch: the hub announced {} bytes, {len} arrived; the bad download was removed, run again",
            meta.size
        );
    }
    if is_sha256(&meta.etag) {
        progress.begin("verifying sha256", Some(len));
        let got = super::identity::sha256_file(path, progress);
        progress.end();
        let got = got?;
        if !got.eq_ignore_ascii_case(&meta.etag) {
            fs::remove_file(path).ok();
            bail!(
                "sha256 mismatch: the hub announced {}, the downloaded bytes hash to {got}; the \
                 corrupt download was removed, run again",
                meta.etag
            );
        }
    }
    Ok(())
}

/// `snapshots/COMMIT/FILE` → `../../blobs/ETAG` (one more `../` per folder in FILE).
fn link_snapshot(snapshot: &Path, etag: &str, file: &str) -> Result<()> {
    fs::create_dir_all(snapshot.parent().expect("has parent"))?;
    let depth = file.matches('/').count();
    let target = PathBuf::from(format!("{}../../blobs/{etag}", "../".repeat(depth)));
    match fs::read_link(snapshot) {
        Ok(t) if t == target => return Ok(()),
        Ok(_) => fs::remove_file(snapshot)?,
        Err(_) if snapshot.exists() => fs::remove_file(snapshot)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&target, snapshot)
        .with_context(|| format!("linking {}", snapshot.display()))
}

/// The most shards a model may have (the largest GGUFs on the hub have a few dozen).
const MAX_SHARDS: u32 = 1000;

/// `…-00001-of-00003.gguf` → (prefix before `-00001`, index 1, count 3).
pub fn shard_of(file: &str) -> Option<(String, u32, u32)> {
    let stem = file.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    if index.len() != 5 || count.len() != 5 {
        return None;
    }
    let (i, n): (u32, u32) = (index.parse().ok()?, count.parse().ok()?);
    // `-00001-of-00000` or 99,999 shards from a hostile listing are not a shard set
    if i == 0 || i > n || n > MAX_SHARDS {
        return None;
    }
    Some((prefix.to_string(), i, n))
}

/// All shard names of the set `file` belongs to (just `file` when it is not sharded).
pub fn shard_set(file: &str) -> Vec<String> {
    match shard_of(file) {
        Some((prefix, _, n)) => (1..=n)
            .map(|i| format!("{prefix}-{i:05}-of-{n:05}.gguf"))
            .collect(),
        None => vec![file.to_string()],
    }
}

/// Whether `name` carries the quant tag as a whole token (case-insensitive): `q4_k_m` matches
/// `model-Q4_K_M.gguf`, `F16` does not match `model-bf16.gguf`.
fn has_tag(name: &str, tag: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let t = tag.to_ascii_lowercase();
    let bytes = n.as_bytes();
    let mut from = 0;
    while let Some(i) = n[from..].find(&t) {
        let s = from + i;
        let e = s + t.len();
        let before = s == 0 || !bytes[s - 1].is_ascii_alphanumeric();
        let after = e == bytes.len() || !(bytes[e].is_ascii_alphanumeric() || bytes[e] == b'_');
        if before && after {
            return true;
        }
        from = s + 1;
    }
    false
}

/// The tags a quant goes by in file names: its name, and `fp16`/`fp32` for F16/F32.
fn tags(quant: Quant) -> Vec<&'static str> {
    match quant.name() {
        "F16" => vec!["F16", "FP16"],
        "F32" => vec!["F32", "FP32"],
        n => vec![n],
    }
}

/// Finds the GGUF file (or shard set) for `quant` among a repo's files. `Ok(None)` when there is
/// none; an error listing the candidates when there is more than one. Multimodal projector
/// files (`mmproj*`) are never candidates.
pub fn find_quant(files: &[String], quant: Quant) -> Result<Option<Vec<String>>> {
    let mut sets: Vec<Vec<String>> = Vec::new();
    for f in files {
        let base = f.rsplit('/').next().unwrap_or(f);
        if !f.to_ascii_lowercase().ends_with(".gguf")
            || base.to_ascii_lowercase().starts_with("mmproj")
            || !tags(quant).iter().any(|t| has_tag(f, t))
        {
            continue;
        }
        let set = shard_set(f);
        if !sets.contains(&set) {
            sets.push(set);
        }
    }
    match sets.len() {
        0 => Ok(None),
        1 => Ok(sets.pop()),
        _ => bail!(
            "{} files match {quant}: {}; name one with `file = \"...\"` in the config",
            sets.len(),
            sets.iter()
                .map(|s| s[0].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quant {
        Quant::parse(s).unwrap()
    }

    #[test]
    fn the_status_survives_added_context() {
        let e = anyhow::Error::new(HttpStatus {
            code: 404,
            message: "acme/x@main: a.gguf: HTTP 404: the file does not exist".into(),
        })
        .context("acme/x@main: downloading a.gguf");
        assert_eq!(http_status(&e), Some(404));
        assert!(format!("{e:#}").contains("HTTP 404: the file does not exist"));
        assert_eq!(http_status(&anyhow!("HTTP 404 in a message only")), None);
    }

    #[test]
    fn tags_match_whole_tokens_only() {
        assert!(has_tag("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"));
        assert!(has_tag("Model.F16.gguf", "f16"));
        assert!(!has_tag("model-bf16.gguf", "F16"));
        assert!(!has_tag("model-q4_k_m_l.gguf", "Q4_K_M"));
        assert!(!has_tag("model-q8_0.gguf", "Q8"));
        assert!(has_tag("Q8_0/model-00001-of-00002.gguf", "q8_0"));
    }

    #[test]
    fn discovery_finds_one_file_or_says_which() {
        let files: Vec<String> = [
            "README.md",
            "m-F16.gguf",
            "m-BF16.gguf",
            "m-Q8_0.gguf",
            "m-fp32.gguf",
            "m-Q4_K_M-00001-of-00002.gguf",
            "m-Q4_K_M-00002-of-00002.gguf",
            "mmproj-m-f16.gguf",
            "other-q8_0.gguf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            find_quant(&files, q("F16")).unwrap(),
            Some(vec!["m-F16.gguf".into()])
        );
        assert_eq!(
            find_quant(&files, q("Q4_K_M")).unwrap(),
            Some(vec![
                "m-Q4_K_M-00001-of-00002.gguf".into(),
                "m-Q4_K_M-00002-of-00002.gguf".into()
            ])
        );
        assert_eq!(find_quant(&files, q("Q6_K")).unwrap(), None);
        assert_eq!(
            find_quant(&files, q("F32")).unwrap(),
            Some(vec!["m-fp32.gguf".into()])
        );
        let e = find_quant(&files, q("Q8_0")).unwrap_err().to_string();
        assert!(
            e.contains("m-Q8_0.gguf") && e.contains("other-q8_0.gguf"),
            "{e}"
        );
    }

    #[test]
    fn shards() {
        assert_eq!(
            shard_of("a/b-00002-of-00003.gguf"),
            Some(("a/b".into(), 2, 3))
        );
        assert_eq!(shard_of("b.gguf"), None);
        assert_eq!(shard_of("b-00001-of-00000.gguf"), None);
        assert_eq!(shard_of("b-00000-of-00002.gguf"), None);
        assert_eq!(shard_of("b-00003-of-00002.gguf"), None);
        assert_eq!(shard_of("b-00001-of-99999.gguf"), None);
        assert_eq!(
            shard_set("b-00001-of-00000.gguf"),
            vec!["b-00001-of-00000.gguf"]
        );
        assert_eq!(shard_set("x-00001-of-00002.gguf").len(), 2);
    }

    #[test]
    fn tokens_stay_secret() {
        let t = Token("hf_secret".into());
        assert!(!format!("{t:?}").contains("secret"));
        let cfg = HubConfig {
            endpoint: "http://x".into(),
            token: TokenSource::Env {
                var: "HF_TOKEN",
                value: "hf_secret".into(),
            },
            cache_dir: PathBuf::new(),
            offline: false,
            retries: 0,
            backoff: Duration::ZERO,
            proxies: Default::default(),
        };
        assert!(!format!("{cfg:?}").contains("hf_secret"));
    }

    #[test]
    fn the_token_goes_to_the_endpoints_origin_only() {
        for (endpoint, url, same) in [
            (
                "http://h:1831",
                "http://h:1831/o/n/resolve/main/a.gguf",
                true,
            ),
            ("http://h:1831", "http://H:1831/x", true),
            (
                "https://huggingface.co",
                "https://huggingface.co:443/x",
                true,
            ),
            // a port that starts with the endpoint's port
            ("http://h:1831", "http://h:18311/x", false),
            // userinfo that looks like the endpoint's host and port
            ("http://h:1831", "http://h:1831@other:9/x", false),
            ("http://h:1831", "http://user@h:1831/x", false),
            // a host that starts with the endpoint's host
            (
                "https://huggingface.co",
                "https://huggingface.co.evil.example/x",
                false,
            ),
            ("https://huggingface.co", "http://huggingface.co/x", false),
            (
                "https://huggingface.co",
                "https://cdn-lfs.huggingface.co/x",
                false,
            ),
            ("https://huggingface.co", "not a url", false),
        ] {
            assert_eq!(same_origin(endpoint, url), same, "{endpoint} vs {url}");
        }
    }

    #[test]
    fn redirect_targets_with_userinfo_are_refused() {
        assert_eq!(
            redirect_target("http://h:1/o/n/resolve/main/a", "/o/m/resolve/main/a").unwrap(),
            "http://h:1/o/m/resolve/main/a"
        );
        assert_eq!(
            redirect_target("http://h:1/a", "https://cdn.example/b?x=1").unwrap(),
            "https://cdn.example/b?x=1"
        );
        for bad in [
            "http://h:1@evil:2/x",
            "http://u:p@cdn.example/x",
            "file:///etc/passwd",
        ] {
            assert!(redirect_target("http://h:1/a", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostile_metadata_is_refused_naming_the_header() {
        let headers = |commit: &'static str, etag: &'static str| {
            move |k: &str| match k {
                "X-Repo-Commit" => Some(commit.to_string()),
                "X-Linked-Etag" => Some(etag.to_string()),
                "X-Linked-Size" => Some("10".to_string()),
                _ => None,
            }
        };
        let good = "0123456789abcdef0123456789abcdef01234567";
        assert!(meta_from("w", headers(good, "\"abc\""), "u".into()).is_ok());
        let e = meta_from("w", headers("../../../../some/dir", "abc"), "u".into()).unwrap_err();
        assert!(e.to_string().contains("X-Repo-Commit"), "{e}");
        assert!(meta_from("w", headers(good, "../blob"), "u".into()).is_err());
        assert!(meta_from("w", headers(good, ".."), "u".into()).is_err());
    }

    #[test]
    fn encoding() {
        let h = Hub::new(HubConfig {
            endpoint: "http://h".into(),
            token: TokenSource::None,
            cache_dir: PathBuf::new(),
            offline: false,
            retries: 0,
            backoff: Duration::ZERO,
            proxies: Default::default(),
        });
        assert_eq!(
            h.resolve_url("o/n", "refs/pr/1", "dir/a b.gguf"),
            "http://h/o/n/resolve/refs%2Fpr%2F1/dir/a%20b.gguf"
        );
    }
}
