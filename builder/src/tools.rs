//! The external tools a build runs, checked for before anything is written, and a runner that
//! reports a failing command with its stderr.

use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("missing tool(s): {0} (install the Debian packages named, e.g. with ci/deps)")]
    Missing(String),
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// `(tool, Debian package)` for everything a build may run.
pub fn needed(mmdebstrap: bool, disk_or_iso: bool, iso: bool) -> Vec<(&'static str, &'static str)> {
    // objcopy also strips the debug sections of the project's own binaries.
    let mut tools = vec![("tar", "tar"), ("objcopy", "binutils")];
    if mmdebstrap {
        tools.push(("mmdebstrap", "mmdebstrap"));
    }
    if disk_or_iso {
        tools.extend([
            ("objdump", "binutils"),
            ("mkfs.fat", "dosfstools"),
            ("mmd", "mtools"),
            ("mcopy", "mtools"),
            ("mke2fs", "e2fsprogs"),
            ("debugfs", "e2fsprogs"),
            ("sfdisk", "fdisk"),
        ]);
    }
    if iso {
        tools.push(("xorriso", "xorriso"));
    }
    tools
}

/// Finds `tool` on PATH, and only there: the build runs its tools by name, so the check looks
/// exactly where the exec will (the tests' `testkit::which` also looks in the sbin directories
/// because they spawn the daemons they find by full path).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|dir| PathBuf::from(dir).join(tool))
        .find(|candidate| candidate.is_file())
}

/// Fails naming every missing tool and its package.
pub fn require(tools: &[(&str, &str)]) -> Result<(), ToolError> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(tool, pkg)| format!("{tool} (package {pkg})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ToolError::Missing(missing.join(", ")))
    }
}

/// Runs `cmd`, returning its stdout; a non-zero exit is an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>, ToolError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let command = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running");
    let out = cmd
        .output()
        .map_err(|source| ToolError::Spawn { program, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(ToolError::Failed {
            command: if command.len() > 300 {
                format!("{}…", &command[..300])
            } else {
                command
            },
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(out.stdout)
}
