//! Aligned columns (kubectl's layout: a header in capitals, two spaces between columns) and
//! the short ages and durations kubectl prints.

use std::io::Write;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Lays out rows under a header; every row has the header's number of cells.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(2);
    let line = |cells: &mut dyn Iterator<Item = &str>| cells.collect::<Vec<_>>().join("\t");
    let _ = writeln!(tw, "{}", line(&mut header.iter().copied()));
    for row in rows {
        // A tab inside a cell would shift every column after it.
        let _ = writeln!(tw, "{}", line(&mut row.iter().map(|c| c.as_str())).replace(['\n', '\r'], " "));
    }
    let bytes = tw.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// A duration as kubectl prints ages: `45s`, `3m12s`, `2h5m`, `3d4h`.
pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..600 => format!("{}m{}s", s / 60, s % 60),
        600..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How long ago `t` was at `now` (`-` when unknown).
pub fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| "-".into(), |t| short(crate::core::time::since(now, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_cells_stay_on_one_line() {
        let out = render(
            &["NAME", "PHASE"],
            &[vec!["a".into(), "Detected".into()], vec!["longer-name".into(), "x\ny".into()]],
        );
        assert_eq!(out, "NAME         PHASE\na            Detected\nlonger-name  x y\n");
    }

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [(5, "5s"), (59, "59s"), (72, "1m12s"), (900, "15m"), (7500, "2h5m"), (90_000, "1d1h")] {
            assert_eq!(short(Duration::from_secs(secs)), want);
        }
    }
}
