//! Image ids, digests and names.

use std::fmt;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{Result, StorageError};
use crate::domain::DomainName;

/// An image id: 64 lower-case hex digits (a sha256).
///
/// An imported layer's id is its *chain id* as in OCI: the sha256 of the
/// uncompressed layer tar (its diff_id) for a layer without parent, and
/// `sha256("sha256:<parent id> sha256:<diff_id>")` for a layer on a parent.
/// Importing the same content twice therefore yields the same image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageId(String);

impl ImageId {
    /// Parses 64 hex digits, with or without a `sha256:` prefix.
    pub fn parse(text: &str) -> Option<ImageId> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        is_sha256_hex(hex).then(|| ImageId(hex.to_owned()))
    }

    /// The id of the first layer (`diff_id`, hex) on `parent`.
    pub fn chain(parent: Option<&ImageId>, diff_id: &str) -> ImageId {
        match parent {
            None => ImageId(diff_id.to_owned()),
            Some(parent) => ImageId(sha256_hex(
                format!("sha256:{} sha256:{diff_id}", parent.0).as_bytes(),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for messages and listings.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ImageId {
    type Error = String;
    fn try_from(text: String) -> Result<ImageId, String> {
        ImageId::parse(&text).ok_or_else(|| format!("'{text}' is not an image id"))
    }
}

impl From<ImageId> for String {
    fn from(id: ImageId) -> String {
        id.0
    }
}

/// True for exactly 64 lower-case hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// sha256 of `bytes`, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A reader that hashes (sha256) and counts what passes through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads what is left, then returns (sha256 hex, bytes read).
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex(&self.hasher.finalize()), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes (sha256) and counts what passes through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: io::Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns the inner writer, the sha256 (hex) and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.count)
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Checks an image name (a tag): the same rule as domain names.
pub fn check_image_name(name: &str) -> Result<()> {
    DomainName::new(name)
        .map(drop)
        .map_err(|reason| StorageError::InvalidName {
            name: name.to_owned(),
            reason,
        })
}

/// Checks a domain name used for a writable layer.
pub fn check_domain_name(name: &str) -> Result<()> {
    DomainName::new(name)
        .map(drop)
        .map_err(|reason| StorageError::InvalidDomain {
            name: name.to_owned(),
            reason,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_chain() {
        let empty = sha256_hex(b"");
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let id = ImageId::parse(&format!("sha256:{empty}")).unwrap();
        assert_eq!(id.as_str(), empty);
        assert_eq!(id.short(), "e3b0c44298fc");
        assert!(ImageId::parse("E3B0").is_none());
        assert!(ImageId::parse(&empty.to_uppercase()).is_none());
        assert_eq!(ImageId::chain(None, &empty), id);
        let child = ImageId::chain(Some(&id), &empty);
        assert_ne!(child, id);
        assert_eq!(child, ImageId::chain(Some(&id), &empty));
    }

    #[test]
    fn hashing_reader_counts_everything() {
        let data = vec![7u8; 100_000];
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        let (digest, count) = r.finish().unwrap();
        assert_eq!(count, 100_000);
        assert_eq!(digest, sha256_hex(&data));
    }

    #[test]
    fn names_follow_the_domain_rule() {
        check_image_name("busybox-1.36").unwrap();
        for bad in ["", ".hidden", "-x", "a/b", "a:b", "tmp dir"] {
            assert!(matches!(
                check_image_name(bad),
                Err(StorageError::InvalidName { .. })
            ));
        }
    }
}
