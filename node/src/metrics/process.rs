//! The standard `process_*` series of Prometheus clients (CPU seconds,
//! resident and virtual memory, open and maximum file descriptors, start
//! time), read from `/proc/self` at each scrape. Where there is no `/proc`
//! (not Linux) the series are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::path::{Path, PathBuf};

/// Clock ticks per second and page size when the auxiliary vector does not
/// say (the values of every Linux architecture Exitnet is built for).
const DEFAULT_CLOCK_TICKS: u64 = 100;
const DEFAULT_PAGE_SIZE: u64 = 4096;

/// One reading of the process's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: Option<u64>,
    /// The soft limit; `None` when unlimited or unreadable.
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Reads `/proc/self` (the directory is a parameter for the tests).
#[derive(Debug, Clone)]
pub struct ProcessCollector {
    proc_self: PathBuf,
    proc_stat: PathBuf,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self {
            proc_self: PathBuf::from("/proc/self"),
            proc_stat: PathBuf::from("/proc/stat"),
        }
    }
}

impl ProcessCollector {
    /// The process's figures now; `None` if `/proc/self/stat` cannot be read.
    pub fn read(&self) -> Option<ProcessStats> {
        let stat = std::fs::read_to_string(self.proc_self.join("stat")).ok()?;
        let fields = StatFields::parse(&stat)?;
        let (ticks, page_size) = std::fs::read(self.proc_self.join("auxv"))
            .map(|a| auxv_ticks_and_page_size(&a))
            .unwrap_or((None, None));
        let ticks = ticks.filter(|t| *t > 0).unwrap_or(DEFAULT_CLOCK_TICKS) as f64;
        let page_size = page_size.filter(|p| *p > 0).unwrap_or(DEFAULT_PAGE_SIZE);
        let boot_time = std::fs::read_to_string(&self.proc_stat)
            .ok()
            .and_then(|s| boot_time(&s));
        Some(ProcessStats {
            cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
            resident_bytes: fields.rss_pages.saturating_mul(page_size),
            virtual_bytes: fields.vsize,
            open_fds: count_entries(&self.proc_self.join("fd")),
            max_fds: std::fs::read_to_string(self.proc_self.join("limits"))
                .ok()
                .and_then(|l| max_open_files(&l)),
            start_time_seconds: boot_time.map(|b| b as f64 + fields.start_ticks as f64 / ticks),
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            s.resident_bytes as f64,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            s.virtual_bytes as f64,
        )?;
        if let Some(n) = s.open_fds {
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                n as f64,
            )?;
        }
        if let Some(n) = s.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                n as f64,
            )?;
        }
        if let Some(t) = s.start_time_seconds {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                t,
            )?;
        }
        Ok(())
    }
}

/// The fields of `/proc/self/stat` that are used.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

impl StatFields {
    /// `pid (comm) state ppid …`: the command may hold spaces and
    /// parentheses, so the fields are counted from the last `)`.
    fn parse(stat: &str) -> Option<Self> {
        let rest = &stat[stat.rfind(')')? + 1..];
        // rest[0] is field 3 (state); field n is rest[n - 3].
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: n(14)?,
            stime: n(15)?,
            start_ticks: n(22)?,
            vsize: n(23)?,
            rss_pages: n(24)?,
        })
    }
}

/// `AT_CLKTCK` and `AT_PAGESZ` from the auxiliary vector (pairs of native
/// machine words).
fn auxv_ticks_and_page_size(auxv: &[u8]) -> (Option<u64>, Option<u64>) {
    const AT_PAGESZ: u64 = 6;
    const AT_CLKTCK: u64 = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = b.try_into().ok()?;
        Some(usize::from_ne_bytes(bytes) as u64)
    };
    let (mut ticks, mut page) = (None, None);
    for pair in auxv.chunks_exact(2 * WORD) {
        let (Some(key), Some(value)) = (word(&pair[..WORD]), word(&pair[WORD..])) else {
            break;
        };
        match key {
            0 => break,
            AT_CLKTCK => ticks = Some(value),
            AT_PAGESZ => page = Some(value),
            _ => {}
        }
    }
    (ticks, page)
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn count_entries(dir: &Path) -> Option<u64> {
    Some(std::fs::read_dir(dir).ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (exitnet (node) x) S 1 4242 4242 0 -1 4194560 2519 0 0 0 \
        150 75 0 0 20 0 12 0 360000 1234567168 5000 18446744073709551615 1 1 0 0 0 0 0 4096 \
        17922 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        assert_eq!(
            StatFields::parse(STAT),
            Some(StatFields {
                utime: 150,
                stime: 75,
                start_ticks: 360_000,
                vsize: 1_234_567_168,
                rss_pages: 5000,
            })
        );
        assert_eq!(StatFields::parse("4242 (x) S 1 2"), None);
        assert_eq!(StatFields::parse("no parenthesis"), None);
    }

    #[test]
    fn limits_boot_time_and_auxv() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1764700000\nprocesses 9\n"),
            Some(1_764_700_000)
        );
        let mut auxv = Vec::new();
        for (k, v) in [(33usize, 7usize), (6, 16384), (17, 250), (0, 0), (17, 1)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(auxv_ticks_and_page_size(&auxv), (Some(250), Some(16384)));
    }

    #[test]
    fn a_fake_proc_is_read_with_its_clock_and_page_size() {
        let dir = tempfile::tempdir().unwrap();
        let me = dir.path().join("self");
        std::fs::create_dir_all(me.join("fd")).unwrap();
        for fd in ["0", "1", "2"] {
            std::fs::write(me.join("fd").join(fd), "").unwrap();
        }
        std::fs::write(me.join("stat"), STAT).unwrap();
        std::fs::write(
            me.join("limits"),
            "Max open files            4096                 4096                 files\n",
        )
        .unwrap();
        let mut auxv = Vec::new();
        for (k, v) in [(17usize, 100usize), (6, 4096), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        std::fs::write(me.join("auxv"), auxv).unwrap();
        std::fs::write(dir.path().join("stat"), "btime 1764700000\n").unwrap();
        let c = ProcessCollector {
            proc_self: me,
            proc_stat: dir.path().join("stat"),
        };
        assert_eq!(
            c.read(),
            Some(ProcessStats {
                cpu_seconds: 2.25,
                resident_bytes: 5000 * 4096,
                virtual_bytes: 1_234_567_168,
                open_fds: Some(3),
                max_fds: Some(4096),
                start_time_seconds: Some(1_764_703_600.0),
            })
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read() {
        let s = ProcessCollector::default().read().unwrap();
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        assert!(s.open_fds.unwrap() >= 3);
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = s.start_time_seconds.unwrap();
        // Started before now, and not before 2020.
        assert!(
            started <= now + 1.0 && started > 1_577_836_800.0,
            "{started}"
        );
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector::default()));
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
