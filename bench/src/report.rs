//! The rows of a benchmark run: each figure, its peer's, the ratio, the goal and whether it was
//! met; rendered as a table and as `results.json`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "bound", rename_all = "snake_case")]
pub enum Goal {
    /// figure / peer's figure ≥ bound.
    RatioAtLeast(f64),
    /// figure / peer's figure ≤ bound.
    RatioAtMost(f64),
    /// figure < bound (absolute, in the figure's unit).
    Below(f64),
    /// figure ≥ bound (absolute).
    AtLeast(f64),
    /// figure ≤ bound (absolute).
    AtMost(f64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("goal {0:?} is not one of ratio>=X, ratio<=X, <X, <=X, >=X")]
pub struct GoalError(String);

impl std::str::FromStr for Goal {
    type Err = GoalError;

    fn from_str(text: &str) -> Result<Goal, GoalError> {
        let t = text.replace(' ', "");
        let num = |s: &str| s.parse::<f64>().map_err(|_| GoalError(text.to_string()));
        if let Some(x) = t.strip_prefix("ratio>=") {
            Ok(Goal::RatioAtLeast(num(x)?))
        } else if let Some(x) = t.strip_prefix("ratio<=") {
            Ok(Goal::RatioAtMost(num(x)?))
        } else if let Some(x) = t.strip_prefix(">=") {
            Ok(Goal::AtLeast(num(x)?))
        } else if let Some(x) = t.strip_prefix("<=") {
            Ok(Goal::AtMost(num(x)?))
        } else if let Some(x) = t.strip_prefix('<') {
            Ok(Goal::Below(num(x)?))
        } else {
            Err(GoalError(text.to_string()))
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::RatioAtLeast(x) => write!(f, "ratio >= {x}"),
            Goal::RatioAtMost(x) => write!(f, "ratio <= {x}"),
            Goal::Below(x) => write!(f, "< {x}"),
            Goal::AtLeast(x) => write!(f, ">= {x}"),
            Goal::AtMost(x) => write!(f, "<= {x}"),
        }
    }
}

/// One line of the table, as `ci/bench` records it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Row {
    pub bench: String,
    pub figure: String,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub peer: Option<String>,
    #[serde(default)]
    pub peer_value: Option<f64>,
    #[serde(default)]
    pub goal: Option<Goal>,
    /// Set when the figure was not measured: why.
    #[serde(default)]
    pub not_run: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Whether a row met its goal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    NotMet,
    /// Not measured, with the reason.
    NotRun(String),
    /// A figure with no goal of its own (context for another row).
    Info,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Met => f.write_str("met"),
            Verdict::NotMet => f.write_str("NOT MET"),
            Verdict::NotRun(why) => write!(f, "not run: {why}"),
            Verdict::Info => f.write_str("-"),
        }
    }
}

impl Row {
    /// figure / peer's figure, when both were measured and the peer's is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.value, self.peer_value) {
            (Some(v), Some(p)) if p != 0.0 => Some(v / p),
            _ => None,
        }
    }

    pub fn verdict(&self) -> Verdict {
        if let Some(why) = &self.not_run {
            return Verdict::NotRun(why.clone());
        }
        let Some(goal) = self.goal else {
            return Verdict::Info;
        };
        let met = match (goal, self.value, self.ratio()) {
            (Goal::RatioAtLeast(x), _, Some(r)) => r >= x,
            (Goal::RatioAtMost(x), _, Some(r)) => r <= x,
            (Goal::Below(x), Some(v), _) => v < x,
            (Goal::AtLeast(x), Some(v), _) => v >= x,
            (Goal::AtMost(x), Some(v), _) => v <= x,
            _ => return Verdict::NotRun("figure or peer's figure missing".into()),
        };
        if met { Verdict::Met } else { Verdict::NotMet }
    }
}

/// A row with its computed ratio and verdict, as written to `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct JudgedRow<'a> {
    #[serde(flatten)]
    pub row: &'a Row,
    pub ratio: Option<f64>,
    pub verdict: Verdict,
}

/// Reads rows, one JSON object per line; blank lines are skipped.
pub fn parse_rows(text: &str) -> Result<Vec<Row>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

/// A number with three significant figures or so, for the table.
pub fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.01 || a == 0.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.2e}")
    }
}

fn cells(row: &Row) -> [String; 7] {
    let with_unit = |v: Option<f64>| match v {
        Some(v) if row.unit.is_empty() => short(v),
        Some(v) => format!("{} {}", short(v), row.unit),
        None => "-".into(),
    };
    let peer = match (&row.peer, row.peer_value) {
        (Some(name), v) => format!("{name}: {}", with_unit(v)),
        (None, _) => "-".into(),
    };
    let goal = row.goal.map_or("-".into(), |g| g.to_string());
    let ratio = row.ratio().map_or("-".into(), |r| format!("{r:.3}"));
    let mut verdict = row.verdict().to_string();
    if let Some(note) = &row.note {
        let _ = write!(verdict, " ({note})");
    }
    [
        row.bench.clone(),
        row.figure.clone(),
        with_unit(row.value),
        peer,
        ratio,
        goal,
        verdict,
    ]
}

/// The table `ci/bench` prints: aligned columns, one line per row.
pub fn table(rows: &[Row]) -> String {
    const HEAD: [&str; 7] = [
        "benchmark",
        "figure",
        "value",
        "peer",
        "ratio",
        "goal",
        "verdict",
    ];
    let body: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut widths = HEAD.map(str::len);
    for line in &body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head = HEAD.map(String::from);
    for line in std::iter::once(&head).chain(&body) {
        let padded: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 6 {
                    cell.clone()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The JSON document of a run: the machine it ran on and every judged row.
pub fn results_json(machine: &str, rows: &[Row]) -> serde_json::Value {
    let judged: Vec<JudgedRow> = rows
        .iter()
        .map(|row| JudgedRow {
            row,
            ratio: row.ratio(),
            verdict: row.verdict(),
        })
        .collect();
    serde_json::json!({ "machine": machine, "rows": judged })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: Option<f64>, peer: Option<f64>, goal: &str) -> Row {
        Row {
            bench: "b".into(),
            figure: "f".into(),
            value,
            peer: peer.map(|_| "peer".into()),
            peer_value: peer,
            goal: Some(goal.parse().unwrap()),
            ..Row::default()
        }
    }

    #[test]
    fn goals_parse_and_bad_ones_are_refused() {
        assert_eq!("ratio>=0.95".parse(), Ok(Goal::RatioAtLeast(0.95)));
        assert_eq!("ratio <= 1.5".parse(), Ok(Goal::RatioAtMost(1.5)));
        assert_eq!("<= 2".parse(), Ok(Goal::AtMost(2.0)));
        assert_eq!("<250".parse(), Ok(Goal::Below(250.0)));
        assert_eq!(">=1".parse(), Ok(Goal::AtLeast(1.0)));
        for bad in ["", "ratio>x", "=5", "ratio>=", "fast"] {
            assert_eq!(
                bad.parse::<Goal>(),
                Err(GoalError(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn verdicts_follow_goals() {
        assert_eq!(
            row(Some(96.0), Some(100.0), "ratio>=0.95").verdict(),
            Verdict::Met
        );
        assert_eq!(
            row(Some(94.0), Some(100.0), "ratio>=0.95").verdict(),
            Verdict::NotMet
        );
        assert_eq!(
            row(Some(150.0), Some(100.0), "ratio<=1.5").verdict(),
            Verdict::Met
        );
        assert_eq!(
            row(Some(151.0), Some(100.0), "ratio<=1.5").verdict(),
            Verdict::NotMet
        );
        assert_eq!(row(Some(249.0), None, "<250").verdict(), Verdict::Met);
        assert_eq!(row(Some(250.0), None, "<250").verdict(), Verdict::NotMet);
        assert_eq!(row(Some(2.0), None, "<=2").verdict(), Verdict::Met);
        assert_eq!(row(Some(2.01), None, "<=2").verdict(), Verdict::NotMet);
        assert!(matches!(
            row(Some(1.0), Some(0.0), "ratio>=1").verdict(),
            Verdict::NotRun(_)
        ));
        let skipped = Row {
            not_run: Some("no builder".into()),
            ..row(None, None, "ratio<=1.5")
        };
        assert_eq!(skipped.verdict(), Verdict::NotRun("no builder".into()));
        let info = Row {
            goal: None,
            ..row(Some(1.0), None, "<1")
        };
        assert_eq!(info.verdict(), Verdict::Info);
    }

    #[test]
    fn rows_round_trip_through_lines_and_render() {
        let rows = vec![
            row(Some(1234.5), Some(1000.0), "ratio>=1.0"),
            Row {
                not_run: Some("launcher-lab absent".into()),
                ..row(None, None, "<1")
            },
        ];
        let text: String = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n\n")
            .collect();
        let back = parse_rows(&text).unwrap();
        assert_eq!(back, rows);
        let t = table(&back);
        assert!(t.lines().next().unwrap().starts_with("benchmark"), "{t}");
        assert!(t.contains("1.23"), "{t}");
        assert!(t.contains("not run: launcher-lab absent"), "{t}");
        let json = results_json("2 cores", &back);
        assert_eq!(json["rows"][0]["verdict"], "met");
        assert_eq!(json["rows"][1]["verdict"]["not_run"], "launcher-lab absent");
        assert!(parse_rows("{not json").is_err());
    }
}
