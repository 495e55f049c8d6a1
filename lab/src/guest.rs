//! Commands run inside a lab VM through the QEMU guest agent: each VM has a virtio-serial port
//! named `org.qemu.guest_agent.0` whose host end is the unix socket `RUN_DIR/vm-N.qga`, and the
//! image's `qemu-guest-agent` answers on it. This is how a test does something *on* a host
//! without touching the machine (stop one process, read one file); the hosts offer no other
//! way in.
//!
//! The protocol is QMP's JSON, one object per line: `guest-sync-delimited` first (the agent
//! answers after a `0xFF` byte, so whatever an earlier client left unread is skipped), then
//! `guest-exec` with `capture-output`, then `guest-exec-status` until the process exited.

use anyhow::{Context, bail};
use base64::Engine;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// What a command run in the guest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `guest-exec-status`'s answer.
#[derive(Debug, Deserialize)]
struct Status {
    exited: bool,
    #[serde(default)]
    exitcode: Option<i32>,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(rename = "out-data", default)]
    out: Option<String>,
    #[serde(rename = "err-data", default)]
    err: Option<String>,
}

/// The request that starts `argv` in the guest with its output captured.
pub fn exec_request(argv: &[String]) -> anyhow::Result<serde_json::Value> {
    let Some((path, args)) = argv.split_first() else {
        bail!("no command given");
    };
    Ok(serde_json::json!({
        "execute": "guest-exec",
        "arguments": { "path": path, "arg": args, "capture-output": true }
    }))
}

/// The `return` of one agent answer, or the agent's error as text.
fn returned(line: &str) -> anyhow::Result<serde_json::Value> {
    let mut answer: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("the guest agent answered {line:?}"))?;
    if let Some(err) = answer.get("error") {
        let desc = err.get("desc").and_then(|d| d.as_str()).unwrap_or("?");
        bail!("the guest agent refused: {desc}");
    }
    answer
        .get_mut("return")
        .map(serde_json::Value::take)
        .with_context(|| format!("the guest agent answered {line:?}"))
}

/// A finished `guest-exec-status` as an [`Output`]; `None` while the process runs.
pub fn finished(status: serde_json::Value) -> anyhow::Result<Option<Output>> {
    let status: Status = serde_json::from_value(status).context("reading guest-exec-status")?;
    if !status.exited {
        return Ok(None);
    }
    let text = |data: Option<String>| -> anyhow::Result<String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.unwrap_or_default())
            .context("the guest agent's output is not base64")?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let code = match (status.exitcode, status.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    };
    Ok(Some(Output {
        code,
        stdout: text(status.out)?,
        stderr: text(status.err)?,
    }))
}

struct Agent {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Agent {
    fn connect(socket: &Path, timeout: Duration) -> anyhow::Result<Agent> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to the guest agent at {}", socket.display()))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut agent = Agent {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        agent.sync()?;
        Ok(agent)
    }

    fn send(&mut self, request: &serde_json::Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .context("writing to the guest agent")
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("no answer from the guest agent (is qemu-guest-agent running in the VM?)")?;
        if n == 0 {
            bail!("the guest agent closed the connection");
        }
        Ok(line)
    }

    /// Skips whatever is left in the channel up to the agent's `0xFF`, then checks the echo.
    fn sync(&mut self) -> anyhow::Result<()> {
        let id = u64::from(std::process::id()) << 16 | u64::from(rand_u16());
        self.send(&serde_json::json!({
            "execute": "guest-sync-delimited", "arguments": { "id": id }
        }))?;
        let mut byte = [0u8; 1];
        loop {
            self.reader.read_exact(&mut byte).context(
                "no answer from the guest agent (is qemu-guest-agent running in the VM?)",
            )?;
            if byte[0] == 0xFF {
                break;
            }
        }
        let echoed = returned(&self.line()?)?;
        if echoed.as_u64() != Some(id) {
            bail!("the guest agent echoed {echoed} to sync {id}");
        }
        Ok(())
    }

    fn call(&mut self, request: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.send(request)?;
        returned(&self.line()?)
    }
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (nanos >> 8) as u16
}

/// Runs `argv` in the guest whose agent listens on `socket` and waits up to `timeout` for it.
pub fn exec(socket: &Path, argv: &[String], timeout: Duration) -> anyhow::Result<Output> {
    let deadline = Instant::now() + timeout;
    let mut agent = Agent::connect(socket, timeout)?;
    let started = agent.call(&exec_request(argv)?)?;
    let pid = started
        .get("pid")
        .and_then(|p| p.as_i64())
        .with_context(|| format!("guest-exec answered {started}"))?;
    let status = serde_json::json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } });
    loop {
        if let Some(output) = finished(agent.call(&status)?)? {
            return Ok(output);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not finish within {timeout:?} in the guest",
                argv.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_command_becomes_guest_exec_with_its_output_captured() {
        let argv = ["systemctl", "stop", "kubelet"].map(String::from);
        assert_eq!(
            exec_request(&argv).unwrap(),
            json!({"execute": "guest-exec",
                   "arguments": {"path": "systemctl", "arg": ["stop", "kubelet"], "capture-output": true}})
        );
        assert_eq!(
            exec_request(&[]).unwrap_err().to_string(),
            "no command given"
        );
    }

    #[test]
    fn exec_status_is_read_as_the_process_ended() {
        assert_eq!(finished(json!({"exited": false})).unwrap(), None);
        assert_eq!(
            finished(
                json!({"exited": true, "exitcode": 3, "out-data": "aGkK", "err-data": "b29wcwo="})
            )
            .unwrap(),
            Some(Output {
                code: 3,
                stdout: "hi\n".into(),
                stderr: "oops\n".into()
            })
        );
        assert_eq!(
            finished(json!({"exited": true, "signal": 9})).unwrap(),
            Some(Output {
                code: 137,
                stdout: String::new(),
                stderr: String::new()
            })
        );
        assert_eq!(
            format!(
                "{:#}",
                finished(json!({"exited": true, "exitcode": 0, "out-data": "!!"})).unwrap_err()
            ),
            "the guest agent's output is not base64: Invalid symbol 33, offset 0."
        );
    }

    #[test]
    fn an_agent_error_is_reported_with_its_description() {
        assert_eq!(
            returned(
                r#"{"error": {"class": "GenericError", "desc": "Guest agent command failed"}}"#
            )
            .unwrap_err()
            .to_string(),
            "the guest agent refused: Guest agent command failed"
        );
        assert_eq!(
            returned(r#"{"return": {"pid": 7}}"#).unwrap(),
            json!({"pid": 7})
        );
        assert!(returned("garbage").is_err());
    }
}
