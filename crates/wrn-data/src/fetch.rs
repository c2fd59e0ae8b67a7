//! Downloading a manifest's files: streamed, resumable, and never half-done.
//!
//! For each file the URLs are tried in order: the user's mirrors (`--mirror`, `WRN_DATA_MIRROR`), then
//! the manifest's `url`, then its `mirrors`. Bytes land in `<file>.part`. A partial `.part` is resumed
//! with an HTTP `Range` request; when the server ignores the range (answers 200), the part is restarted
//! cleanly. Connection errors, stalls (no byte within the timeout), 408, 429 and 5xx are retried with
//! exponential backoff, a bounded number of times per URL; 4xx answers, HTML pages and a body of the
//! wrong length move on to the next URL at once. When the body is complete, the size is checked and
//! then the SHA-256; only then is the part renamed to its final name and stamped as verified. A part
//! whose hash does not match is moved aside to `<file>.rejected` (so it is never mistaken for the file)
//! and the next URL is tried. Proxies come from `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
//!
//! A resumed transfer that does not fit the part (a `Content-Range` that starts elsewhere, a length
//! that does not add up to the file's, a 416, a range sent compressed) or whose finished file fails the
//! hash means the part does not hold the start of this file: the part is discarded and the same URL is
//! asked again from byte 0, once per file; a second such failure moves on, saying so.
//!
//! Requests say `Accept-Encoding: identity`. A server that compresses the body anyway
//! (`Content-Encoding: gzip` or `deflate`) is decoded here with flate2, unless its `Content-Length` is
//! the file's own size, which is a `.gz` file labelled with its own encoding rather than a compressed
//! body (the hash decides either way). reqwest's `gzip`/`deflate` features are not used: they decode
//! every response so labelled, that mislabelled `.tar.gz` included, and hide the length the checks need.
//!
//! `file://` URLs are copied from the local disk through the same checks; only a regular file of the
//! manifest's size is read (never a FIFO or a device, whose reads may never end), and the copy keeps
//! the source's restrictive permission bits (a `rw-------` source is not copied world-readable).
//!
//! Progress goes through [`wrn_progress`]: one byte-counting task per request, one per hash.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wrn_progress::{Progress, Silent, Unit};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::store::{self, Store};
use crate::verify;

/// Mirrors (comma-separated base URLs) tried before the manifest's URLs.
pub const MIRROR_ENV: &str = "WRN_DATA_MIRROR";

#[derive(Clone)]
pub struct FetchOptions<'a> {
    /// Base URLs (or full file URLs) tried first, in order.
    pub mirrors: Vec<String>,
    /// Attempts per URL before moving on (at least 1).
    pub attempts: u32,
    /// Delay before the first retry; doubles with each retry.
    pub backoff: Duration,
    /// Connect timeout, and the longest wait for the next bytes of a body.
    pub timeout: Duration,
    /// Where transfers and hashes are counted ([`Silent`] by default).
    pub progress: &'a dyn Progress,
    /// Honour `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
    pub proxy_from_env: bool,
}

impl Default for FetchOptions<'_> {
    fn default() -> Self {
        FetchOptions {
            mirrors: vec![],
            attempts: 4,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            progress: &Silent,
            proxy_from_env: true,
        }
    }
}

impl std::fmt::Debug for FetchOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("mirrors", &self.mirrors)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .field("proxy_from_env", &self.proxy_from_env)
            .finish_non_exhaustive()
    }
}

/// What fetching one file did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    pub file: String,
    pub path: PathBuf,
    /// The URL the verified bytes came from (after redirects); `None` when the file was already verified.
    pub url: Option<String>,
    /// Body bytes received over all attempts.
    pub bytes_transferred: u64,
    /// Requests made.
    pub requests: u32,
    /// Why earlier attempts failed, in order.
    pub failures: Vec<String>,
}

/// The URLs to try for `entry`, in order. A mirror that does not already end with the file name is a
/// base URL the name is appended to.
pub fn candidate_urls(entry: &FileEntry, mirrors: &[String]) -> Vec<String> {
    let mut urls: Vec<String> = mirrors
        .iter()
        .filter(|m| !m.trim().is_empty())
        .map(|m| {
            let m = m.trim();
            if m.ends_with(&format!("/{}", entry.name)) {
                m.to_string()
            } else {
                format!("{}/{}", m.trim_end_matches('/'), entry.name)
            }
        })
        .collect();
    urls.push(entry.url.clone());
    urls.extend(entry.mirrors.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    urls.retain(|u| seen.insert(u.clone()));
    urls
}

/// Builds the HTTP client used for every download.
pub fn client(opts: &FetchOptions) -> Result<reqwest::blocking::Client> {
    let mut b = reqwest::blocking::Client::builder()
        .user_agent(concat!("wrn/", env!("CARGO_PKG_VERSION"), " (Wide Residual Networks reproduction)"))
        .connect_timeout(opts.timeout)
        .timeout(opts.timeout);
    if !opts.proxy_from_env {
        b = b.no_proxy();
    }
    b.build().map_err(|e| Error::Fetch { file: String::new(), attempts: vec![format!("HTTP client: {e}")] })
}

/// What one request did.
enum Outcome {
    /// Verified and in place; the URL the bytes came from.
    Done(String),
    /// Try the same URL again after the backoff.
    Retry(String),
    /// The part was discarded: try the same URL again at once, from byte 0.
    Restart(String),
    /// This URL cannot serve the file.
    NextUrl(String),
}

/// A body to append to the part, from byte `start` of the file.
struct Body {
    reader: Box<dyn Read>,
    url: String,
    start: u64,
    /// The `Content-Encoding` being decoded, if any.
    decoding: Option<&'static str>,
}

/// What a `Content-Encoding` header asks of the reader.
enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Unknown(String),
}

impl Encoding {
    fn of(headers: &reqwest::header::HeaderMap) -> Encoding {
        let value = headers
            .get(reqwest::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match value.as_str() {
            "" | "identity" => Encoding::Identity,
            "gzip" | "x-gzip" => Encoding::Gzip,
            "deflate" => Encoding::Deflate,
            _ => Encoding::Unknown(value),
        }
    }
}

struct Attempt<'a> {
    entry: &'a FileEntry,
    dest: &'a Path,
    part: PathBuf,
    progress: &'a dyn Progress,
    transferred: u64,
    /// The one restart from byte 0 after an inconsistent resume has been spent.
    restarted: bool,
}

/// Fetches one file into `dest` (its final path). A file already verified is left alone.
pub fn fetch_file(
    client: &reqwest::blocking::Client,
    entry: &FileEntry,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<Fetched> {
    let mut report = Fetched {
        file: entry.name.clone(),
        path: dest.into(),
        url: None,
        bytes_transferred: 0,
        requests: 0,
        failures: vec![],
    };
    if keep_verified(dest, entry, opts.progress)? {
        return Ok(report);
    }
    if entry.manual {
        return Err(Error::Fetch {
            file: entry.name.clone(),
            attempts: vec!["not downloadable anonymously; bring it and run `wrn data import`".into()],
        });
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let mut attempt = Attempt {
        entry,
        dest,
        part: store::part_path(dest),
        progress: opts.progress,
        transferred: 0,
        restarted: false,
    };
    let attempts = opts.attempts.max(1);
    for url in candidate_urls(entry, &opts.mirrors) {
        let mut failed = 0;
        while failed < attempts {
            report.requests += 1;
            let outcome = attempt.once(client, &url)?;
            report.bytes_transferred = attempt.transferred;
            let why = match outcome {
                Outcome::Done(final_url) => {
                    tracing::info!("{}: verified, from {final_url}", entry.name);
                    report.url = Some(final_url);
                    return Ok(report);
                }
                Outcome::Restart(why) => why,
                Outcome::Retry(why) => {
                    failed += 1;
                    if failed < attempts {
                        std::thread::sleep(opts.backoff * 2u32.saturating_pow(failed - 1));
                    }
                    why
                }
                Outcome::NextUrl(why) => {
                    failed = attempts;
                    why
                }
            };
            tracing::warn!("{}: {url}: {why}", entry.name);
            report.failures.push(format!("{url}: {why}"));
        }
    }
    Err(Error::Fetch { file: entry.name.clone(), attempts: report.failures })
}

/// Whether `dest` already holds the verified file. A file there that is not the one the manifest
/// describes is moved aside to `<file>.rejected` rather than trusted or deleted.
fn keep_verified(dest: &Path, entry: &FileEntry, progress: &dyn Progress) -> Result<bool> {
    if !dest.exists() {
        return Ok(false);
    }
    let task = progress.task(&format!("checking {}", entry.name), Unit::Bytes, Some(entry.size), 0);
    match verify::ensure_verified(dest, entry, Some(&*task)) {
        Ok(()) => {
            task.finish();
            Ok(true)
        }
        Err(e) => {
            task.abandon("not the manifest's file");
            let rejected = store::rejected_path(dest);
            tracing::warn!("{e}; moving it to {} and downloading again", rejected.display());
            std::fs::rename(dest, &rejected).at(dest)?;
            Ok(false)
        }
    }
}

impl Attempt<'_> {
    /// One request (or local copy). Local failures (disk full, unwritable folder) are returned as errors
    /// and stop the fetch: no mirror can fix them.
    fn once(&mut self, client: &reqwest::blocking::Client, url: &str) -> Result<Outcome> {
        let have = self.part_len()?;
        if have == self.entry.size {
            // A complete part from an earlier run: its bytes came from earlier requests.
            return self.finish(url, true);
        }
        let opened = match url.strip_prefix("file://") {
            Some(local) => self.open_local(local, have)?,
            None => self.open_http(client, url, have)?,
        };
        let body = match opened {
            Ok(body) => body,
            Err(outcome) => return Ok(outcome),
        };
        let (start, url) = (body.start, body.url.clone());
        match self.stream(body)? {
            Some(outcome) => Ok(outcome),
            None => self.finish(&url, start > 0),
        }
    }

    /// Bytes already in the part; a part longer than the file is removed.
    fn part_len(&self) -> Result<u64> {
        let have = std::fs::metadata(&self.part).map(|m| m.len()).unwrap_or(0);
        if have > self.entry.size {
            std::fs::remove_file(&self.part).at(&self.part)?;
            return Ok(0);
        }
        Ok(have)
    }

    /// The part does not hold the start of this file: it is removed, and the same URL is asked again
    /// from byte 0, once per file.
    fn restart(&mut self, why: String) -> Result<Outcome> {
        match std::fs::remove_file(&self.part) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&self.part),
            _ => {}
        }
        if self.restarted {
            return Ok(Outcome::NextUrl(format!("{why}, again after restarting from byte 0")));
        }
        self.restarted = true;
        Ok(Outcome::Restart(format!("{why}; discarded the partial download and restarting from byte 0")))
    }

    /// A `file://` source: a regular file of the file's size, read from byte `have`. The part takes
    /// the source's restrictive permission bits.
    fn open_local(&mut self, local: &str, have: u64) -> Result<std::result::Result<Body, Outcome>> {
        let meta = match std::fs::metadata(local) {
            Ok(m) => m,
            Err(e) => return Ok(Err(Outcome::NextUrl(format!("{local}: {e}")))),
        };
        if !meta.is_file() {
            return Ok(Err(Outcome::NextUrl(format!(
                "{local} is not a regular file (a {}); a file:// source must be a plain file",
                file_kind(&meta)
            ))));
        }
        if meta.len() != self.entry.size {
            return Ok(Err(Outcome::NextUrl(format!("{local} is {} bytes, expected {}", meta.len(), self.entry.size))));
        }
        let mut file = std::fs::File::open(local).at(local)?;
        file.seek(SeekFrom::Start(have)).at(local)?;
        let part = OpenOptions::new().create(true).append(true).open(&self.part).at(&self.part)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The part's own mode (the umask's) narrowed by the source's; the owner keeps writing it.
            let mode = part.metadata().at(&self.part)?.permissions().mode() & (meta.permissions().mode() | 0o200);
            part.set_permissions(std::fs::Permissions::from_mode(mode & 0o777)).at(&self.part)?;
        }
        drop(part);
        Ok(Ok(Body { reader: Box::new(file), url: format!("file://{local}"), start: have, decoding: None }))
    }

    /// An HTTP request for the bytes from `have` on, and the checks of its answer: status, range,
    /// type, encoding and length.
    fn open_http(
        &mut self,
        client: &reqwest::blocking::Client,
        url: &str,
        have: u64,
    ) -> Result<std::result::Result<Body, Outcome>> {
        let mut req = client.get(url).header(reqwest::header::ACCEPT_ENCODING, "identity");
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = match req.send() {
            Ok(r) => r,
            Err(e) => return Ok(Err(Outcome::Retry(format!("request failed: {}", error_chain(&e.without_url()))))),
        };
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            return Ok(Err(Outcome::Retry(format!("HTTP {status}"))));
        }
        let start = match status.as_u16() {
            416 => return self.restart(format!("HTTP 416 for the resumed range bytes {have}-")).map(Err),
            206 => {
                let range = header(&resp, reqwest::header::CONTENT_RANGE);
                let start = range.strip_prefix("bytes ").and_then(|v| v.split('-').next()?.parse::<u64>().ok());
                if start != Some(have) {
                    let got = if range.is_empty() { "none".to_string() } else { format!("`{range}`") };
                    let why = format!("asked for bytes {have}- and got Content-Range {got}");
                    return self.restart(why).map(Err);
                }
                have
            }
            200 => {
                if have > 0 {
                    tracing::info!("{}: {url} ignored the Range request; restarting from byte 0", self.entry.name);
                    std::fs::File::create(&self.part).at(&self.part)?;
                }
                0
            }
            _ => return Ok(Err(Outcome::NextUrl(format!("HTTP {status}")))),
        };
        let content_type = header(&resp, reqwest::header::CONTENT_TYPE);
        if content_type.starts_with("text/html") {
            let why = format!("served an HTML page (Content-Type {content_type}), not the file");
            return Ok(Err(Outcome::NextUrl(why)));
        }
        self.body(resp, start, &content_type)
    }

    /// The response's body, decoded when it was sent compressed, once its length adds up.
    fn body(
        &mut self,
        resp: reqwest::blocking::Response,
        start: u64,
        content_type: &str,
    ) -> Result<std::result::Result<Body, Outcome>> {
        let size = self.entry.size;
        let url = resp.url().to_string();
        let length = resp.content_length();
        let decoding = match Encoding::of(resp.headers()) {
            Encoding::Unknown(e) => {
                let why = format!("sent the file with Content-Encoding `{e}`, which cannot be decoded here");
                return Ok(Err(Outcome::NextUrl(why)));
            }
            // The file's own size: a `.gz` file labelled with its own encoding; taken as it is.
            Encoding::Gzip | Encoding::Deflate if length == Some(size) && start == 0 => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Deflate => Some("deflate"),
            Encoding::Identity => None,
        };
        if let Some(e) = decoding {
            if start > 0 {
                return self.restart(format!("sent the resumed range compressed (Content-Encoding {e})")).map(Err);
            }
            let reader: Box<dyn Read> = match e {
                "gzip" => Box::new(flate2::read::MultiGzDecoder::new(resp)),
                _ => deflate_reader(resp),
            };
            return Ok(Ok(Body { reader, url, start, decoding }));
        }
        if let Some(len) = length.filter(|&len| start + len != size) {
            let why = format!("serves {} bytes, expected {size} (Content-Type `{content_type}`)", start + len);
            return match start {
                0 => Ok(Err(Outcome::NextUrl(why))),
                _ => self.restart(format!("{why} after resuming at byte {start}")).map(Err),
            };
        }
        Ok(Ok(Body { reader: Box::new(resp), url, start, decoding: None }))
    }

    /// Appends the body to the part. `None` when the part now holds the whole file.
    fn stream(&mut self, body: Body) -> Result<Option<Outcome>> {
        let Body { mut reader, start, decoding, .. } = body;
        let size = self.entry.size;
        let dir = self.dest.parent().unwrap_or(Path::new("."));
        crate::space::ensure(dir, size - start, &format!("the rest of {}", self.entry.name))?;
        let mut part = OpenOptions::new().create(true).append(true).open(&self.part).at(&self.part)?;
        let task = self.progress.task(&self.entry.name, Unit::Bytes, Some(size), start);
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = start;
        loop {
            let k = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if decoding.is_some()
                        && matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData) =>
                {
                    task.abandon("does not decode");
                    drop(part);
                    std::fs::remove_file(&self.part).at(&self.part)?;
                    let e = decoding.unwrap_or_default();
                    return Ok(Some(Outcome::NextUrl(format!(
                        "the body sent with Content-Encoding {e} does not decode"
                    ))));
                }
                Err(e) => {
                    part.flush().at(&self.part)?;
                    task.abandon("connection lost");
                    return Ok(Some(Outcome::Retry(format!("connection lost after {got} of {size} bytes: {e}"))));
                }
            };
            if got + k as u64 > size {
                task.abandon("too long");
                drop(part);
                let why = format!("sent more than the expected {size} bytes");
                if start > 0 {
                    return self.restart(format!("{why} after resuming at byte {start}")).map(Some);
                }
                std::fs::remove_file(&self.part).at(&self.part)?;
                return Ok(Some(Outcome::NextUrl(why)));
            }
            part.write_all(&buf[..k]).at(&self.part)?;
            got += k as u64;
            self.transferred += k as u64;
            task.advance(k as u64);
        }
        part.sync_all().at(&self.part)?;
        drop(part);
        if got < size {
            task.abandon("truncated");
            return Ok(Some(Outcome::Retry(format!("truncated: the body ended after {got} of {size} bytes"))));
        }
        task.finish();
        Ok(None)
    }

    /// The part has the full size: hash it, then rename and stamp, or set it aside. A part that was
    /// resumed (holding bytes of earlier requests) and fails the hash is discarded and restarted.
    fn finish(&mut self, url: &str, resumed: bool) -> Result<Outcome> {
        // Hashing the part from disk covers resumed parts too; it reads from the page cache.
        let task = self.progress.task(&format!("hashing {}", self.entry.name), Unit::Bytes, Some(self.entry.size), 0);
        let actual = verify::sha256_file(&self.part, Some(&*task))?;
        task.finish();
        if actual != self.entry.sha256 {
            let mismatch = format!("SHA-256 mismatch: expected {}, got {actual}", self.entry.sha256);
            if resumed {
                return self.restart(format!("{mismatch} for a download resumed from an earlier part"));
            }
            let rejected = store::rejected_path(self.dest);
            std::fs::rename(&self.part, &rejected).at(&self.part)?;
            return Ok(Outcome::NextUrl(format!(
                "{mismatch} (size {} ok; kept as {})",
                self.entry.size,
                rejected.display()
            )));
        }
        std::fs::rename(&self.part, self.dest).at(self.dest)?;
        verify::write_stamp(self.dest, &actual)?;
        Ok(Outcome::Done(url.to_string()))
    }
}

/// A header's value as text (empty when absent or not text).
fn header(resp: &reqwest::blocking::Response, name: reqwest::header::HeaderName) -> String {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// HTTP's `deflate` is a zlib stream (RFC 9110), but some servers send raw deflate: the first two
/// bytes tell them apart (a zlib header is method 8 and a multiple of 31).
fn deflate_reader(body: impl Read + 'static) -> Box<dyn Read> {
    let mut body = BufReader::new(body);
    let zlib = match body.fill_buf() {
        Ok([cmf, flg, ..]) => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => true,
    };
    if zlib {
        Box::new(flate2::bufread::ZlibDecoder::new(body))
    } else {
        Box::new(flate2::bufread::DeflateDecoder::new(body))
    }
}

/// What a non-regular file is, in words.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_block_device() || t.is_char_device() {
            return "device";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    if t.is_dir() {
        "folder"
    } else {
        "special file"
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Fetches every file of a dataset. Files that must be brought by hand are listed, with where to get
/// them and the command to run, in the error; when an alternative stands in for them (its layout
/// checked), it is reported as already verified and nothing is fetched.
pub fn fetch_dataset(store: &Store, manifest: &Manifest, opts: &FetchOptions) -> Result<Vec<Fetched>> {
    if let Some(missing) = store.missing_manual(manifest) {
        return Err(missing);
    }
    let all_manual_here =
        manifest.files.iter().all(|f| !f.manual || verify::is_stamped(&store.file_path(manifest, f), f));
    if !all_manual_here {
        let (name, a) = manifest
            .alternatives
            .iter()
            .find(|(name, _)| store.alternative_digest(manifest, name).is_some())
            .expect("Store::missing_manual found an alternative standing in");
        tracing::info!("{}: using the {name} alternative {}", manifest.name, a.file);
        let path = store.alternative_path(manifest, a);
        return Ok(vec![Fetched {
            file: a.file.clone(),
            path,
            url: None,
            bytes_transferred: 0,
            requests: 0,
            failures: vec![],
        }]);
    }
    let client = client(opts)?;
    manifest
        .files
        .iter()
        .map(|f| {
            fetch_file(&client, f, &store.file_path(manifest, f), opts).map_err(|e| match e {
                Error::Fetch { file, attempts } if !f.manual => {
                    Error::Unreachable { file, dataset: manifest.name.clone(), tried: once_each(&attempts) }
                }
                e => e,
            })
        })
        .collect()
}

/// Failures as "url: why", each said once, with how many attempts ended that way.
fn once_each(attempts: &[String]) -> Vec<String> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for a in attempts {
        match seen.iter_mut().find(|(s, _)| s == a) {
            Some((_, n)) => *n += 1,
            None => seen.push((a.clone(), 1)),
        }
    }
    seen.into_iter().map(|(a, n)| if n == 1 { a } else { format!("{a} ({n} attempts)") }).collect()
}
