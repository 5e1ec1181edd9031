//! Moving a byte range of a segment file to a socket, two ways.

use std::{
    fs::File,
    io::{self, Write},
    net::TcpStream,
    os::{fd::AsRawFd, unix::fs::FileExt},
};

use super::TcpMode;

/// Writes `bytes` to the socket with MSG_MORE when more data follows at once,
/// so a small framing piece and the records after it leave as full segments.
pub fn send_framing(stream: &mut TcpStream, bytes: &[u8], more: bool) -> io::Result<()> {
    if !more {
        return stream.write_all(bytes);
    }
    let mut sent = 0;
    while sent < bytes.len() {
        let rest = &bytes[sent..];
        // SAFETY: `rest` is a live, initialised slice for the duration of the
        // call and the fd belongs to `stream`, which outlives it.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        sent += n as usize;
    }
    Ok(())
}

/// Moves `len` bytes at `position` of `file` to the socket.
pub struct RecordsSender {
    mode: TcpMode,
    buf: Vec<u8>,
}

/// Copy mode's buffer: big enough to amortise syscalls, small enough to stay
/// in cache.
const COPY_CHUNK: usize = 256 * 1024;

impl RecordsSender {
    pub fn new(mode: TcpMode) -> Self {
        let buf = if mode == TcpMode::Copy {
            vec![0; COPY_CHUNK]
        } else {
            Vec::new()
        };
        Self { mode, buf }
    }

    pub fn send(
        &mut self,
        stream: &mut TcpStream,
        file: &File,
        position: u64,
        len: usize,
    ) -> io::Result<()> {
        match self.mode {
            TcpMode::Sendfile => sendfile_all(stream, file, position, len),
            TcpMode::Copy => {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(self.buf.len());
                    file.read_exact_at(&mut self.buf[..n], position + done as u64)?;
                    stream.write_all(&self.buf[..n])?;
                    done += n;
                }
                Ok(())
            }
        }
    }
}

fn sendfile_all(stream: &mut TcpStream, file: &File, position: u64, len: usize) -> io::Result<()> {
    let mut offset = position as libc::off_t;
    let end = position + len as u64;
    while (offset as u64) < end {
        let want = (end - offset as u64) as usize;
        // SAFETY: both fds are open for the duration of the call; `offset` is
        // a valid pointer the kernel advances by the bytes it sent.
        let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, want) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("segment ended at byte {offset} while sending up to byte {end}"),
            ));
        }
    }
    Ok(())
}
