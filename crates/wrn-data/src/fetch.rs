//! Downloading a manifest's files: streamed, hashed while streaming, resumable, and never half-done.
//!
//! For each file the URLs are tried in order: the user's mirrors (`--mirror`, `WRN_DATA_MIRROR`), then
//! the manifest's `url`, then its `mirrors`. Bytes land in `<file>.part`. A partial `.part` is resumed
//! with an HTTP `Range` request; when the server ignores the range (answers 200), the part is restarted
//! cleanly. Connection errors, stalls (no byte within the timeout), 408, 429 and 5xx are retried with
//! exponential backoff, a bounded number of times per URL; 4xx answers, HTML pages and a body of the
//! wrong length move on to the next URL at once. When the body is complete, the size is checked and
//! then the SHA-256 (computed while streaming); only then is the part renamed to its final name and
//! stamped as verified. A part whose hash does not match is moved aside to `<file>.rejected` (so it is
//! never mistaken for the file) and the next URL is tried. Proxies come from `HTTPS_PROXY`, `HTTP_PROXY`
//! and `NO_PROXY`. `file://` URLs are copied from the local disk through the same checks.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::store::{self, Store};
use crate::verify;

/// Mirrors (comma-separated base URLs) tried before the manifest's URLs.
pub const MIRROR_ENV: &str = "WRN_DATA_MIRROR";

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Base URLs (or full file URLs) tried first, in order.
    pub mirrors: Vec<String>,
    /// Attempts per URL before moving on (at least 1).
    pub attempts: u32,
    /// Delay before the first retry; doubles with each retry.
    pub backoff: Duration,
    /// Connect timeout, and the longest wait for the next bytes of a body.
    pub timeout: Duration,
    pub progress: bool,
    /// Honour `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
    pub proxy_from_env: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            mirrors: vec![],
            attempts: 4,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            progress: true,
            proxy_from_env: true,
        }
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

enum Outcome {
    Done(String),
    Retry(String),
    NextUrl(String),
}

struct Attempt<'a> {
    entry: &'a FileEntry,
    dest: &'a Path,
    part: PathBuf,
    bar: &'a ProgressBar,
    transferred: u64,
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
    if dest.exists() {
        match verify::ensure_verified(dest, entry, None) {
            Ok(()) => return Ok(report),
            Err(e) => {
                // Not the file the manifest describes: keep it aside rather than trusting or deleting it.
                tracing::warn!("{e}; moving it to {} and downloading again", store::rejected_path(dest).display());
                std::fs::rename(dest, store::rejected_path(dest)).at(dest)?;
            }
        }
    }
    if entry.manual {
        return Err(Error::Fetch {
            file: entry.name.clone(),
            attempts: vec![format!("not downloadable anonymously; bring it and run `wrn data import`")],
        });
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let bar = if opts.progress {
        let bar = ProgressBar::with_draw_target(Some(entry.size), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(entry.name.clone());
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut attempt = Attempt { entry, dest, part: store::part_path(dest), bar: &bar, transferred: 0 };
    let attempts = opts.attempts.max(1);
    for url in candidate_urls(entry, &opts.mirrors) {
        for i in 0..attempts {
            report.requests += 1;
            let outcome = match attempt.once(client, &url) {
                Ok(o) => o,
                Err(e) => {
                    bar.abandon();
                    return Err(e);
                }
            };
            report.bytes_transferred = attempt.transferred;
            match outcome {
                Outcome::Done(final_url) => {
                    bar.finish_and_clear();
                    tracing::info!("{}: verified, from {final_url}", entry.name);
                    report.url = Some(final_url);
                    return Ok(report);
                }
                Outcome::Retry(why) => {
                    tracing::warn!("{}: {url}: {why}", entry.name);
                    report.failures.push(format!("{url}: {why}"));
                    if i + 1 < attempts {
                        std::thread::sleep(opts.backoff * 2u32.saturating_pow(i));
                    }
                }
                Outcome::NextUrl(why) => {
                    tracing::warn!("{}: {url}: {why}", entry.name);
                    report.failures.push(format!("{url}: {why}"));
                    break;
                }
            }
        }
    }
    bar.abandon();
    Err(Error::Fetch { file: entry.name.clone(), attempts: report.failures })
}

impl Attempt<'_> {
    /// One request (or local copy). Local failures (disk full, unwritable folder) are returned as errors
    /// and stop the fetch: no mirror can fix them.
    fn once(&mut self, client: &reqwest::blocking::Client, url: &str) -> Result<Outcome> {
        let size = self.entry.size;
        let mut have = std::fs::metadata(&self.part).map(|m| m.len()).unwrap_or(0);
        if have > size {
            std::fs::remove_file(&self.part).at(&self.part)?;
            have = 0;
        }
        if have == size {
            return self.finish(url);
        }
        let (mut body, final_url): (Box<dyn Read>, String) = if let Some(local) = url.strip_prefix("file://") {
            let mut f = match std::fs::File::open(local) {
                Ok(f) => f,
                Err(e) => return Ok(Outcome::NextUrl(format!("{local}: {e}"))),
            };
            f.seek(SeekFrom::Start(have)).at(local)?;
            (Box::new(f), url.to_string())
        } else {
            let mut req = client.get(url);
            if have > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) => return Ok(Outcome::Retry(format!("request failed: {}", error_chain(&e.without_url())))),
            };
            let status = resp.status();
            let final_url = resp.url().to_string();
            if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                return Ok(Outcome::Retry(format!("HTTP {status}")));
            }
            if status.as_u16() == 416 {
                std::fs::remove_file(&self.part).at(&self.part)?;
                return Ok(Outcome::Retry("HTTP 416 for the resumed range; restarting the part".into()));
            }
            if status.as_u16() == 206 {
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    std::fs::remove_file(&self.part).at(&self.part)?;
                    return Ok(Outcome::Retry(format!("asked for bytes {have}-, got Content-Range {start:?}")));
                }
            } else if status.as_u16() == 200 {
                if have > 0 {
                    tracing::info!("{}: {url} ignored the Range request; restarting from byte 0", self.entry.name);
                    have = 0;
                    std::fs::File::create(&self.part).at(&self.part)?;
                }
            } else {
                return Ok(Outcome::NextUrl(format!("HTTP {status}")));
            }
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if content_type.starts_with("text/html") {
                return Ok(Outcome::NextUrl(format!(
                    "served an HTML page (Content-Type {content_type}), not the file"
                )));
            }
            if let Some(len) = resp.content_length() {
                if have + len != size {
                    return Ok(Outcome::NextUrl(format!(
                        "serves {} bytes, expected {size} (Content-Type `{content_type}`)",
                        have + len
                    )));
                }
            }
            (Box::new(resp), final_url)
        };
        let dir = self.dest.parent().unwrap_or(Path::new("."));
        crate::space::ensure(dir, size - have, &format!("the rest of {}", self.entry.name))?;
        self.bar.set_position(have);
        let mut part = OpenOptions::new().create(true).append(true).open(&self.part).at(&self.part)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = have;
        loop {
            let k = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    part.flush().at(&self.part)?;
                    return Ok(Outcome::Retry(format!("connection lost after {got} of {size} bytes: {e}")));
                }
            };
            if got + k as u64 > size {
                drop(part);
                std::fs::remove_file(&self.part).at(&self.part)?;
                return Ok(Outcome::NextUrl(format!("sent more than the expected {size} bytes")));
            }
            part.write_all(&buf[..k]).at(&self.part)?;
            got += k as u64;
            self.transferred += k as u64;
            self.bar.inc(k as u64);
        }
        part.sync_all().at(&self.part)?;
        drop(part);
        if got < size {
            return Ok(Outcome::Retry(format!("truncated: the body ended after {got} of {size} bytes")));
        }
        self.finish(&final_url)
    }

    /// The part has the full size: hash it, then rename and stamp, or set it aside.
    fn finish(&mut self, url: &str) -> Result<Outcome> {
        // Hashing the part from disk covers resumed parts too; it reads from the page cache.
        let actual = verify::sha256_file(&self.part, None)?;
        if actual != self.entry.sha256 {
            let rejected = store::rejected_path(self.dest);
            std::fs::rename(&self.part, &rejected).at(&self.part)?;
            return Ok(Outcome::NextUrl(format!(
                "SHA-256 mismatch: expected {}, got {actual} (size {} ok; kept as {})",
                self.entry.sha256,
                self.entry.size,
                rejected.display()
            )));
        }
        std::fs::rename(&self.part, self.dest).at(self.dest)?;
        verify::write_stamp(self.dest, &actual)?;
        Ok(Outcome::Done(url.to_string()))
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
