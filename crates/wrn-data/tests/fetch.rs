//! The real fetch path against a fault-injecting HTTP server on 127.0.0.1 that each test starts and
//! stops: connection dropped mid-body, 500 then success, Range ignored, wrong bytes, 404 on the first
//! mirror, an HTML page, a stalled trickle, a dead host; then fetch + prepare end to end.
//! Every failure must leave no file that looks verified.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wrn_data::fetch::{self, FetchOptions};
use wrn_data::manifest::{FileEntry, Manifest};
use wrn_data::store::{self, State, Store};
use wrn_data::synth::{self, CifarKind};

/// What the server does with one request.
#[derive(Clone, Debug)]
enum Reply {
    /// Serve the file; honour `Range` or not; close after `cut` body bytes; pause `stall` after `cut`
    /// bytes instead of closing; flip a byte of the body.
    Serve {
        range: bool,
        cut: Option<usize>,
        stall: Option<Duration>,
        corrupt: bool,
        content_type: &'static str,
    },
    Status(u16),
}

fn serve() -> Reply {
    Reply::Serve { range: true, cut: None, stall: None, corrupt: false, content_type: "application/x-gzip" }
}

#[derive(Debug, Clone)]
struct Logged {
    path: String,
    range_start: Option<u64>,
    status: u16,
    body_bytes: u64,
}

type Script = Arc<dyn Fn(usize, &str) -> Reply + Send + Sync>;

struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Logged>>>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `body` at every path ending in `name`; 404 elsewhere. `script(n, path)` picks the reply
    /// to the n-th request (0-based, over all paths).
    fn start(name: &str, body: Vec<u8>, script: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2, name, body) = (stop.clone(), log.clone(), format!("/{name}"), Arc::new(body));
        let script: Script = Arc::new(script);
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut workers = Vec::new();
            let mut n = 0;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (log, name, body, script) = (log2.clone(), name.clone(), body.clone(), script.clone());
                        let index = n;
                        n += 1;
                        workers.push(std::thread::spawn(move || handle(stream, index, &name, &body, &script, &log)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Server { port, stop, log, accept: Some(accept) }
    }

    fn url(&self, dir: &str) -> String {
        format!("http://127.0.0.1:{}/{dir}", self.port)
    }

    fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn handle(stream: TcpStream, index: usize, name: &str, body: &[u8], script: &Script, log: &Mutex<Vec<Logged>>) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range_start = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_start = v.trim().trim_end_matches('-').parse::<u64>().ok();
        }
    }
    let mut out = stream;
    let reply = if path.ends_with(name) { script(index, &path) } else { Reply::Status(404) };
    let mut entry = Logged { path, range_start, status: 0, body_bytes: 0 };
    match reply {
        Reply::Status(code) => {
            let text = format!("error {code}\n");
            let _ = write!(
                out,
                "HTTP/1.1 {code} Error\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            entry.status = code;
        }
        Reply::Serve { range, cut, stall, corrupt, content_type } => {
            let mut data = body.to_vec();
            if corrupt {
                let mid = data.len() / 2;
                data[mid] ^= 0xff;
            }
            let start = if range { range_start.unwrap_or(0) as usize } else { 0 };
            let (status, extra) = if range && start > 0 {
                (206, format!("Content-Range: bytes {start}-{}/{}\r\n", data.len() - 1, data.len()))
            } else {
                (200, String::new())
            };
            let slice = &data[start..];
            let _ = write!(
                out,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: {content_type}\r\n{extra}Connection: close\r\n\r\n",
                slice.len()
            );
            let send = cut.unwrap_or(slice.len()).min(slice.len());
            for chunk in slice[..send].chunks(16 * 1024) {
                if out.write_all(chunk).is_err() {
                    break;
                }
                entry.body_bytes += chunk.len() as u64;
            }
            let _ = out.flush();
            if let Some(pause) = stall {
                std::thread::sleep(pause);
            }
            entry.status = status;
        }
    }
    let _ = out.shutdown(std::net::Shutdown::Both);
    log.lock().unwrap().push(entry);
}

fn opts(mirrors: Vec<String>) -> FetchOptions {
    FetchOptions {
        mirrors,
        attempts: 3,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
        progress: false,
        proxy_from_env: false,
    }
}

/// A synthetic CIFAR-10 archive and its manifest entry, with the canonical URL pointing at a port on
/// which nothing listens (so only the test's mirrors can serve it).
fn archive(dir: &Path) -> (Manifest, FileEntry, Vec<u8>) {
    let (mut m, _) = synth::synth_cifar(CifarKind::Cifar10, dir, 100, 11).unwrap();
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    m.files[0].url = format!("http://127.0.0.1:{dead}/cifar-10-binary.tar.gz");
    let bytes = std::fs::read(dir.join("cifar-10-binary.tar.gz")).unwrap();
    (m.clone(), m.files[0].clone(), bytes)
}

fn client(o: &FetchOptions) -> reqwest::blocking::Client {
    fetch::client(o).unwrap()
}

/// Nothing at `dest` looks verified: no file, no stamp, no part.
fn assert_nothing_verified(dest: &Path, entry: &FileEntry) {
    assert!(!dest.exists(), "{} must not exist after a failed fetch", dest.display());
    assert!(!wrn_data::verify::stamp_path(dest).exists());
    assert!(!wrn_data::verify::is_stamped(dest, entry));
}

#[test]
fn a_dropped_connection_is_resumed_with_range() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let half = bytes.len() / 2;
    let server = Server::start(&entry.name, bytes.clone(), move |n, _| match n {
        0 => Reply::Serve {
            range: true,
            cut: Some(half),
            stall: None,
            corrupt: false,
            content_type: "application/x-gzip",
        },
        _ => serve(),
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    let o = opts(vec![server.url("")]);
    let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(wrn_data::verify::is_stamped(&dest, &entry));
    assert!(!store::part_path(&dest).exists());
    let log = server.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].range_start, Some(half as u64));
    assert_eq!(log[1].status, 206);
    assert!(log[1].body_bytes < bytes.len() as u64, "the resumed request sent only the rest");
    assert_eq!(got.bytes_transferred, bytes.len() as u64);
    assert_eq!(got.requests, 2);
    assert!(got.failures[0].contains("connection lost") || got.failures[0].contains("truncated"), "{:?}", got.failures);
}

#[test]
fn an_existing_part_transfers_only_the_missing_bytes() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes.clone(), |_, _| serve());
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    let third = bytes.len() / 3;
    std::fs::write(store::part_path(&dest), &bytes[..third]).unwrap();
    let o = opts(vec![server.url("")]);
    let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    assert_eq!(got.bytes_transferred, (bytes.len() - third) as u64);
    assert!(got.bytes_transferred < bytes.len() as u64);
    assert_eq!(server.log()[0].range_start, Some(third as u64));
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn a_server_error_is_retried_then_succeeds() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes.clone(), |n, _| if n == 0 { Reply::Status(500) } else { serve() });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    let o = opts(vec![server.url("")]);
    let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    assert_eq!(server.log().iter().map(|l| l.status).collect::<Vec<_>>(), [500, 200]);
    assert!(got.failures[0].contains("HTTP 500"), "{:?}", got.failures);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn a_server_that_ignores_range_restarts_the_part_cleanly() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes.clone(), |_, _| Reply::Serve {
        range: false,
        cut: None,
        stall: None,
        corrupt: false,
        content_type: "application/octet-stream",
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    // A part whose bytes are wrong: appending the full body to it would corrupt the file.
    std::fs::write(store::part_path(&dest), vec![0xAAu8; 1000]).unwrap();
    let o = opts(vec![server.url("")]);
    let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    let log = server.log();
    assert_eq!((log.len(), log[0].range_start, log[0].status), (1, Some(1000), 200));
    assert_eq!(got.bytes_transferred, bytes.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn wrong_bytes_are_rejected_and_nothing_looks_verified() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes, |_, _| Reply::Serve {
        range: true,
        cut: None,
        stall: None,
        corrupt: true,
        content_type: "application/x-gzip",
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    let o = opts(vec![server.url("a/"), server.url("b/")]);
    let err = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap_err().to_string();
    assert!(err.contains("SHA-256 mismatch") && err.contains(&entry.sha256), "{err}");
    assert!(err.contains("/a/") && err.contains("/b/"), "both mirrors were tried: {err}");
    // A hash mismatch moves on to the next URL without retrying the same one.
    let log = server.log();
    assert_eq!(log.iter().filter(|l| l.path.starts_with("/a/")).count(), 1, "{log:?}");
    assert_nothing_verified(&dest, &entry);
    assert!(!store::part_path(&dest).exists());
    assert!(store::rejected_path(&dest).exists(), "the bad bytes are kept aside for inspection");
}

#[test]
fn a_404_on_the_first_mirror_falls_through_to_the_next() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes.clone(), |_, path| {
        if path.starts_with("/gone/") {
            Reply::Status(404)
        } else {
            serve()
        }
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    let o = opts(vec![server.url("gone/"), server.url("ok/")]);
    let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    assert_eq!(got.url.as_deref(), Some(format!("{}{}", server.url("ok/"), entry.name).as_str()));
    let log = server.log();
    assert_eq!(
        log.iter().map(|l| (l.path.as_str(), l.status)).collect::<Vec<_>>(),
        [("/gone/cifar-10-binary.tar.gz", 404), ("/ok/cifar-10-binary.tar.gz", 200)]
    );
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);

    // Verified once, never downloaded again.
    let again = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    assert_eq!((again.url, again.requests), (None, 0));
    assert_eq!(server.log().len(), 2);
}

#[test]
fn an_html_page_is_not_taken_for_the_file() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes, |_, _| Reply::Serve {
        range: true,
        cut: None,
        stall: None,
        corrupt: false,
        content_type: "text/html; charset=utf-8",
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    let o = opts(vec![server.url("")]);
    let err = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap_err().to_string();
    assert!(err.contains("HTML page"), "{err}");
    assert_nothing_verified(&dest, &entry);
}

#[test]
fn a_stalled_trickle_times_out_and_resumes() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let quarter = bytes.len() / 4;
    let server = Server::start(&entry.name, bytes.clone(), move |n, _| match n {
        0 => Reply::Serve {
            range: true,
            cut: Some(quarter),
            stall: Some(Duration::from_secs(3)),
            corrupt: false,
            content_type: "application/x-gzip",
        },
        _ => serve(),
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    let mut o = opts(vec![server.url("")]);
    o.timeout = Duration::from_millis(400);
    let started = Instant::now();
    let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "the stall was cut short by the timeout");
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let log = server.log();
    let resumed = log.iter().find(|l| l.range_start.is_some()).expect("a resumed request");
    assert!(resumed.range_start.unwrap() > 0 && resumed.body_bytes < bytes.len() as u64, "{log:?}");
    assert!(got.bytes_transferred < 2 * bytes.len() as u64);
}

#[test]
fn persistent_failures_give_up_after_bounded_retries() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes, |_, _| Reply::Status(503));
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    let o = opts(vec![server.url("")]);
    let err = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap_err().to_string();
    // 3 attempts at the mirror, then 3 at the canonical URL, where nothing listens.
    assert_eq!(server.log().len(), 3);
    assert_eq!(err.matches("HTTP 503").count(), 3, "{err}");
    assert_eq!(err.matches("request failed").count(), 3, "{err}");
    assert_nothing_verified(&dest, &entry);
}

#[test]
fn fetch_then_prepare_goes_from_nothing_to_prepared() {
    let src = tempfile::tempdir().unwrap();
    let (m, _, bytes) = archive(src.path());
    let server = Server::start(&m.files[0].name, bytes, |_, _| serve());
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    assert_eq!(store.status(&m).state, State::Missing);
    let (fetched, prepared) = wrn_data::ops::fetch_and_prepare(&store, &m, &opts(vec![server.url("")]), false).unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(prepared.iter().map(|p| p.images).sum::<usize>(), 120);
    let status = store.status(&m);
    assert_eq!(status.state, State::Prepared);
    assert!(status.files.iter().all(|f| f.state == State::Verified));
    // Running it again downloads and prepares nothing.
    let (again, prepared) = wrn_data::ops::fetch_and_prepare(&store, &m, &opts(vec![server.url("")]), false).unwrap();
    assert_eq!((again[0].requests, prepared.len(), server.log().len()), (0, 0, 1));
    // The real CIFAR-10 manifest does not take the synthetic files for its own.
    assert_eq!(store.status(&Manifest::builtin("cifar10").unwrap()).state, State::Partial);
    // Re-hashing everything finds everything intact.
    let lines = wrn_data::ops::verify_all(&store, &[m]);
    assert!(lines.iter().all(|l| matches!(l.result, Some(Ok(())))), "{lines:?}");
}

#[test]
fn manual_files_are_listed_with_where_to_get_them() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let m = Manifest::builtin("imagenet").unwrap();
    let err = fetch::fetch_dataset(&store, &m, &opts(vec![])).unwrap_err().to_string();
    for f in &m.files {
        assert!(err.contains(&f.name) && err.contains(&f.sha256), "{err}");
    }
    assert!(err.contains("wrn data import imagenet"), "{err}");
}

#[test]
fn an_unreachable_source_ends_in_one_paragraph_with_the_ways_out() {
    let src = tempfile::tempdir().unwrap();
    let (mut m, entry, _) = archive(src.path());
    // Nothing listens on the discard port: every attempt fails the same way.
    m.files[0].url = format!("http://127.0.0.1:9/{}", entry.name);
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let err = fetch::fetch_dataset(&store, &m, &opts(vec![])).unwrap_err().to_string();
    let first = format!(
        "could not fetch {} of {} from any of its sources:\n  - http://127.0.0.1:9/{}: ",
        entry.name, m.name, entry.name
    );
    assert!(err.starts_with(&first), "{err}");
    // The source is named once, with its attempts counted, not once per attempt.
    assert_eq!(err.matches("http://127.0.0.1:9/").count(), 1, "{err}");
    assert!(err.lines().nth(1).unwrap().ends_with("(3 attempts)"), "{err}");
    for way in ["`--mirror URL`", "WRN_DATA_MIRROR", "HTTPS_PROXY", &format!("`wrn data import {} FILE`", m.name)] {
        assert!(err.contains(way), "{way} missing from: {err}");
    }
    assert_eq!(err.lines().count(), 3, "{err}");
}
