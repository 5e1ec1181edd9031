//! The lab: two network namespaces joined by a veth pair, standing in for a
//! pair of NICs. Native XDP works on veth (zero-copy AF_XDP does not, so the
//! lab exercises copy mode). Everything is done with iproute2's `ip`.
//!
//! `dataplane lab up|down|status` drives it from the command line; tests use
//! the [`Lab`] guard, which tears the lab down when dropped, also on panic.

mod netns;

use std::{
    fmt,
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

pub use netns::{NetnsError, in_netns, spawn_in_netns};

/// Names and addresses of a lab.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct LabConfig {
    /// Network namespace of the server side.
    #[arg(long, default_value = "dp-srv")]
    pub server_ns: String,
    /// Network namespace of the client side.
    #[arg(long, default_value = "dp-cli")]
    pub client_ns: String,
    /// veth end inside the server namespace.
    #[arg(long, default_value = "dpv-srv")]
    pub server_veth: String,
    /// veth end inside the client namespace.
    #[arg(long, default_value = "dpv-cli")]
    pub client_veth: String,
    /// Server address.
    #[arg(long, default_value = "10.77.0.1")]
    pub server_ip: Ipv4Addr,
    /// Client address.
    #[arg(long, default_value = "10.77.0.2")]
    pub client_ip: Ipv4Addr,
    /// Prefix length of both addresses.
    #[arg(long, default_value_t = 24)]
    pub prefix_len: u8,
    /// MTU of both veth ends. 3506 is the most at which veth runs an XDP
    /// program in driver mode (one page per frame); AF_XDP pays per frame,
    /// TCP hardly notices (GSO/GRO). Use --mtu 1500 for the small-frame case.
    #[arg(long, default_value_t = crate::xdp::doctor::XDP_MAX_MTU)]
    pub mtu: u32,
    /// RX and TX queues of each veth end.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            server_ns: "dp-srv".into(),
            client_ns: "dp-cli".into(),
            server_veth: "dpv-srv".into(),
            client_veth: "dpv-cli".into(),
            server_ip: Ipv4Addr::new(10, 77, 0, 1),
            client_ip: Ipv4Addr::new(10, 77, 0, 2),
            prefix_len: 24,
            mtu: crate::xdp::doctor::XDP_MAX_MTU,
            queues: 1,
        }
    }
}

impl LabConfig {
    /// A configuration whose names are unique to this process and call
    /// (`tag` is at most 3 characters, e.g. a test's initials), so labs of
    /// tests running in parallel never collide. Interface names stay within
    /// the kernel's 15 characters.
    pub fn unique(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(3)
            .collect();
        let id = format!("{tag}{:x}{n:x}", std::process::id());
        let id = &id[..id.len().min(11)];
        LabConfig {
            server_ns: format!("dp-{id}-s"),
            client_ns: format!("dp-{id}-c"),
            server_veth: format!("v{id}s"),
            client_veth: format!("v{id}c"),
            ..LabConfig::default()
        }
    }
}

/// Failures of driving `ip`.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// `ip` could not be run.
    #[error("running `{command}` failed (is iproute2 installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// `ip` ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    /// Entering a namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// `ip -j` printed something unexpected.
    #[error("could not read the output of `{command}`: {detail}")]
    Output { command: String, detail: String },
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Names of the existing network namespaces.
pub fn netns_list() -> Result<Vec<String>, LabError> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// State of one veth end.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinkState {
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// Administratively and operationally up.
    pub up: bool,
    /// IPv4 addresses with prefix length.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// RX queue count.
    pub rx_queues: u32,
    /// Id of the attached XDP program, if any.
    pub xdp_program: Option<u32>,
}

/// What exists of a lab.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LabStatus {
    /// Server namespace exists.
    pub server_ns: bool,
    /// Client namespace exists.
    pub client_ns: bool,
    /// Server veth end, if it exists in its namespace.
    pub server_link: Option<LinkState>,
    /// Client veth end, if it exists in its namespace.
    pub client_link: Option<LinkState>,
}

impl LabStatus {
    /// Nothing of the lab exists.
    pub fn is_absent(&self) -> bool {
        !self.server_ns && !self.client_ns
    }

    /// Both namespaces and both veth ends exist and are up.
    pub fn is_up(&self) -> bool {
        self.server_link.as_ref().is_some_and(|l| l.up)
            && self.client_link.as_ref().is_some_and(|l| l.up)
    }
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |f: &mut fmt::Formatter<'_>, ns: bool, link: &Option<LinkState>| match (ns, link)
        {
            (false, _) => writeln!(f, "  namespace: absent"),
            (true, None) => writeln!(f, "  namespace: present, veth: absent"),
            (true, Some(l)) => writeln!(
                f,
                "  {} {} mac {} mtu {} queues {} addr {} xdp {}",
                l.name,
                if l.up { "UP" } else { "DOWN" },
                format_mac(&l.mac),
                l.mtu,
                l.rx_queues,
                l.ipv4
                    .iter()
                    .map(|(a, p)| format!("{a}/{p}"))
                    .collect::<Vec<_>>()
                    .join(","),
                l.xdp_program
                    .map_or("none".to_owned(), |id| format!("prog id {id}")),
            ),
        };
        writeln!(f, "server:")?;
        side(f, self.server_ns, &self.server_link)?;
        writeln!(f, "client:")?;
        side(f, self.client_ns, &self.client_link)
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The state of `link` in namespace `ns`, `None` when it does not exist.
pub fn link_state(ns: &str, link: &str) -> Result<Option<LinkState>, LabError> {
    let args = ["-n", ns, "-d", "-j", "addr", "show", "dev", link];
    let out = match ip(&args) {
        Ok(out) => out,
        Err(LabError::Command { stderr, .. }) if stderr.contains("does not exist") => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let bad = |detail: &str| LabError::Output {
        command: format!("ip {}", args.join(" ")),
        detail: detail.to_owned(),
    };
    let json: serde_json::Value = serde_json::from_str(&out).map_err(|e| bad(&e.to_string()))?;
    let Some(entry) = json.get(0) else {
        return Ok(None);
    };
    let mac = entry
        .get("address")
        .and_then(|a| a.as_str())
        .and_then(parse_mac)
        .ok_or_else(|| bad("no MAC address"))?;
    let flags: Vec<&str> = entry
        .get("flags")
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
        .unwrap_or_default();
    let ipv4 = entry
        .get("addr_info")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter(|i| i.get("family").and_then(|f| f.as_str()) == Some("inet"))
                .filter_map(|i| {
                    let addr = i.get("local")?.as_str()?.parse().ok()?;
                    let prefix = u8::try_from(i.get("prefixlen")?.as_u64()?).ok()?;
                    Some((addr, prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    let xdp = entry.get("xdp");
    let xdp_program = xdp
        .and_then(|x| {
            x.get("prog")
                .or_else(|| x.get("attached")?.get(0)?.get("prog"))
        })
        .and_then(|p| p.get("id")?.as_u64())
        .and_then(|id| u32::try_from(id).ok());
    Ok(Some(LinkState {
        name: link.to_owned(),
        mac,
        mtu: entry.get("mtu").and_then(|m| m.as_u64()).unwrap_or(0) as u32,
        up: flags.contains(&"UP") && flags.contains(&"LOWER_UP"),
        ipv4,
        rx_queues: entry
            .get("num_rx_queues")
            .and_then(|q| q.as_u64())
            .unwrap_or(1) as u32,
        xdp_program,
    }))
}

/// The MAC address of `link` in namespace `ns`.
pub fn mac_address(ns: &str, link: &str) -> Result<[u8; 6], LabError> {
    link_state(ns, link)?
        .map(|l| l.mac)
        .ok_or_else(|| LabError::Command {
            command: format!("ip -n {ns} link show dev {link}"),
            stderr: format!("device {link} does not exist in namespace {ns}"),
        })
}

/// Reports what exists of the lab.
pub fn status(config: &LabConfig) -> Result<LabStatus, LabError> {
    let namespaces = netns_list()?;
    let server_ns = namespaces.contains(&config.server_ns);
    let client_ns = namespaces.contains(&config.client_ns);
    let server_link = if server_ns {
        link_state(&config.server_ns, &config.server_veth)?
    } else {
        None
    };
    let client_link = if client_ns {
        link_state(&config.client_ns, &config.client_veth)?
    } else {
        None
    };
    Ok(LabStatus {
        server_ns,
        client_ns,
        server_link,
        client_link,
    })
}

/// Brings the lab up; does nothing that is already done, repairs a half
/// built lab.
pub fn up(config: &LabConfig) -> Result<LabStatus, LabError> {
    if config.queues == 0 {
        return Err(LabError::Command {
            command: "lab up".into(),
            stderr: "a veth needs at least one queue".into(),
        });
    }
    let namespaces = netns_list()?;
    for ns in [&config.server_ns, &config.client_ns] {
        if !namespaces.contains(ns) {
            ip(&["netns", "add", ns])?;
        }
    }
    let server = link_state(&config.server_ns, &config.server_veth)?;
    let client = link_state(&config.client_ns, &config.client_veth)?;
    let queues_ok =
        |l: &Option<LinkState>| l.as_ref().is_some_and(|l| l.rx_queues == config.queues);
    if !(queues_ok(&server) && queues_ok(&client)) {
        // Half a pair, or the wrong queue count: start the pair over.
        if server.is_some() {
            ip(&[
                "-n",
                &config.server_ns,
                "link",
                "del",
                "dev",
                &config.server_veth,
            ])?;
        }
        if client.is_some() && link_state(&config.client_ns, &config.client_veth)?.is_some() {
            ip(&[
                "-n",
                &config.client_ns,
                "link",
                "del",
                "dev",
                &config.client_veth,
            ])?;
        }
        let queues = config.queues.to_string();
        ip(&[
            "-n",
            &config.server_ns,
            "link",
            "add",
            &config.server_veth,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            &config.client_veth,
            "netns",
            &config.client_ns,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
        ])?;
    }
    let mtu = config.mtu.to_string();
    for (ns, link, addr) in [
        (&config.server_ns, &config.server_veth, config.server_ip),
        (&config.client_ns, &config.client_veth, config.client_ip),
    ] {
        ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
        ip(&["-n", ns, "link", "set", "dev", link, "mtu", &mtu])?;
        let cidr = format!("{addr}/{}", config.prefix_len);
        ip(&["-n", ns, "addr", "replace", &cidr, "dev", link])?;
        ip(&["-n", ns, "link", "set", "dev", link, "up"])?;
    }
    status(config)
}

/// Removes the lab: both namespaces, and with them the veth pair. Leaves
/// nothing behind and succeeds when nothing was there.
pub fn down(config: &LabConfig) -> Result<(), LabError> {
    let namespaces = netns_list()?;
    for ns in [&config.server_ns, &config.client_ns] {
        if namespaces.contains(ns) {
            ip(&["netns", "del", ns])?;
        }
    }
    Ok(())
}

/// A lab that exists as long as this guard: [`Lab::up`] builds it, dropping
/// the guard (also while unwinding from a panic) removes it.
#[derive(Debug)]
pub struct Lab {
    config: LabConfig,
}

impl Lab {
    /// Brings up a lab with `config`.
    pub fn up(config: LabConfig) -> Result<Self, LabError> {
        // The guard exists before anything is created, so a failure half way
        // still cleans up.
        let lab = Lab { config };
        up(&lab.config)?;
        Ok(lab)
    }

    /// Brings up a lab with names unique to this process (see [`LabConfig::unique`]).
    pub fn unique(tag: &str) -> Result<Self, LabError> {
        Self::up(LabConfig::unique(tag))
    }

    /// The lab's configuration.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// What exists of it.
    pub fn status(&self) -> Result<LabStatus, LabError> {
        status(&self.config)
    }

    /// MAC address of the server's veth end.
    pub fn server_mac(&self) -> Result<[u8; 6], LabError> {
        mac_address(&self.config.server_ns, &self.config.server_veth)
    }

    /// MAC address of the client's veth end.
    pub fn client_mac(&self) -> Result<[u8; 6], LabError> {
        mac_address(&self.config.client_ns, &self.config.client_veth)
    }

    /// Runs `f` on this thread inside the server namespace.
    pub fn in_server<T>(&self, f: impl FnOnce() -> T) -> Result<T, LabError> {
        Ok(in_netns(&self.config.server_ns, f)?)
    }

    /// Runs `f` on this thread inside the client namespace.
    pub fn in_client<T>(&self, f: impl FnOnce() -> T) -> Result<T, LabError> {
        Ok(in_netns(&self.config.client_ns, f)?)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = down(&self.config) {
            eprintln!("lab teardown failed: {e}");
        }
    }
}

/// `dataplane lab …`
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

/// What to do with the lab.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Create the namespaces and the veth pair (idempotent).
    Up(LabConfig),
    /// Remove them (nothing is left behind).
    Down(LabConfig),
    /// Report what exists.
    Status {
        #[command(flatten)]
        config: LabConfig,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `dataplane lab` command, printing its outcome.
pub fn run(args: &LabArgs) -> Result<(), LabError> {
    match &args.command {
        LabCommand::Up(config) => {
            let status = up(config)?;
            print!("lab up\n{status}");
            println!(
                "enter it with: ip netns exec {} …  /  ip netns exec {} …",
                config.server_ns, config.client_ns
            );
        }
        LabCommand::Down(config) => {
            down(config)?;
            println!(
                "lab down: namespaces {} and {} removed",
                config.server_ns, config.client_ns
            );
        }
        LabCommand::Status { config, json } => {
            let status = status(config)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else if status.is_absent() {
                println!(
                    "lab is down (no namespace {} or {})",
                    config.server_ns, config.client_ns
                );
            } else {
                print!("{status}");
            }
        }
    }
    Ok(())
}
