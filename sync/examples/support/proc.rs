//! Helpers shared by the sync examples (`#[path]`-included): environment and /proc.

/// A non-empty environment variable.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// CPU seconds (user + system, children included) of process `pid` and its live
/// children, from /proc (0 where it cannot be read).
pub fn tree_cpu(pid: &str) -> f64 {
    let ticks = |stat: &str, fields: &[usize]| -> u64 {
        // Fields after the ")" that closes the command name; utime is field 14.
        let rest = stat.rsplit_once(')').map_or("", |r| r.1);
        let f: Vec<&str> = rest.split_whitespace().collect();
        fields
            .iter()
            .filter_map(|i| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()))
            .sum()
    };
    let mut total = 0;
    if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        total += ticks(&st, &[14, 15, 16, 17]);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(st) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let rest = st.rsplit_once(')').map_or("", |r| r.1);
            if rest.split_whitespace().nth(1) == Some(pid) {
                total += ticks(&st, &[14, 15]);
            }
        }
    }
    total as f64 / 100.0
}
