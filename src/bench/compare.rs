//! The side-by-side view of a run that measured several servers (`--peer
//! all`): one row per figure, one column per server, and the ratio of the
//! first server (Switchboard) to the second, both as a table and as JSON.

use serde_json::{json, Value};

use super::peer::Peer;
use super::report::{human, Figure};

/// A figure measured on each server (`None` where that server's scenario
/// failed or does not apply to it).
struct Row<'a> {
    name: &'a str,
    unit: &'static str,
    scenario: &'static str,
    values: Vec<Option<&'a Figure>>,
}

/// Groups `figures` by name, in the order they were first measured.
fn rows<'a>(peers: &[Peer], figures: &'a [(Peer, Figure)]) -> Vec<Row<'a>> {
    let mut rows: Vec<Row<'a>> = Vec::new();
    for (peer, f) in figures {
        let Some(column) = peers.iter().position(|p| p == peer) else {
            continue;
        };
        let at = match rows.iter().position(|r| r.name == f.name) {
            Some(at) => at,
            None => {
                rows.push(Row {
                    name: &f.name,
                    unit: f.unit,
                    scenario: f.scenario,
                    values: vec![None; peers.len()],
                });
                rows.len() - 1
            }
        };
        rows[at].values[column] = Some(f);
    }
    rows
}

/// First server's value divided by the second's, when both exist and the
/// second is not zero. Shares of a core (busy, stolen) get none: their
/// ratio says nothing about either server.
fn ratio(row: &Row<'_>) -> Option<f64> {
    if row.unit == "%" {
        return None;
    }
    match (row.values.first()?, row.values.get(1)?) {
        (Some(a), Some(b)) if b.value != 0.0 => Some(a.value / b.value),
        _ => None,
    }
}

/// The side-by-side table: figure, each server's value, the ratio, the
/// target and each server's verdict against it. A missing value reads
/// `n/a` when its scenario does not apply to that server (`skipped`: the
/// SSE and long-polling scenarios on Socket.IO), `failed` otherwise.
pub fn table(peers: &[Peer], figures: &[(Peer, Figure)], skipped: &[(Peer, &str)]) -> String {
    let ratio_header = match peers {
        [a, b, ..] => format!("{} / {}", a.name(), b.name()),
        _ => "ratio".to_owned(),
    };
    let mut header = vec!["figure".to_owned()];
    header.extend(peers.iter().map(|p| p.name().to_owned()));
    header.extend([ratio_header, "target".to_owned(), "result".to_owned()]);
    let mut lines: Vec<Vec<String>> = vec![header];
    for row in rows(peers, figures) {
        let mut line = vec![row.name.to_owned()];
        for (peer, v) in peers.iter().zip(&row.values) {
            let missing = if skipped.contains(&(*peer, row.scenario)) {
                "n/a"
            } else {
                "failed"
            };
            line.push(v.map_or_else(
                || missing.to_owned(),
                |f| format!("{} {}", human(f.value), row.unit),
            ));
        }
        line.push(ratio(&row).map_or_else(|| "-".to_owned(), |r| format!("{}x", human(r))));
        let target = row.values.iter().flatten().find_map(|f| f.target);
        line.push(target.map_or_else(|| "-".to_owned(), |t| t.describe(row.unit)));
        let verdicts: Vec<&str> = row
            .values
            .iter()
            .map(|v| v.map_or("-", Figure::verdict))
            .collect();
        line.push(match target {
            Some(_) => verdicts.join(" / "),
            None => "-".to_owned(),
        });
        lines.push(line);
    }
    render(&lines)
}

/// Left-aligns the first and last two columns, right-aligns the numbers.
fn render(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c == 0 || c + 2 >= columns {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (columns - 1)));
            out.push('\n');
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// The comparison as JSON: per figure, each server's value and the ratio.
pub fn to_json(peers: &[Peer], figures: &[(Peer, Figure)]) -> Value {
    let rows = rows(peers, figures);
    let ratio_of = match peers {
        [a, b, ..] => format!("{} / {}", a.key(), b.key()),
        _ => String::new(),
    };
    let list: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut v = json!({ "name": row.name, "unit": row.unit, "ratio": ratio(row) });
            for (peer, f) in peers.iter().zip(&row.values) {
                v[peer.key()] = json!(f.map(|f| f.value));
            }
            v
        })
        .collect();
    json!({ "ratio_of": ratio_of, "figures": list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Target;

    #[test]
    fn side_by_side() {
        let peers = [Peer::Switchboard, Peer::SocketIo];
        let target = Some(Target::AtLeast(500_000.0));
        let figures = vec![
            (
                Peer::Switchboard,
                Figure::new("rate".into(), 1_000_000.0, "/s", target),
            ),
            (
                Peer::SocketIo,
                Figure::new("rate".into(), 250_000.0, "/s", target),
            ),
            (
                Peer::Switchboard,
                Figure::new("only one".into(), 3.0, "KiB", None),
            ),
        ];
        let t = table(&peers, &figures, &[]);
        assert!(t.contains("Switchboard / Socket.IO"), "{t}");
        assert!(t.contains("4.00x"), "{t}");
        assert!(t.contains("PASS / MISS"), "{t}");
        assert!(t.contains("failed"), "{t}");
        let mut sse = Figure::new("sse only".into(), 1.0, "KiB", None);
        sse.scenario = "memory_sse";
        let figures2 = vec![(Peer::Switchboard, sse)];
        let t = table(&peers, &figures2, &[(Peer::SocketIo, "memory_sse")]);
        assert!(t.contains("n/a") && !t.contains("failed"), "{t}");
        let j = to_json(&peers, &figures);
        assert_eq!(j["figures"][0]["ratio"], 4.0);
        assert_eq!(j["figures"][0]["socketio"], 250_000.0);
        assert!(j["figures"][1]["socketio"].is_null());
    }
}
