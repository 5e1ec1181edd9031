//! Running code inside a named network namespace (`/run/netns/NAME`, as
//! `ip netns add` makes them). `setns` moves only the calling thread, so the
//! rest of the process stays where it was.

use std::{fs::File, io, os::fd::AsRawFd, thread::JoinHandle};

/// Failures of entering or leaving a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("opening {path} failed (does network namespace exist? `ip netns list`)")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    /// setns refused.
    #[error("setns(CLONE_NEWNET) into {what} failed (needs CAP_SYS_ADMIN)")]
    Setns {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn open(path: &str) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })
}

fn setns(file: &File, what: &str) -> Result<(), NetnsError> {
    // SAFETY: `file` is an open namespace fd for the duration of the call;
    // setns only changes this thread's namespace membership.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Setns {
            what: what.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Puts the thread back in its original namespace when dropped, so a panic
/// in the closure does not leave the thread (a test harness worker, say) in
/// the lab's namespace.
struct Restore(File);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.0, "the original network namespace") {
            // A thread stuck in a foreign namespace would silently misroute
            // everything it does afterwards; better to stop outright.
            eprintln!("{e}");
            std::process::abort();
        }
    }
}

/// Runs `f` on the calling thread inside network namespace `name`, then
/// returns the thread to its own namespace (also if `f` panics).
pub fn in_netns<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
    let target = open(&format!("/run/netns/{name}"))?;
    let original = open("/proc/thread-self/ns/net")?;
    setns(&target, &format!("network namespace {name}"))?;
    let _restore = Restore(original);
    Ok(f())
}

/// Spawns a thread that lives inside network namespace `name` and runs `f`.
/// Failing to enter the namespace panics that thread (seen at `join`).
pub fn spawn_in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let name = name.to_owned();
    std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || {
            let target = open(&format!("/run/netns/{name}")).unwrap_or_else(|e| panic!("{e}"));
            setns(&target, &format!("network namespace {name}")).unwrap_or_else(|e| panic!("{e}"));
            f()
        })
        .expect("spawning a thread")
}
