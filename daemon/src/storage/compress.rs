//! Compression of tarballs: detected by magic bytes on import, chosen on
//! export.

use std::io::{self, BufRead, Read, Write};

/// A tarball's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The usual file name suffix (`.tar`, `.tar.gz`, `.tar.zst`).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => ".tar",
            Compression::Gzip => ".tar.gz",
            Compression::Zstd => ".tar.zst",
        }
    }
}

/// What the first bytes of a stream say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Known(Compression),
    /// A compression lxvirt does not read (xz, bzip2, lz4).
    Unsupported(&'static str),
}

/// Detects the compression from the first bytes of a stream (at least 6
/// when available). Anything not recognised is taken as a plain tar; the tar
/// reader refuses it if it is not one.
pub fn detect(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1f, 0x8b]) {
        Detected::Known(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Known(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Detected::Unsupported("xz")
    } else if head.starts_with(b"BZh") {
        Detected::Unsupported("bzip2")
    } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        Detected::Unsupported("lz4")
    } else {
        Detected::Known(Compression::None)
    }
}

/// A decoding reader and the compression it undoes; or the name of a
/// compression lxvirt does not read.
pub type Decoded<'a> = Result<(Compression, Box<dyn Read + 'a>), &'static str>;

/// Peeks at `reader` and wraps it in the matching decoder.
pub fn decoder<'a, R: BufRead + 'a>(mut reader: R) -> io::Result<Decoded<'a>> {
    let head = reader.fill_buf()?;
    let head = head[..head.len().min(8)].to_vec();
    Ok(match detect(&head) {
        Detected::Unsupported(name) => Err(name),
        Detected::Known(Compression::None) => Ok((Compression::None, Box::new(reader))),
        Detected::Known(Compression::Gzip) => Ok((
            Compression::Gzip,
            Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        )),
        Detected::Known(Compression::Zstd) => Ok((
            Compression::Zstd,
            Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
        )),
    })
}

/// A writer that compresses into `W`; [`Encoder::finish`] writes the
/// trailer and returns `W`.
#[allow(missing_debug_implementations)]
pub enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(inner: W, compression: Compression) -> io::Result<Encoder<W>> {
        Ok(match compression {
            Compression::None => Encoder::None(inner),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::fast(),
            )),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(inner, 3)?),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A reader that reports how many bytes went through it, at most once per
/// `step` bytes and once at the end of the stream.
pub struct CountingReader<'f, R> {
    inner: R,
    count: u64,
    reported: u64,
    step: u64,
    report: &'f mut dyn FnMut(u64),
}

impl<R> std::fmt::Debug for CountingReader<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingReader")
            .field("count", &self.count)
            .finish()
    }
}

impl<'f, R: Read> CountingReader<'f, R> {
    pub fn new(inner: R, step: u64, report: &'f mut dyn FnMut(u64)) -> Self {
        CountingReader {
            inner,
            count: 0,
            reported: 0,
            step,
            report,
        }
    }
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if (n == 0 && self.reported != self.count) || self.count - self.reported >= self.step {
            self.reported = self.count;
            (self.report)(self.count);
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_compression() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut enc = Encoder::new(Vec::new(), c).unwrap();
            enc.write_all(&data).unwrap();
            let bytes = enc.finish().unwrap();
            let (found, mut dec) = decoder(io::BufReader::new(&bytes[..])).unwrap().unwrap();
            assert_eq!(found, c);
            let mut back = Vec::new();
            dec.read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn unsupported_formats_are_named() {
        assert_eq!(
            detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Detected::Unsupported("xz")
        );
        assert_eq!(detect(b"BZh91AY"), Detected::Unsupported("bzip2"));
        assert_eq!(detect(b"etc/"), Detected::Known(Compression::None));
    }

    #[test]
    fn counting_reader_reports_in_steps_and_at_the_end() {
        let data = vec![0u8; 10_000];
        let mut seen = Vec::new();
        let mut report = |n| seen.push(n);
        let mut r = CountingReader::new(&data[..], 4096, &mut report);
        let mut sink = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sink.extend_from_slice(&buf[..n]);
        }
        assert_eq!(seen, vec![5000, 10_000]);
    }
}
