//! How figures and targets are printed, and what the header says about the machine.
//!
//! Every figure is one line, `name: value unit (detail)`, printed as soon as it is
//! measured; the summary prints one `target ...: value ok|MISSED` line per target.

use std::fmt;

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Stable name, e.g. `scan_cold`.
    pub name: &'static str,
    /// The value in `unit`.
    pub value: f64,
    /// `ms`, `s`, `/s`, `x`, `MiB`, `requests`.
    pub unit: &'static str,
    /// How it was measured and on what.
    pub detail: String,
}

impl Figure {
    /// A figure; see [`Figure::print`].
    pub fn new(name: &'static str, value: f64, unit: &'static str, detail: String) -> Self {
        Figure {
            name,
            value,
            unit,
            detail,
        }
    }

    /// Prints the figure's line now.
    pub fn print(&self) {
        println!("{self}");
    }
}

/// Ratios and seconds get two decimals, rates and counts none, everything else one.
fn value(value: f64, unit: &str) -> String {
    match unit {
        "x" | "s" => format!("{value:.2}"),
        "/s" | "requests" => format!("{value:.0}"),
        _ => format!("{value:.1}"),
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {} ({})",
            self.name,
            value(self.value, self.unit),
            self.unit,
            self.detail
        )
    }
}

/// Which way a target points.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// The value must be at most the limit.
    AtMost,
    /// The value must be below the limit.
    Below,
    /// The value must be at least the limit.
    AtLeast,
}

/// A performance target of design.md §10.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The figure it applies to.
    pub figure: &'static str,
    /// Which way.
    pub bound: Bound,
    /// The limit, in the figure's unit.
    pub limit: f64,
    /// The limit as printed.
    pub shown: &'static str,
}

/// The targets, in the order they are summarised.
pub const TARGETS: [Target; 14] = [
    Target {
        figure: "scan_ratio",
        bound: Bound::AtMost,
        limit: 2.0,
        shown: "2.0",
    },
    Target {
        figure: "rescan_ratio",
        bound: Bound::AtMost,
        limit: 0.25,
        shown: "0.25",
    },
    Target {
        figure: "enqueue",
        bound: Bound::AtLeast,
        limit: 5_000.0,
        shown: "5000",
    },
    Target {
        figure: "drain_coalesced",
        bound: Bound::AtLeast,
        limit: 50_000.0,
        shown: "50000",
    },
    Target {
        figure: "drain_coalesced_20ms",
        bound: Bound::AtMost,
        limit: 3.0,
        shown: "3",
    },
    Target {
        figure: "durable_while_hung",
        bound: Bound::AtMost,
        limit: 100.0,
        shown: "100",
    },
    Target {
        figure: "peak_rss",
        bound: Bound::Below,
        limit: 64.0,
        shown: "64",
    },
    Target {
        figure: "resent_after_kill",
        bound: Bound::AtMost,
        limit: 1.0,
        shown: "1",
    },
    Target {
        figure: "resent_after_sigterm",
        bound: Bound::AtMost,
        limit: 0.0,
        shown: "0",
    },
    Target {
        figure: "push_new_rss",
        bound: Bound::Below,
        limit: 64.0,
        shown: "64",
    },
    Target {
        figure: "push_nothing_new_rss",
        bound: Bound::Below,
        limit: 64.0,
        shown: "64",
    },
    Target {
        figure: "push_nothing_new_ratio",
        bound: Bound::AtMost,
        limit: 1.5,
        shown: "1.5",
    },
    Target {
        figure: "db_delivered",
        bound: Bound::AtMost,
        limit: 8.0,
        shown: "8",
    },
    Target {
        figure: "fleet_recovery",
        bound: Bound::AtMost,
        limit: 3.0,
        shown: "3",
    },
];

/// Prints one summary line per target; a missed target is reported, never an error.
pub fn print_summary(figures: &[Figure]) {
    for target in TARGETS {
        let (limit, shown) = (target.limit, target.shown);
        let op = match target.bound {
            Bound::AtMost => "<=",
            Bound::Below => "<",
            Bound::AtLeast => ">=",
        };
        let Some(figure) = figures.iter().find(|f| f.name == target.figure) else {
            println!("target {} {op} {shown}: not measured", target.figure);
            continue;
        };
        let met = match target.bound {
            Bound::AtMost => figure.value <= limit,
            Bound::Below => figure.value < limit,
            Bound::AtLeast => figure.value >= limit,
        };
        let unit = match figure.unit {
            "x" => String::new(),
            unit => format!(" {unit}"),
        };
        println!(
            "target {} {op} {shown}{unit}: {}{unit} {}",
            target.figure,
            value(figure.value, figure.unit),
            if met { "ok" } else { "MISSED" }
        );
    }
}

/// `nproc, CPU model` of this machine.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} cpus, {model}")
}

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`).
pub fn proc_status_kib(field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("peak RSS needs /proc/self/status (Linux): {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/self/status"))
}

/// `/proc/loadavg`'s three load averages, or `unknown`: other work on the machine
/// skews every figure, so the header says how busy it was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_line_is_stable() {
        let f = Figure::new("scan_cold", 412.345, "ms", "10 workspaces".into());
        assert_eq!(f.to_string(), "scan_cold: 412.3 ms (10 workspaces)");
        let r = Figure::new("scan_ratio", 1.414, "x", "a / b".into());
        assert_eq!(r.to_string(), "scan_ratio: 1.41 x (a / b)");
    }

    #[test]
    fn vmhwm_is_readable_here() {
        assert!(proc_status_kib("VmHWM").unwrap() > 0);
    }
}
