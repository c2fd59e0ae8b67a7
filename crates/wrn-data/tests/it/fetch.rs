//! The real fetch path against a fault-injecting HTTP server on 127.0.0.1 that each test starts and
//! stops: connection dropped mid-body, 500 then success, Range ignored, wrong bytes, 404 on the first
//! mirror, an HTML page, a stalled trickle, a dead host; then fetch + prepare end to end.
//! Every failure must leave no file that looks verified.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wrn_data::fetch::{self, FetchOptions};
use wrn_data::manifest::{FileEntry, Manifest};
use wrn_data::store::{self, State, Store};
use wrn_data::synth::{self, CifarKind};
use wrn_progress::Silent;

/// What the server does with one request.
#[derive(Clone, Debug)]
enum Reply {
    Serve(Serve),
    Status(u16),
}

/// How to serve the file.
#[derive(Clone, Debug)]
struct Serve {
    /// Honour `Range`.
    range: bool,
    /// Close after this many body bytes.
    cut: Option<usize>,
    /// Pause this long after `cut` bytes instead of closing.
    stall: Option<Duration>,
    /// Flip a byte of the body.
    corrupt: bool,
    content_type: &'static str,
    /// Answer a range request with a `Content-Range` that starts one byte later than asked.
    wrong_range: bool,
    /// Add this to the `Content-Length` announced (a file that changed size on the server).
    extra_length: u64,
    /// Send the body compressed with this `Content-Encoding` (`gzip` or `deflate`), unasked.
    encoding: Option<&'static str>,
    /// Label the body with this `Content-Encoding` but send it as it is.
    label: Option<&'static str>,
}

fn serve() -> Serve {
    Serve {
        range: true,
        cut: None,
        stall: None,
        corrupt: false,
        content_type: "application/x-gzip",
        wrong_range: false,
        extra_length: 0,
        encoding: None,
        label: None,
    }
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
    /// Requests accepted whose handler has not logged them yet.
    in_flight: Arc<AtomicUsize>,
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
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (stop2, log2, name, body) = (stop.clone(), log.clone(), format!("/{name}"), Arc::new(body));
        let flying = in_flight.clone();
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
                        flying.fetch_add(1, Ordering::SeqCst);
                        let flying = flying.clone();
                        workers.push(std::thread::spawn(move || {
                            handle(stream, index, &name, &body, &script, &log);
                            flying.fetch_sub(1, Ordering::SeqCst);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Server { port, stop, log, in_flight, accept: Some(accept) }
    }

    fn url(&self, dir: &str) -> String {
        format!("http://127.0.0.1:{}/{dir}", self.port)
    }

    /// The requests served so far, once every accepted one is logged: a client can have read a whole
    /// answer before its handler has logged it.
    fn log(&self) -> Vec<Logged> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
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
        Reply::Serve(how) => {
            entry.status = send(&mut out, body, range_start, &how, &mut entry.body_bytes);
        }
    }
    let _ = out.shutdown(std::net::Shutdown::Both);
    log.lock().unwrap().push(entry);
}

/// Writes the answer `how` describes; returns its status.
fn send(out: &mut TcpStream, body: &[u8], range_start: Option<u64>, how: &Serve, sent: &mut u64) -> u16 {
    let mut data = body.to_vec();
    if how.corrupt {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    let start = if how.range { range_start.unwrap_or(0) as usize } else { 0 };
    let (status, mut extra) = if how.range && start > 0 {
        let first = start + usize::from(how.wrong_range);
        (206, format!("Content-Range: bytes {first}-{}/{}\r\n", data.len() - 1, data.len()))
    } else {
        (200, String::new())
    };
    let mut slice = data[start..].to_vec();
    if let Some(encoding) = how.encoding {
        slice = compress(&slice, encoding);
    }
    if let Some(encoding) = how.encoding.or(how.label) {
        extra.push_str(&format!("Content-Encoding: {encoding}\r\n"));
    }
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: {}\r\n{extra}Connection: close\r\n\r\n",
        slice.len() as u64 + how.extra_length,
        how.content_type
    );
    let send = how.cut.unwrap_or(slice.len()).min(slice.len());
    for chunk in slice[..send].chunks(16 * 1024) {
        if out.write_all(chunk).is_err() {
            break;
        }
        *sent += chunk.len() as u64;
    }
    let _ = out.flush();
    if let Some(pause) = how.stall {
        std::thread::sleep(pause);
    }
    status
}

/// `bytes` compressed as HTTP's `gzip` or `deflate` (a zlib stream).
fn compress(bytes: &[u8], encoding: &str) -> Vec<u8> {
    let level = flate2::Compression::default();
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        _ => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
    }
}

fn opts(mirrors: Vec<String>) -> FetchOptions<'static> {
    FetchOptions {
        mirrors,
        attempts: 3,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
        progress: &Silent,
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
        0 => Reply::Serve(Serve {
            range: true,
            cut: Some(half),
            stall: None,
            corrupt: false,
            content_type: "application/x-gzip",
            ..serve()
        }),
        _ => Reply::Serve(serve()),
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
    let server = Server::start(&entry.name, bytes.clone(), |_, _| Reply::Serve(serve()));
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
    let server =
        Server::start(
            &entry.name,
            bytes.clone(),
            |n, _| if n == 0 { Reply::Status(500) } else { Reply::Serve(serve()) },
        );
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
    let server = Server::start(&entry.name, bytes.clone(), |_, _| {
        Reply::Serve(Serve {
            range: false,
            cut: None,
            stall: None,
            corrupt: false,
            content_type: "application/octet-stream",
            ..serve()
        })
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
    let server = Server::start(&entry.name, bytes, |_, _| {
        Reply::Serve(Serve {
            range: true,
            cut: None,
            stall: None,
            corrupt: true,
            content_type: "application/x-gzip",
            ..serve()
        })
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
            Reply::Serve(serve())
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
    let server = Server::start(&entry.name, bytes, |_, _| {
        Reply::Serve(Serve {
            range: true,
            cut: None,
            stall: None,
            corrupt: false,
            content_type: "text/html; charset=utf-8",
            ..serve()
        })
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
        0 => Reply::Serve(Serve {
            range: true,
            cut: Some(quarter),
            stall: Some(Duration::from_secs(3)),
            corrupt: false,
            content_type: "application/x-gzip",
            ..serve()
        }),
        _ => Reply::Serve(serve()),
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
    let server = Server::start(&m.files[0].name, bytes, |_, _| Reply::Serve(serve()));
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

/// One attempt per URL, so only a restart from byte 0 (which spends no attempt) can recover at the
/// same mirror before the dead canonical URL is reached.
fn one_attempt(server: &Server) -> FetchOptions<'static> {
    FetchOptions { attempts: 1, ..opts(vec![server.url("")]) }
}

#[test]
fn a_resumed_part_that_fails_the_hash_is_discarded_and_fetched_again_from_zero() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes.clone(), |_, _| Reply::Serve(serve()));
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    // A part left by a download of another version of the file: same name, other bytes.
    let third = bytes.len() / 3;
    std::fs::write(store::part_path(&dest), vec![0x5Au8; third]).unwrap();
    let o = one_attempt(&server);
    let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let log = server.log();
    assert_eq!(log.iter().map(|l| l.range_start).collect::<Vec<_>>(), [Some(third as u64), None], "{log:?}");
    assert_eq!(got.failures.len(), 1, "{:?}", got.failures);
    let why = &got.failures[0];
    assert!(why.contains("SHA-256 mismatch") && why.contains("restarting from byte 0"), "{why}");
    assert!(!store::rejected_path(&dest).exists(), "a mixed part is discarded, not kept as a download");
}

#[test]
fn an_inconsistent_resume_restarts_from_zero_once() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let third = bytes.len() / 3;
    let inconsistent = [Serve { wrong_range: true, ..serve() }, Serve { extra_length: 7, ..serve() }];
    for how in inconsistent {
        let server = Server::start(&entry.name, bytes.clone(), move |n, _| match n {
            0 => Reply::Serve(how.clone()),
            _ => Reply::Serve(serve()),
        });
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join(&entry.name);
        std::fs::write(store::part_path(&dest), &bytes[..third]).unwrap();
        let o = one_attempt(&server);
        let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        let log = server.log();
        assert_eq!(log.iter().map(|l| l.range_start).collect::<Vec<_>>(), [Some(third as u64), None], "{log:?}");
        assert!(got.failures[0].ends_with("discarded the partial download and restarting from byte 0"), "{got:?}");
    }
}

#[test]
fn a_restart_from_zero_happens_once_and_the_message_says_so() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server = Server::start(&entry.name, bytes.clone(), |_, _| Reply::Serve(Serve { corrupt: true, ..serve() }));
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    std::fs::write(store::part_path(&dest), &bytes[..bytes.len() / 2]).unwrap();
    let o = one_attempt(&server);
    let err = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap_err().to_string();
    // Resumed: mismatch, restart; from zero: mismatch again, kept aside; then the dead canonical URL.
    assert_eq!(server.log().len(), 2, "{:?}", server.log());
    assert_eq!(err.matches("restarting from byte 0").count(), 1, "{err}");
    assert_eq!(err.matches("SHA-256 mismatch").count(), 2, "{err}");
    assert!(err.contains(&format!("kept as {}", store::rejected_path(&dest).display())), "{err}");
    assert_nothing_verified(&dest, &entry);
    assert!(!store::part_path(&dest).exists());
}

#[test]
fn a_body_compressed_unasked_is_decoded_and_a_gz_labelled_as_gzip_is_kept_as_it_is() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    for how in [
        Serve { encoding: Some("gzip"), ..serve() },
        Serve { encoding: Some("deflate"), ..serve() },
        // The archive itself, labelled with its own encoding: its length is the file's.
        Serve { label: Some("gzip"), ..serve() },
    ] {
        let server = Server::start(&entry.name, bytes.clone(), move |_, _| Reply::Serve(how.clone()));
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join(&entry.name);
        let o = one_attempt(&server);
        let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert_eq!((got.requests, server.log().len()), (1, 1), "{:?}", got.failures);
        assert!(wrn_data::verify::is_stamped(&dest, &entry));
    }
}

#[test]
fn a_resumed_range_sent_compressed_restarts_from_zero() {
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let server =
        Server::start(&entry.name, bytes.clone(), |_, _| Reply::Serve(Serve { encoding: Some("gzip"), ..serve() }));
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join(&entry.name);
    std::fs::write(store::part_path(&dest), &bytes[..100]).unwrap();
    let o = one_attempt(&server);
    let got = fetch::fetch_file(&client(&o), &entry, &dest, &o).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(got.failures[0].contains("compressed (Content-Encoding gzip)"), "{:?}", got.failures);
}

/// The synthetic archive behind a `file://` URL at `source`.
fn local(entry: &FileEntry, source: &Path) -> FileEntry {
    FileEntry { url: format!("file://{}", source.display()), ..entry.clone() }
}

#[cfg(unix)]
#[test]
fn a_local_source_must_be_a_regular_file_and_keeps_its_restrictive_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().unwrap();
    let (_, entry, bytes) = archive(src.path());
    let out = tempfile::tempdir().unwrap();
    let o = FetchOptions { attempts: 1, ..opts(vec![]) };

    // A FIFO would block the read forever: refused at once, naming it.
    let fifo = src.path().join("cifar-10-binary.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (tx, rx) = std::sync::mpsc::channel();
    let (fifo_entry, dest, o2) = (local(&entry, &fifo), out.path().join("a").join(&entry.name), o.clone());
    std::thread::spawn(move || {
        let _ =
            tx.send(fetch::fetch_file(&client(&o2), &fifo_entry, &dest, &o2).map(|_| ()).map_err(|e| e.to_string()));
    });
    let err = rx.recv_timeout(Duration::from_secs(10)).expect("a FIFO source does not hang").unwrap_err();
    assert!(err.contains(&fifo.display().to_string()) && err.contains("not a regular file (a FIFO)"), "{err}");

    // A rw------- source is not copied world-readable.
    let source = src.path().join("cifar-10-binary.tar.gz");
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dest = out.path().join(&entry.name);
    fetch::fetch_file(&client(&o), &local(&entry, &source), &dest, &o).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
}
