//! The pause stand-in: it runs until SIGTERM or SIGINT and then exits 0, as the sandbox's
//! first process must for a Pod to stop cleanly; `-v` names it; any other argument is refused.

use std::process::{Command, Stdio};
use std::time::Duration;

const PAUSE: &str = env!("CARGO_BIN_EXE_pause-standin");

#[test]
fn pause_waits_for_a_signal_and_exits_cleanly_on_term_or_int() {
    for signal in ["TERM", "INT"] {
        let child = Command::new(PAUSE)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id().to_string();
        let mut child = child;
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause exited by itself"
        );
        let killed = Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "SIG{signal}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "Warning: pause should be the first process\n"
        );
    }
}

#[test]
fn pause_takes_no_arguments_but_v() {
    let version = format!(
        "pause-standin (a stand-in for pause) {}\n",
        env!("CARGO_PKG_VERSION")
    );
    let cases = [
        (vec!["-v"], Some(0), version.as_str(), ""),
        (
            vec!["--forever"],
            Some(1),
            "",
            "pause-standin: takes no arguments but -v\n",
        ),
        (
            vec!["-v", "-v"],
            Some(1),
            "",
            "pause-standin: takes no arguments but -v\n",
        ),
    ];
    for (args, code, stdout, stderr) in cases {
        let out = Command::new(PAUSE).args(&args).output().unwrap();
        assert_eq!(out.status.code(), code, "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), stdout, "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), stderr, "{args:?}");
    }
}
