//! `dataplane doctor`: what this machine and interface allow for the AF_XDP
//! path, each finding with a verdict and what to do about it; and [`probe`],
//! the quick yes/no (with the one-line reason) that `--mode auto` uses.
//!
//! Nothing is attached to an interface the user did not name.

use std::{fmt, fs, io, os::fd::AsRawFd, process::Command};

use aya::{Ebpf, programs::Xdp};
use dataplane_common::PROGRAM_NAME;

use super::{
    loader::{
        self, AttachOptions, AttachedMode, LoaderError, XdpModeChoice, XdpProgram, error_chain,
    },
    xsk::{BindMode, BoundMode, XskConfig, XskError, XskSocket},
};

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Largest MTU a driver-mode XDP program without multi-buffer support
/// attaches at on veth: one 4 KiB page less the XDP headroom (256), the
/// skb_shared_info (320) and the Ethernet header. Above it the attach fails
/// with ERANGE (skb mode still works); real NIC drivers have their own limits.
pub const XDP_MAX_MTU: u32 = 3506;

/// A minimal socket for trying a bind: a few frames are enough.
fn probe_socket_config(queue: u32, bind: BindMode) -> XskConfig {
    XskConfig {
        bind,
        queue,
        frame_count: 64,
        tx_frames: 32,
        fill_size: 64,
        completion_size: 64,
        rx_size: 64,
        tx_size: 64,
        ..XskConfig::default()
    }
}

/// How a finding bodes for the AF_XDP path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but not at its best, or something optional is missing.
    Warn,
    /// The AF_XDP path cannot work until this is fixed.
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => " ok ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    /// ok / warn / fail.
    pub verdict: Verdict,
    /// What was checked.
    pub check: &'static str,
    /// What was found.
    pub detail: String,
    /// What to do, when not ok.
    pub advice: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {:<14} {}", self.verdict, self.check, self.detail)?;
        if let Some(advice) = &self.advice {
            write!(f, "\n       -> {advice}")?;
        }
        Ok(())
    }
}

/// The doctor's report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Findings in the order checked.
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, verdict: Verdict, check: &'static str, detail: impl Into<String>) {
        self.findings.push(Finding {
            verdict,
            check,
            detail: detail.into(),
            advice: None,
        });
    }

    fn push_advice(
        &mut self,
        verdict: Verdict,
        check: &'static str,
        detail: impl Into<String>,
        advice: impl Into<String>,
    ) {
        self.findings.push(Finding {
            verdict,
            check,
            detail: detail.into(),
            advice: Some(advice.into()),
        });
    }

    /// The worst verdict.
    pub fn worst(&self) -> Verdict {
        self.findings
            .iter()
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Ok)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}

/// `dataplane doctor`
#[derive(Clone, Debug, clap::Args)]
pub struct DoctorArgs {
    /// Interface to examine; XDP is attached (and removed) only on this one.
    #[arg(long)]
    pub iface: Option<String>,
    /// Queue to try an AF_XDP bind on.
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks and prints the report; returns the worst verdict (a
/// caller may turn `Fail` into a nonzero exit status).
pub fn run(args: &DoctorArgs) -> Verdict {
    let report = diagnose(args.iface.as_deref(), args.queue);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{report}");
        if args.iface.is_none() {
            println!(
                "(name an interface with --iface to check its driver, XDP modes, queues and MTU)"
            );
        }
    }
    report.worst()
}

/// Runs every check; interface checks only when `iface` is given.
pub fn diagnose(iface: Option<&str>, queue: u32) -> Report {
    let mut report = Report::default();
    check_kernel(&mut report);
    let caps = check_capabilities(&mut report);
    check_btf(&mut report);
    check_bpf(&mut report, caps);
    check_xdp_socket(&mut report);
    check_hugepages(&mut report);
    if let Some(iface) = iface {
        check_interface(&mut report, iface, queue);
    }
    report
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn check_kernel(report: &mut Report) {
    let release = kernel_release();
    match kernel_version(&release) {
        Some(v) if v >= (5, 9) => report.push(
            Verdict::Ok,
            "kernel",
            format!("{release}: bpf_link XDP attach, XDP_STATISTICS v2"),
        ),
        Some(v) if v >= (4, 18) => report.push_advice(
            Verdict::Fail,
            "kernel",
            format!("{release}: AF_XDP exists but XDP bpf_link needs 5.9"),
            "upgrade to Linux 5.9 or newer, or use --mode sendfile",
        ),
        _ => report.push_advice(
            Verdict::Fail,
            "kernel",
            format!("{release}: no AF_XDP (needs 4.18, bpf_link needs 5.9)"),
            "upgrade the kernel or use --mode sendfile",
        ),
    }
}

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

#[derive(Clone, Copy)]
struct Caps {
    net_admin: bool,
    bpf: bool,
}

fn check_capabilities(report: &mut Report) -> Caps {
    let eff = effective_capabilities().unwrap_or(0);
    let has = |cap: u32| eff & (1 << cap) != 0;
    let caps = Caps {
        net_admin: has(CAP_NET_ADMIN),
        bpf: has(CAP_BPF) || has(CAP_SYS_ADMIN),
    };
    let mut missing = Vec::new();
    if !caps.net_admin {
        missing.push("CAP_NET_ADMIN");
    }
    if !caps.bpf {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if missing.is_empty() {
        report.push(
            Verdict::Ok,
            "capabilities",
            "CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW",
        );
    } else {
        report.push_advice(
            Verdict::Fail,
            "capabilities",
            format!("missing {}", missing.join(", ")),
            "run as root, or `setcap cap_net_admin,cap_net_raw,cap_bpf,cap_perfmon+ep dataplane`",
        );
    }
    caps
}

fn check_btf(report: &mut Report) {
    if fs::metadata("/sys/kernel/btf/vmlinux").is_ok() {
        report.push(Verdict::Ok, "BTF", "/sys/kernel/btf/vmlinux present");
    } else {
        report.push_advice(
            Verdict::Warn,
            "BTF",
            "no /sys/kernel/btf/vmlinux",
            "not needed by the XDP program; a kernel with CONFIG_DEBUG_INFO_BTF helps bpftool",
        );
    }
}

/// Loads the XDP program without attaching it: proves the bpf syscall works
/// and the verifier accepts the program on this kernel.
fn load_only() -> Result<(), String> {
    let mut ebpf = Ebpf::load(loader::program_object()).map_err(|e| error_chain(&e))?;
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| format!("program {PROGRAM_NAME} missing from the object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| error_chain(&e))?;
    program.load().map_err(|e| error_chain(&e))
}

fn check_bpf(report: &mut Report, caps: Caps) {
    match load_only() {
        Ok(()) => report.push(
            Verdict::Ok,
            "bpf",
            "bpf() works and the verifier accepts the XDP program",
        ),
        Err(e) => report.push_advice(
            Verdict::Fail,
            "bpf",
            format!("loading the XDP program failed: {e}"),
            if caps.bpf {
                "check `sysctl kernel.unprivileged_bpf_disabled` and the kernel's BPF config"
            } else {
                "needs CAP_BPF (or CAP_SYS_ADMIN): run as root"
            },
        ),
    }
}

fn check_xdp_socket(report: &mut Report) {
    // SAFETY: plain socket(2); the fd is closed right below.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0) };
    if fd >= 0 {
        // SAFETY: closes the fd just opened, once.
        unsafe { libc::close(fd) };
        report.push(Verdict::Ok, "XDP sockets", "socket(AF_XDP) works");
        return;
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => report.push_advice(
            Verdict::Fail,
            "XDP sockets",
            "kernel without XDP sockets (socket(AF_XDP): EAFNOSUPPORT)",
            "use a kernel built with CONFIG_XDP_SOCKETS=y, or --mode sendfile",
        ),
        _ => report.push_advice(
            Verdict::Fail,
            "XDP sockets",
            format!("socket(AF_XDP) failed: {e}"),
            "needs CAP_NET_RAW: run as root",
        ),
    }
}

fn meminfo(key: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn check_hugepages(report: &mut Report) {
    let free = meminfo("HugePages_Free:").unwrap_or(0);
    let size_kb = meminfo("Hugepagesize:").unwrap_or(0);
    if free > 0 {
        report.push(
            Verdict::Ok,
            "huge pages",
            format!("{free} free pages of {size_kb} kB (--hugepages usable)"),
        );
    } else {
        report.push_advice(
            Verdict::Warn,
            "huge pages",
            "none free (the UMEM uses normal pages)",
            "optional: `echo 64 > /proc/sys/vm/nr_hugepages` to back the UMEM with huge pages",
        );
    }
}

/// Facts about an interface from the kernel.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct InterfaceFacts {
    /// Driver name (ethtool), or the link kind (`veth`) when there is no driver info.
    pub driver: String,
    /// MTU.
    pub mtu: u32,
    /// RX queues.
    pub rx_queues: u32,
    /// Combined/TX queues.
    pub tx_queues: u32,
    /// XDP program already attached, if any.
    pub xdp_program: Option<u32>,
}

/// Reads the driver through the ethtool ioctl (ETHTOOL_GDRVINFO).
fn ethtool_driver(iface: &str) -> io::Result<String> {
    #[repr(C)]
    struct EthtoolDrvinfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const _: () = assert!(size_of::<EthtoolDrvinfo>() == 196);
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;

    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: all-zero is a valid EthtoolDrvinfo (integers and byte arrays).
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a correctly
    // sized ethtool_drvinfo; both outlive the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// What the kernel says about `iface` (in the calling thread's namespace).
pub fn interface_facts(iface: &str) -> Option<InterfaceFacts> {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let link = json.get(0)?;
    let number = |key: &str| link.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    let kind = link
        .get("linkinfo")
        .and_then(|l| l.get("info_kind"))
        .and_then(|k| k.as_str())
        .unwrap_or("unknown")
        .to_owned();
    Some(InterfaceFacts {
        driver: ethtool_driver(iface).unwrap_or(kind),
        mtu: number("mtu"),
        rx_queues: number("num_rx_queues"),
        tx_queues: number("num_tx_queues"),
        xdp_program: loader::attached_program_id(iface),
    })
}

fn check_interface(report: &mut Report, iface: &str, queue: u32) {
    let Some(facts) = interface_facts(iface) else {
        report.push_advice(
            Verdict::Fail,
            "interface",
            format!("{iface} does not exist in this network namespace"),
            "check `ip link`; for the lab run `dataplane lab up` and `ip netns exec dp-srv dataplane doctor --iface dpv-srv`",
        );
        return;
    };
    report.push(Verdict::Ok, "driver", format!("{iface}: {}", facts.driver));

    if queue < facts.rx_queues {
        report.push(
            Verdict::Ok,
            "queues",
            format!(
                "{} RX / {} TX queues; using queue {queue}",
                facts.rx_queues, facts.tx_queues
            ),
        );
    } else {
        report.push_advice(
            Verdict::Fail,
            "queues",
            format!(
                "queue {queue} does not exist ({} RX queues)",
                facts.rx_queues
            ),
            format!(
                "pick --queue below {} (see `ethtool -l {iface}`)",
                facts.rx_queues
            ),
        );
    }

    if facts.mtu <= XDP_MAX_MTU {
        let frames = if facts.mtu + 14 <= 2048 {
            "2048- or 4096-byte"
        } else {
            "4096-byte"
        };
        report.push(
            Verdict::Ok,
            "MTU",
            format!(
                "{} (XDP limit {XDP_MAX_MTU}; {frames} UMEM frames)",
                facts.mtu
            ),
        );
    } else {
        report.push_advice(
            Verdict::Fail,
            "MTU",
            format!(
                "{} is too large for XDP without multi-buffer (limit {XDP_MAX_MTU})",
                facts.mtu
            ),
            format!("`ip link set dev {iface} mtu 1500`"),
        );
    }

    if let Some(id) = facts.xdp_program {
        report.push_advice(
            Verdict::Warn,
            "XDP modes",
            format!("{iface} already has XDP program id {id}; not touching it"),
            "detach it (or pass --force to the data plane) to let dataplane attach",
        );
    } else {
        for (mode, name) in [
            (XdpModeChoice::Native, "native"),
            (XdpModeChoice::Skb, "skb"),
        ] {
            let opts = AttachOptions {
                iface: iface.to_owned(),
                mode,
                force: false,
            };
            match XdpProgram::attach(&opts) {
                Ok(program) => {
                    drop(program);
                    loader::wait_detached(iface, std::time::Duration::from_secs(1));
                    report.push(Verdict::Ok, "XDP modes", format!("{name} mode attaches"));
                }
                Err(e) => report.push_advice(
                    if mode == XdpModeChoice::Native {
                        Verdict::Warn
                    } else {
                        Verdict::Fail
                    },
                    "XDP modes",
                    format!("{name} mode refused: {}", error_chain(&e)),
                    if mode == XdpModeChoice::Native {
                        "the driver has no native XDP; skb mode works but is slower"
                    } else {
                        "XDP cannot run on this interface; use --mode sendfile"
                    },
                ),
            }
        }
    }

    let config = probe_socket_config(queue, BindMode::ZeroCopy);
    match XskSocket::open(iface, &config) {
        Ok(_) => report.push(
            Verdict::Ok,
            "zero-copy",
            format!("zero-copy bind on queue {queue} works"),
        ),
        Err(XskError::Socket {
            call: "bind",
            source,
            ..
        }) if matches!(source.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
            report.push_advice(
                Verdict::Warn,
                "zero-copy",
                format!("driver {} has no zero-copy AF_XDP ({source})", facts.driver),
                "copy mode works (veth never has zero-copy); for zero-copy use a NIC such as ice, i40e, mlx5",
            );
        }
        Err(e) => report.push_advice(
            Verdict::Fail,
            "zero-copy",
            format!(
                "binding an AF_XDP socket to queue {queue} failed: {}",
                error_chain(&e)
            ),
            "is another AF_XDP socket bound to that queue? try another --queue",
        ),
    }
}

/// What `--mode auto` learned when AF_XDP is usable.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Capabilities {
    /// XDP mode that attached.
    pub xdp_mode: AttachedMode,
    /// Bind mode obtained with `auto`.
    pub bind: BoundMode,
    /// Interface facts.
    pub facts: InterfaceFacts,
}

/// Why AF_XDP is not usable here; `Display` is the one-line fallback reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Reason {
    /// The process lacks a capability.
    MissingCapability(&'static str),
    /// No AF_XDP in the kernel.
    KernelWithoutXdpSockets,
    /// The interface does not exist.
    NoInterface(String),
    /// XDP cannot be attached to the interface.
    DriverWithoutXdp { iface: String, detail: String },
    /// Another XDP program is on the interface.
    InterfaceBusy { iface: String, program_id: u32 },
    /// The queue is taken or does not exist.
    QueueBusy {
        iface: String,
        queue: u32,
        detail: String,
    },
    /// MTU above what XDP handles.
    MtuTooLarge { iface: String, mtu: u32, max: u32 },
    /// Anything else.
    Other(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MissingCapability(cap) => write!(f, "missing capability {cap}"),
            Reason::KernelWithoutXdpSockets => f.write_str("kernel without XDP sockets"),
            Reason::NoInterface(iface) => write!(f, "no interface {iface}"),
            Reason::DriverWithoutXdp { iface, detail } => {
                write!(f, "driver of {iface} without XDP ({detail})")
            }
            Reason::InterfaceBusy { iface, program_id } => {
                write!(f, "{iface} already runs XDP program id {program_id}")
            }
            Reason::QueueBusy {
                iface,
                queue,
                detail,
            } => {
                write!(f, "queue {queue} of {iface} busy ({detail})")
            }
            Reason::MtuTooLarge { iface, mtu, max } => {
                write!(f, "MTU {mtu} of {iface} too large for XDP (max {max})")
            }
            Reason::Other(detail) => f.write_str(detail),
        }
    }
}

/// Decides whether the AF_XDP path can run on `iface`/`queue` (in the calling
/// thread's namespace), by trying it: attach the program (then detach) and
/// bind a socket (then close). Cheap enough to run before every `auto` run.
pub fn probe(iface: &str, queue: u32) -> Result<Capabilities, Reason> {
    let eff = effective_capabilities().unwrap_or(0);
    if eff & (1 << CAP_NET_ADMIN) == 0 {
        return Err(Reason::MissingCapability("CAP_NET_ADMIN"));
    }
    if eff & (1 << CAP_BPF) == 0 && eff & (1 << CAP_SYS_ADMIN) == 0 {
        return Err(Reason::MissingCapability("CAP_BPF"));
    }
    if eff & (1 << CAP_NET_RAW) == 0 {
        return Err(Reason::MissingCapability("CAP_NET_RAW"));
    }
    // SAFETY: plain socket(2); the fd is closed right below.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            Reason::KernelWithoutXdpSockets
        } else {
            Reason::Other(format!("socket(AF_XDP): {e}"))
        });
    }
    // SAFETY: closes the fd just opened, once.
    unsafe { libc::close(fd) };

    let facts = interface_facts(iface).ok_or_else(|| Reason::NoInterface(iface.to_owned()))?;
    if facts.mtu > XDP_MAX_MTU {
        return Err(Reason::MtuTooLarge {
            iface: iface.to_owned(),
            mtu: facts.mtu,
            max: XDP_MAX_MTU,
        });
    }
    if queue >= facts.rx_queues {
        return Err(Reason::QueueBusy {
            iface: iface.to_owned(),
            queue,
            detail: format!("only {} queues", facts.rx_queues),
        });
    }
    let program = XdpProgram::attach(&AttachOptions::new(iface)).map_err(|e| match e {
        LoaderError::Busy { iface, id } => Reason::InterfaceBusy {
            iface,
            program_id: id,
        },
        LoaderError::Verify(_) | LoaderError::Load(_) => Reason::Other(error_chain(&e)),
        other => Reason::DriverWithoutXdp {
            iface: iface.to_owned(),
            detail: error_chain(&other),
        },
    })?;
    let xdp_mode = program.mode();
    let config = probe_socket_config(queue, BindMode::Auto);
    let bind = XskSocket::open(iface, &config)
        .map(|s| s.report().bind)
        .map_err(|e| Reason::QueueBusy {
            iface: iface.to_owned(),
            queue,
            detail: error_chain(&e),
        })?;
    drop(program);
    loader::wait_detached(iface, std::time::Duration::from_secs(1));
    Ok(Capabilities {
        xdp_mode,
        bind,
        facts,
    })
}
