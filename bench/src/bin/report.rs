//! `launcher-bench-report`: records the rows of a benchmark run and prints them as a table and
//! `results.json`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use bench::report::{Goal, Row, parse_rows, results_json, table};
use clap::{Parser, Subcommand};

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
        #[arg(long)]
        rows: PathBuf,
        #[arg(long)]
        bench: String,
        #[arg(long)]
        figure: String,
        #[arg(long)]
        value: f64,
        #[arg(long, default_value = "")]
        unit: String,
        /// The peer's name, e.g. chronyd.
        #[arg(long)]
        peer: Option<String>,
        #[arg(long, requires = "peer")]
        peer_value: Option<f64>,
        /// ratio>=X, ratio<=X, <X or >=X.
        #[arg(long)]
        goal: Option<Goal>,
        #[arg(long)]
        note: Option<String>,
    },
    /// Append a figure that was not measured, and why.
    Skip {
        #[arg(long)]
        rows: PathBuf,
        #[arg(long)]
        bench: String,
        #[arg(long)]
        figure: String,
        #[arg(long)]
        goal: Option<Goal>,
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
            rows,
            bench,
            figure,
            value,
            unit,
            peer,
            peer_value,
            goal,
            note,
        } => {
            let row = Row {
                bench,
                figure,
                value: Some(value),
                unit,
                peer,
                peer_value,
                goal,
                not_run: None,
                note,
            };
            append(&rows, &row)
        }
        Command::Skip {
            rows,
            bench,
            figure,
            goal,
            reason,
        } => {
            let row = Row {
                bench,
                figure,
                goal,
                not_run: Some(reason),
                ..Row::default()
            };
            append(&rows, &row)
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
