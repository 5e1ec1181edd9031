//! Loads the embedded XDP program, attaches it to one interface through a BPF
//! link and gives access to its maps. Dropping [`XdpProgram`] detaches it; the
//! link is owned by this process only (never pinned), so the kernel detaches
//! it too when the process dies, even by SIGKILL.

use std::{
    fmt,
    net::Ipv4Addr,
    os::fd::{AsRawFd, BorrowedFd},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::{
    Ebpf, EbpfError,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, XskMap},
    programs::{ProgramError, Xdp, XdpMode, links::FdLink},
};
use dataplane_common::{ADMITTED, Counter, PROGRAM_NAME, XdpConfig, admitted_key, map_name};

/// The XDP program object, built by build.rs.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dataplane"));

/// Which XDP attach mode to ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeChoice {
    /// Driver (native) mode, falling back to skb (generic) mode.
    #[default]
    Auto,
    /// Driver (native) mode only.
    Native,
    /// skb (generic) mode only.
    Skb,
}

/// The XDP mode the program actually runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AttachedMode {
    /// In the driver, before any sk_buff exists.
    Native,
    /// Generic XDP, after the sk_buff was built (slower, but works on any interface).
    Skb,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native (driver)",
            AttachedMode::Skb => "skb (generic)",
        })
    }
}

/// How to attach.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Interface name, in the calling thread's network namespace.
    pub iface: String,
    /// Requested mode.
    pub mode: XdpModeChoice,
    /// Replace an XDP program that is already on the interface.
    pub force: bool,
}

impl AttachOptions {
    /// Auto mode, no force.
    pub fn new(iface: impl Into<String>) -> Self {
        AttachOptions {
            iface: iface.into(),
            mode: XdpModeChoice::Auto,
            force: false,
        }
    }
}

/// Failures of loading, attaching or driving the XDP program.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The object could not be parsed or its maps created.
    #[error("loading the XDP object into the kernel (creating its maps) failed")]
    Load(#[source] EbpfError),
    /// The object lacks an expected program or map.
    #[error("the embedded XDP object has no {what} named {name}; rebuild dataplane")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    /// A map has an unexpected type or layout.
    #[error("BPF map {map} does not have the expected type or layout")]
    MapType {
        map: &'static str,
        #[source]
        source: MapError,
    },
    /// The verifier rejected the program or the bpf(BPF_PROG_LOAD) call failed.
    #[error("the kernel refused to load the XDP program (bpf BPF_PROG_LOAD)")]
    Verify(#[source] ProgramError),
    /// The interface does not exist in this network namespace.
    #[error("interface {iface} does not exist in this network namespace")]
    NoInterface { iface: String },
    /// Another program is on the interface and `force` was not given.
    #[error(
        "interface {iface} already has XDP program id {id} attached; \
         refusing to replace it (pass --force to replace it)"
    )]
    Busy { iface: String, id: u32 },
    /// `force` was given but the existing program could not be removed.
    #[error(
        "could not remove XDP program id {id} from {iface}: {detail} \
         (if a bpf_link holds it, stop the process that owns the link)"
    )]
    CannotReplace {
        iface: String,
        id: u32,
        detail: String,
    },
    /// Attaching failed in every mode that was tried.
    #[error("attaching the XDP program to {iface} failed: {detail}")]
    Attach { iface: String, detail: String },
    /// The kernel attached through netlink instead of a bpf_link.
    #[error(
        "the kernel attached the XDP program to {iface} without a bpf_link (Linux < 5.9?); \
         refusing, because it would outlive this process"
    )]
    NoBpfLink { iface: String },
    /// A map operation failed.
    #[error("BPF map {map}: {op} failed")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
}

/// Summed per-CPU counters of the XDP program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters(pub [u64; Counter::COUNT as usize]);

impl Counters {
    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, counter) in Counter::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", counter.name(), self.get(*counter))?;
        }
        Ok(())
    }
}

/// The XDP program loaded and attached to one interface.
pub struct XdpProgram {
    // Field order is drop order: the link goes first, detaching the program.
    link: Option<FdLink>,
    log_pump: Option<LogPump>,
    config: Array<MapData, XdpConfig>,
    counters: PerCpuArray<MapData, u64>,
    admitted: HashMap<MapData, u32, u32>,
    sockets: XskMap<MapData>,
    _ebpf: Ebpf,
    iface: String,
    mode: AttachedMode,
    program_id: u32,
    fallback_reason: Option<String>,
}

impl fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpProgram")
            .field("iface", &self.iface)
            .field("mode", &self.mode)
            .field("program_id", &self.program_id)
            .finish_non_exhaustive()
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoaderError> {
    ebpf.take_map(name)
        .ok_or(LoaderError::Missing { what: "map", name })
}

fn map_type(map: &'static str) -> impl FnOnce(MapError) -> LoaderError {
    move |source| LoaderError::MapType { map, source }
}

impl XdpProgram {
    /// Loads the program and attaches it to `opts.iface` (in the calling
    /// thread's network namespace). The configuration starts zeroed: nothing is
    /// redirected until [`XdpProgram::set_config`] names the UDP port.
    pub fn attach(opts: &AttachOptions) -> Result<Self, LoaderError> {
        let ifindex = if_index(&opts.iface)?;
        if let Some(id) = attached_program_id(&opts.iface) {
            if !opts.force {
                return Err(LoaderError::Busy {
                    iface: opts.iface.clone(),
                    id,
                });
            }
            remove_program(&opts.iface, id)?;
            log::warn!("removed XDP program id {id} from {} (--force)", opts.iface);
        }

        let mut ebpf = Ebpf::load(PROGRAM_OBJECT).map_err(LoaderError::Load)?;
        let config = Array::try_from(take_map(&mut ebpf, map_name::CONFIG)?)
            .map_err(map_type(map_name::CONFIG))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, map_name::COUNTERS)?)
            .map_err(map_type(map_name::COUNTERS))?;
        let admitted = HashMap::try_from(take_map(&mut ebpf, map_name::ADMITTED)?)
            .map_err(map_type(map_name::ADMITTED))?;
        let sockets = XskMap::try_from(take_map(&mut ebpf, map_name::SOCKETS)?)
            .map_err(map_type(map_name::SOCKETS))?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(LoaderError::Missing {
                what: "program",
                name: PROGRAM_NAME,
            })?
            .try_into()
            .map_err(LoaderError::Verify)?;
        program.load().map_err(LoaderError::Verify)?;
        let program_id = program.info().map(|info| info.id()).unwrap_or(0);

        let try_mode = |program: &mut Xdp, mode: XdpMode| {
            program
                .attach_to_if_index(ifindex, mode)
                .and_then(|id| program.take_link(id))
                .map_err(|e| error_chain(&e))
        };
        let (link, mode, fallback_reason) = match opts.mode {
            XdpModeChoice::Native => {
                let link = try_mode(program, XdpMode::Driver).map_err(|e| LoaderError::Attach {
                    iface: opts.iface.clone(),
                    detail: format!("native mode: {e}"),
                })?;
                (link, AttachedMode::Native, None)
            }
            XdpModeChoice::Skb => {
                let link = try_mode(program, XdpMode::Skb).map_err(|e| LoaderError::Attach {
                    iface: opts.iface.clone(),
                    detail: format!("skb mode: {e}"),
                })?;
                (link, AttachedMode::Skb, None)
            }
            XdpModeChoice::Auto => match try_mode(program, XdpMode::Driver) {
                Ok(link) => (link, AttachedMode::Native, None),
                Err(native) => match try_mode(program, XdpMode::Skb) {
                    Ok(link) => (link, AttachedMode::Skb, Some(native)),
                    Err(skb) => {
                        return Err(LoaderError::Attach {
                            iface: opts.iface.clone(),
                            detail: format!("native mode: {native}; skb mode: {skb}"),
                        });
                    }
                },
            },
        };
        // aya falls back to netlink when bpf_link_create says EINVAL; such an
        // attachment would survive the process, which we promise never happens.
        let link = FdLink::try_from(link).map_err(|_| LoaderError::NoBpfLink {
            iface: opts.iface.clone(),
        })?;
        if let Some(reason) = &fallback_reason {
            log::info!(
                "{}: native XDP refused ({reason}); attached in skb mode",
                opts.iface
            );
        }

        let log_pump = LogPump::start(program_id);
        Ok(XdpProgram {
            link: Some(link),
            log_pump,
            config,
            counters,
            admitted,
            sockets,
            _ebpf: ebpf,
            iface: opts.iface.clone(),
            mode,
            program_id,
            fallback_reason,
        })
    }

    /// The interface the program is attached to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The XDP mode obtained.
    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// Why native mode was not obtained, when `Auto` fell back to skb mode.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The kernel's id of the loaded program (as `bpftool prog` shows it).
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    /// Replaces the program's configuration.
    pub fn set_config(&mut self, config: &XdpConfig) -> Result<(), LoaderError> {
        self.config
            .set(0, config, 0)
            .map_err(|source| LoaderError::Map {
                map: map_name::CONFIG,
                op: "bpf_map_update_elem",
                source,
            })
    }

    /// The program's configuration.
    pub fn config(&self) -> Result<XdpConfig, LoaderError> {
        self.config.get(&0, 0).map_err(|source| LoaderError::Map {
            map: map_name::CONFIG,
            op: "bpf_map_lookup_elem",
            source,
        })
    }

    /// Redirects data-plane frames whose IPv4 source is `peer`.
    pub fn admit(&mut self, peer: Ipv4Addr) -> Result<(), LoaderError> {
        self.admitted
            .insert(admitted_key(peer.octets()), ADMITTED, 0)
            .map_err(|source| LoaderError::Map {
                map: map_name::ADMITTED,
                op: "bpf_map_update_elem",
                source,
            })
    }

    /// Stops redirecting frames from `peer`.
    pub fn revoke(&mut self, peer: Ipv4Addr) -> Result<(), LoaderError> {
        self.admitted
            .remove(&admitted_key(peer.octets()))
            .map_err(|source| LoaderError::Map {
                map: map_name::ADMITTED,
                op: "bpf_map_delete_elem",
                source,
            })
    }

    /// Makes `socket` (an AF_XDP socket bound to `queue` of this interface)
    /// the destination of data-plane frames received on `queue`.
    pub fn set_socket(&mut self, queue: u32, socket: BorrowedFd<'_>) -> Result<(), LoaderError> {
        self.sockets
            .set(queue, socket.as_raw_fd(), 0)
            .map_err(|source| LoaderError::Map {
                map: map_name::SOCKETS,
                op: "bpf_map_update_elem",
                source,
            })
    }

    /// Removes the socket of `queue`; its frames go to the kernel's stack again.
    pub fn clear_socket(&mut self, queue: u32) -> Result<(), LoaderError> {
        self.sockets
            .unset(queue)
            .map_err(|source| LoaderError::Map {
                map: map_name::SOCKETS,
                op: "bpf_map_delete_elem",
                source,
            })
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, LoaderError> {
        let mut sums = Counters::default();
        for counter in Counter::ALL {
            let values =
                self.counters
                    .get(&(counter as u32), 0)
                    .map_err(|source| LoaderError::Map {
                        map: map_name::COUNTERS,
                        op: "bpf_map_lookup_elem",
                        source,
                    })?;
            sums.0[counter as usize] = values.iter().sum();
        }
        Ok(sums)
    }

    /// Detaches the program now (dropping does the same).
    pub fn detach(mut self) {
        self.link.take();
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        // Closing the only link fd detaches the program from the interface.
        self.link.take();
        if let Some(pump) = self.log_pump.take() {
            pump.stop();
        }
    }
}

/// The embedded XDP object (what [`XdpProgram::attach`] loads).
pub fn program_object() -> &'static [u8] {
    PROGRAM_OBJECT
}

/// An error and its sources on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The interface index of `iface` in the calling thread's network namespace.
pub fn if_index(iface: &str) -> Result<u32, LoaderError> {
    let no_interface = || LoaderError::NoInterface {
        iface: iface.to_owned(),
    };
    let name = std::ffi::CString::new(iface).map_err(|_| no_interface())?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(no_interface())
    } else {
        Ok(index)
    }
}

/// The id of the XDP program attached to `iface`, if any (from `ip -d -j link`).
pub fn attached_program_id(iface: &str) -> Option<u32> {
    let output = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let xdp = links.get(0)?.get("xdp")?;
    let prog = xdp
        .get("prog")
        .or_else(|| xdp.get("attached")?.get(0)?.get("prog"))?;
    prog.get("id")?
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
}

/// Removes the XDP program `id` from `iface`: a netlink-attached program
/// through `ip link set ... off` in whatever mode it is, a link-attached one
/// (another process's bpf_link) with BPF_LINK_DETACH.
fn remove_program(iface: &str, id: u32) -> Result<(), LoaderError> {
    let cannot = |detail: String| LoaderError::CannotReplace {
        iface: iface.to_owned(),
        id,
        detail,
    };
    let mut detail = String::new();
    for mode in ["xdp", "xdpgeneric", "xdpdrv"] {
        match Command::new("ip")
            .args(["link", "set", "dev", iface, mode, "off"])
            .output()
        {
            Ok(out) if out.status.success() && attached_program_id(iface).is_none() => {
                return Ok(());
            }
            Ok(out) => detail = String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => detail = format!("running ip: {e}"),
        }
    }
    match detach_xdp_link_of(id) {
        Ok(true) if wait_detached(iface, Duration::from_secs(1)) => Ok(()),
        Ok(true) => Err(cannot("still attached after BPF_LINK_DETACH".to_owned())),
        Ok(false) => Err(cannot(if detail.is_empty() {
            "still attached after `ip link set ... xdp off`".to_owned()
        } else {
            detail
        })),
        Err(e) => Err(cannot(e)),
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u32; 4]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded bpf_attr prefix large enough for the
    // LINK_GET_FD_BY_ID and LINK_DETACH commands; its size is passed along.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<[u32; 4]>() as libc::c_ulong,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Detaches the XDP bpf_link that holds program `program_id`, if there is
/// one. Returns whether one was found.
fn detach_xdp_link_of(program_id: u32) -> Result<bool, String> {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let link = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|info| {
            info.program_id() == program_id
                && matches!(info.link_type(), Ok(aya::programs::links::LinkType::Xdp))
        });
    let Some(link) = link else { return Ok(false) };
    let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut [link.id(), 0, 0, 0])
        .map_err(|e| format!("bpf(BPF_LINK_GET_FD_BY_ID {}): {e}", link.id()))?;
    // SAFETY: the kernel just returned this fd to us; OwnedFd closes it once.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    bpf(BPF_LINK_DETACH, &mut [fd.as_raw_fd() as u32, 0, 0, 0])
        .map_err(|e| format!("bpf(BPF_LINK_DETACH link {}): {e}", link.id()))?;
    Ok(true)
}

/// Forwards the program's aya-log records to the `log` crate from a thread.
struct LogPump {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl LogPump {
    /// Starts forwarding from a thread; the thread ends quietly (with a debug
    /// message) when logging can't start, which never stops the data plane.
    fn start(program_id: u32) -> Option<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xdp-log".into())
            .spawn(move || {
                let mut logger = match aya_log::EbpfLogger::init_from_id(program_id) {
                    Ok(logger) => logger,
                    Err(e) => {
                        log::debug!("XDP program logs unavailable: {e}");
                        return;
                    }
                };
                while !stopping.load(Ordering::Relaxed) {
                    let mut pollfd = libc::pollfd {
                        fd: logger.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, which outlives the call.
                    unsafe { libc::poll(&mut pollfd, 1, 100) };
                    logger.flush();
                }
            })
            .ok()?;
        Some(LogPump { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Waits a little for a detached program to disappear from `iface` (the
/// kernel releases a link asynchronously from the last close).
pub fn wait_detached(iface: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if attached_program_id(iface).is_none() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
