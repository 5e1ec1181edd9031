//! CPU time of the whole machine from /proc/stat. Most of the work of the
//! kernel paths (softirq, ksoftirqd, veth NAPI) is not charged to our
//! processes, so per-process rusage would flatter them; the machine-wide
//! busy time does not.

use std::io;

/// Cumulative busy and idle time of all CPUs, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub idle: u64,
}

impl CpuTimes {
    pub fn read() -> io::Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "/proc/stat has no aggregate \"cpu\" line",
            )
        })
    }

    /// Parses the aggregate `cpu` line: user nice system idle iowait irq
    /// softirq steal (guest time is already included in user).
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if v.len() < 8 {
            return None;
        }
        let (user, nice, system, idle, iowait, irq, softirq, steal) =
            (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        Some(Self {
            busy: user + nice + system + irq + softirq + steal,
            idle: idle + iowait,
        })
    }

    /// Busy CPU-seconds between `self` (earlier) and `later`.
    pub fn busy_seconds_until(&self, later: &CpuTimes) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        later.busy.saturating_sub(self.busy) as f64 / hz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_aggregate_line_with_softirq() {
        let stat = "cpu  100 5 50 1000 10 3 7 2 0 0\ncpu0 50 2 25 500 5 1 3 1 0 0\nintr 1\n";
        let t = CpuTimes::parse(stat).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                busy: 100 + 5 + 50 + 3 + 7 + 2,
                idle: 1010
            }
        );
        assert!(CpuTimes::parse("cpu0 1 2 3\n").is_none());
        assert!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8\n").is_none());
    }

    #[test]
    fn reads_this_machine() {
        let a = CpuTimes::read().unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = CpuTimes::read().unwrap();
        assert!(b.busy >= a.busy && b.idle >= a.idle);
    }
}
