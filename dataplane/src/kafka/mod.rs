//! The Kafka wire protocol subset behind the TCP paths: enough for
//! `kcat -C` / `kcat -P` and our own client against one broker.

pub mod messages;
pub mod wire;

#[cfg(test)]
mod reference_tests;

use std::io::{self, Read};

/// Kafka's `socket.request.max.bytes` default.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed after {got} of {expected} bytes of a {what}")]
    Truncated {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error(
        "{what} length prefix is {size} bytes, over the limit of {max} (is this a Kafka client?)"
    )]
    Oversized {
        what: &'static str,
        size: i64,
        max: usize,
    },
    #[error("{what} length prefix is negative ({size})")]
    Negative { what: &'static str, size: i32 },
    #[error("reading a {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Reads one size-prefixed frame into `buf` (replacing its contents).
/// Returns `Ok(false)` on a clean end of stream before the frame started.
pub fn read_frame(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    max: usize,
    what: &'static str,
) -> Result<bool, FrameError> {
    let mut size = [0u8; 4];
    let got = read_full(r, &mut size).map_err(|source| FrameError::Io { what, source })?;
    if got == 0 {
        return Ok(false);
    }
    if got < 4 {
        return Err(FrameError::Truncated {
            what,
            got,
            expected: 4,
        });
    }
    let size = i32::from_be_bytes(size);
    if size < 0 {
        return Err(FrameError::Negative { what, size });
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::Oversized {
            what,
            size: size as i64,
            max,
        });
    }
    // Grow with what arrives rather than trusting the prefix: a client that
    // announces 100 MiB and sends nothing must not get 100 MiB of memory.
    buf.clear();
    let got = r
        .take(size as u64)
        .read_to_end(buf)
        .map_err(|source| FrameError::Io { what, source })?;
    if got < size {
        return Err(FrameError::Truncated {
            what,
            got,
            expected: size,
        });
    }
    Ok(true)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_errors() {
        let mut buf = Vec::new();
        assert!(!read_frame(&mut &[][..], &mut buf, 100, "request").unwrap());
        assert!(matches!(
            read_frame(&mut &[0, 0][..], &mut buf, 100, "request"),
            Err(FrameError::Truncated {
                got: 2,
                expected: 4,
                ..
            })
        ));
        assert!(matches!(
            read_frame(&mut &[0xff, 0xff, 0xff, 0xfe][..], &mut buf, 100, "request"),
            Err(FrameError::Negative { size: -2, .. })
        ));
        assert!(matches!(
            read_frame(&mut &[0, 0, 1, 0][..], &mut buf, 100, "request"),
            Err(FrameError::Oversized { size: 256, .. })
        ));
        assert!(matches!(
            read_frame(&mut &[0, 0, 0, 3, 1][..], &mut buf, 100, "request"),
            Err(FrameError::Truncated {
                got: 1,
                expected: 3,
                ..
            })
        ));
        assert!(read_frame(&mut &[0, 0, 0, 2, 7, 9][..], &mut buf, 100, "request").unwrap());
        assert_eq!(buf, [7, 9]);
    }
}
