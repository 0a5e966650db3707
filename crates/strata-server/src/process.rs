//! This process's own resources, as Prometheus' process collectors name them: resident and
//! virtual memory, CPU seconds, open and maximum file descriptors, threads, start time. Read
//! from `/proc/self` at scrape time (a few small files); absent where there is no `/proc`.
//!
//! [`host`] reads the machine around it the same way: memory, load, CPUs, and the space
//! left on the filesystem of a directory (the data directory).
//!
//! Must not import: the engine, the store.

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ProcessStats {
    /// Resident memory (`VmRSS`), bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory (`VmSize`), bytes.
    pub virtual_memory_bytes: u64,
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// Threads.
    pub threads: u64,
    /// When the process started, Unix seconds.
    pub start_time_seconds: f64,
}

/// Clock ticks a second in `/proc/*/stat` (`USER_HZ`: 100 on every Linux ABI that matters).
const USER_HZ: f64 = 100.0;

/// Reads this process's resources; `None` without `/proc`.
pub fn read() -> Option<ProcessStats> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let kib = |key: &str| kib_field(&status, key);
    // Fields after the command name (which may hold spaces and parentheses): the state is
    // field 3, utime 14, stime 15, num_threads 20, starttime 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    Some(ProcessStats {
        resident_memory_bytes: kib("VmRSS:").unwrap_or(0),
        virtual_memory_bytes: kib("VmSize:").unwrap_or(0),
        cpu_seconds: (field(14)? + field(15)?) / USER_HZ,
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
        max_fds: max_open_files().unwrap_or(0),
        threads: field(20)? as u64,
        start_time_seconds: boot + field(22)? / USER_HZ,
    })
}

/// The bytes of a `Key:   123 kB` line of a `/proc` file (`status`, `meminfo`).
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine's resources, as `/proc` and `statvfs` tell them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HostStats {
    /// Logical CPUs this process may use.
    pub cpus: usize,
    /// Load averages over 1, 5 and 15 minutes (runnable tasks).
    pub load: [f64; 3],
    /// Physical memory, bytes.
    pub memory_total_bytes: u64,
    /// Memory available to new work without swapping (`MemAvailable`), bytes.
    pub memory_available_bytes: u64,
    /// The filesystem holding the directory asked about: its size and the bytes left to an
    /// unprivileged writer (`None` where it cannot be read).
    pub disk_total_bytes: Option<u64>,
    /// See `disk_total_bytes`.
    pub disk_available_bytes: Option<u64>,
}

/// Reads the machine's resources and the filesystem of `dir`; `None` without `/proc`.
pub fn host(dir: &std::path::Path) -> Option<HostStats> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| kib_field(&meminfo, key);
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut load = [0.0; 3];
    for (slot, v) in load.iter_mut().zip(loadavg.split_whitespace()) {
        *slot = v.parse().unwrap_or(0.0);
    }
    let disk = rustix::fs::statvfs(dir).ok();
    Some(HostStats {
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        load,
        memory_total_bytes: kib("MemTotal:")?,
        memory_available_bytes: kib("MemAvailable:").unwrap_or(0),
        disk_total_bytes: disk.as_ref().map(|d| d.f_blocks * d.f_frsize),
        disk_available_bytes: disk.as_ref().map(|d| d.f_bavail * d.f_frsize),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_reads_as_a_machine() {
        let Some(h) = super::host(std::path::Path::new(".")) else {
            return; // no /proc here
        };
        assert!(h.cpus >= 1 && h.memory_total_bytes > 1 << 26, "{h:?}");
        assert!(h.memory_available_bytes <= h.memory_total_bytes, "{h:?}");
        let (total, free) = (h.disk_total_bytes.unwrap(), h.disk_available_bytes.unwrap());
        assert!(total > 0 && free <= total, "{h:?}");
    }

    #[test]
    fn this_process_reads_as_itself() {
        let Some(p) = super::read() else {
            return; // no /proc here
        };
        let before = p.open_fds;
        let _f = std::fs::File::open("/proc/self/status").unwrap();
        let after = super::read().unwrap();
        assert!(after.open_fds > before, "{before} -> {}", after.open_fds);
        assert!(p.resident_memory_bytes > 1 << 20, "{p:?}");
        assert!(p.virtual_memory_bytes >= p.resident_memory_bytes, "{p:?}");
        assert!(p.threads >= 1 && p.max_fds >= p.open_fds, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds > now - 3600.0 && p.start_time_seconds <= now + 1.0,
            "{p:?}"
        );
        assert!(p.cpu_seconds >= 0.0 && p.cpu_seconds < 3600.0, "{p:?}");
    }
}
