//! `launcher-bench-report`: records the rows of a benchmark run and prints them as a table and
//! `results.json`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use bench::report::{Goal, Row, parse_rows, results_json, table};
use clap::{Args, Parser, Subcommand};

/// Rows are JSON lines in a file that `ci/bench` grows with `add` and `skip`; `print` shows the
/// table (figure, peer's figure, ratio, goal, verdict) and writes the JSON results.
#[derive(Debug, Parser)]
#[command(name = "launcher-bench-report", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append a measured figure.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        value: f64,
        #[arg(long, default_value = "")]
        unit: String,
        /// The peer's name, e.g. chronyd.
        #[arg(long)]
        peer: Option<String>,
        #[arg(long, requires = "peer")]
        peer_value: Option<f64>,
        #[arg(long)]
        note: Option<String>,
    },
    /// Append a figure that was not measured, and why.
    Skip {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: String,
    },
    /// Print the table and write the JSON results.
    Print {
        #[arg(long)]
        rows: PathBuf,
        #[arg(long)]
        json: PathBuf,
        /// What the figures were measured on, e.g. "2 cores, load 11".
        #[arg(long, default_value = "")]
        machine: String,
    },
}

/// Which rows file a figure goes to, the figure, and the goal it is held to: what `add` and
/// `skip` both name.
#[derive(Debug, Args)]
struct Target {
    #[arg(long)]
    rows: PathBuf,
    #[arg(long)]
    bench: String,
    #[arg(long)]
    figure: String,
    /// ratio>=X, ratio<=X, <X or >=X.
    #[arg(long)]
    goal: Option<Goal>,
}

impl Target {
    /// A row that names the figure and nothing else yet.
    fn row(&self) -> Row {
        Row {
            bench: self.bench.clone(),
            figure: self.figure.clone(),
            goal: self.goal,
            ..Row::default()
        }
    }
}

fn append(path: &PathBuf, row: &Row) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(row)?)
        .with_context(|| format!("appending to {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Add {
            target,
            value,
            unit,
            peer,
            peer_value,
            note,
        } => {
            let row = Row {
                value: Some(value),
                unit,
                peer,
                peer_value,
                note,
                ..target.row()
            };
            append(&target.rows, &row)
        }
        Command::Skip { target, reason } => {
            let row = Row {
                not_run: Some(reason),
                ..target.row()
            };
            append(&target.rows, &row)
        }
        Command::Print {
            rows,
            json,
            machine,
        } => {
            let text = std::fs::read_to_string(&rows)
                .with_context(|| format!("reading {}", rows.display()))?;
            let parsed =
                parse_rows(&text).with_context(|| format!("parsing {}", rows.display()))?;
            print!("{}", table(&parsed));
            let doc = serde_json::to_string_pretty(&results_json(&machine, &parsed))?;
            std::fs::write(&json, doc + "\n").with_context(|| format!("writing {}", json.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn add_and_skip_share_the_target_arguments() {
        let target = ["--rows", "r.jsonl", "--bench", "ntp", "--figure", "offset"];
        let add = Cli::parse_from(
            [
                &["report", "add"][..],
                &target,
                &["--value", "2", "--goal", "<3"],
            ]
            .concat(),
        );
        let Command::Add {
            target: t, value, ..
        } = add.command
        else {
            panic!("{add:?}")
        };
        assert_eq!(
            (t.rows, t.bench.as_str(), value),
            ("r.jsonl".into(), "ntp", 2.0)
        );
        let skip =
            Cli::parse_from([&["report", "skip"][..], &target, &["--reason", "no root"]].concat());
        let Command::Skip { target: t, reason } = skip.command else {
            panic!("{skip:?}")
        };
        let row = Row {
            not_run: Some(reason),
            ..t.row()
        };
        assert_eq!(
            (row.figure.as_str(), row.not_run.as_deref()),
            ("offset", Some("no root"))
        );
        assert_eq!(row.value, None);
    }
}
