//! The resident agent against a real `launcher-seed serve`: a host that finished firstboot takes
//! the operator's commands on its held poll, carries them out and says what they came to; a
//! reboot is done only after the seed has heard of it.

mod common;

use common::{Host, Seed, run_to_the_end};
use firstboot::agent::{Agent, AgentError};
use firstboot::os::{Action, Cmd, RecordingOs};
use std::process::{Command, Output};
use std::time::Duration;

/// `launcher-seed ARGS --state-dir <the seed's>`.
fn seed_cli(seed: &Seed, args: &[&str]) -> Output {
    Command::new(testkit::workspace_bin("launcher-seed"))
        .args(args)
        .arg("--state-dir")
        .arg(seed.dir.path().join("state"))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The host's commands as the seed lists them: (id, kind, state, message), newest first.
fn listed(seed: &Seed, id: &str) -> Vec<(String, String, String, String)> {
    let out = seed_cli(seed, &["hosts", "commands", id, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap().to_string();
            (field("id"), field("kind"), field("state"), field("message"))
        })
        .collect()
}

fn os_with_units(states: &str) -> RecordingOs {
    let mut os = RecordingOs::new(Duration::ZERO, false);
    os.outputs.insert("systemctl".into(), states.into());
    os
}

#[test]
fn the_agent_carries_out_the_seeds_commands_and_says_what_they_came_to() {
    let seed = Seed::start();
    let worker = Host::new(4);
    let os = os_with_units("active\n\nactive\n");
    assert!(matches!(
        Agent::from_journal(worker.root(), &os),
        Err(AgentError::NotDone)
    ));
    run_to_the_end("worker", &worker, &seed, 0);
    let id = worker.journal()["host_id"].as_str().unwrap().to_string();
    worker.put("proc/uptime", "12345.67 100.00\n");
    worker.put("proc/loadavg", "0.52 0.40 0.33 1/234 5678\n");
    let agent = Agent::from_journal(worker.root(), &os).unwrap();
    assert_eq!(agent.poll_once(Duration::ZERO).unwrap(), vec![]);

    // The operator waits for the answer while the agent's poll is held open.
    let waiting = std::thread::scope(|s| {
        let cli =
            s.spawn(|| seed_cli(&seed, &["hosts", "command", &id, "health", "--wait", "60s"]));
        let taken = agent.poll_once(Duration::from_secs(25)).unwrap();
        assert_eq!(taken.len(), 1, "{taken:?}");
        cli.join().unwrap()
    });
    assert!(waiting.status.success(), "{}", text(&waiting.stderr));
    assert_eq!(
        text(&waiting.stdout),
        format!(
            "command c-0001 (health) of host {id}: up 12345s, load 0.52 0.40 0.33; containerd active, kubelet active\n"
        )
    );
    let asked = Action::Run {
        cmd: Cmd::new(
            "systemctl",
            &[
                "show",
                "--property=ActiveState",
                "--value",
                "containerd",
                "kubelet",
            ],
        ),
    };
    assert!(os.actions().contains(&asked), "{:?}", os.actions());

    // A unit that is not active makes the host unhealthy: the command fails, saying which.
    let sick = os_with_units("active\n\nfailed\n");
    let agent = Agent::from_journal(worker.root(), &sick).unwrap();
    let queued = seed_cli(&seed, &["hosts", "command", &id, "health", "--wait", "0"]);
    assert_eq!(
        text(&queued.stdout),
        format!("command c-0002 (health) of host {id} queued\n")
    );
    agent.poll_once(Duration::ZERO).unwrap();
    assert_eq!(
        listed(&seed, &id)[0],
        (
            "c-0002".into(),
            "health".into(),
            "failed".into(),
            "up 12345s, load 0.52 0.40 0.33; containerd active, kubelet failed".into()
        )
    );

    // A reboot is answered first, then done.
    let os = os_with_units("");
    let agent = Agent::from_journal(worker.root(), &os).unwrap();
    seed_cli(&seed, &["hosts", "command", &id, "reboot", "--wait", "0"]);
    agent.poll_once(Duration::ZERO).unwrap();
    assert_eq!(
        listed(&seed, &id)[0],
        (
            "c-0003".into(),
            "reboot".into(),
            "succeeded".into(),
            "rebooting".into()
        )
    );
    let reboot = Action::Run {
        cmd: Cmd::new("systemctl", &["reboot"]),
    };
    assert_eq!(os.actions(), vec![reboot.clone()]);
    // Answered, it is not handed out again.
    assert_eq!(agent.poll_once(Duration::ZERO).unwrap(), vec![]);

    // A reset: the seed hears of it and unbinds the host's key; only then is the data disk
    // marked to be cleared at the next boot, and the host reboots.
    worker.put("run/launcher/data-attached", "");
    std::fs::create_dir_all(worker.path("var/lib/launcher-data")).unwrap();
    let os = os_with_units("");
    let agent = Agent::from_journal(worker.root(), &os).unwrap();
    seed_cli(&seed, &["hosts", "command", &id, "reset", "--wait", "0"]);
    agent.poll_once(Duration::ZERO).unwrap();
    assert_eq!(
        listed(&seed, &id)[0],
        (
            "c-0004".into(),
            "reset".into(),
            "succeeded".into(),
            "resetting: the LAUNCHER-DATA disk is cleared at the next boot and the host comes back with a new identity key".into()
        )
    );
    assert!(
        worker
            .path("var/lib/launcher-data/launcher-reset")
            .is_file()
    );
    assert_eq!(os.actions(), vec![reboot]);
    let hosts = seed_cli(&seed, &["hosts", "ls", "--json"]);
    let hosts: serde_json::Value = serde_json::from_slice(&hosts.stdout).unwrap();
    let row = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(row["key"].is_null(), "{row}");
    // Unbound, the old key is no longer this host's: the agent is refused until the machine
    // comes back with its new key.
    let refused = agent.poll_once(Duration::ZERO).unwrap_err();
    assert!(refused.contains("identity_taken"), "{refused}");

    // Bad asks of the operator: each refused with the reason, nothing queued.
    let cases: [(&[&str], &str); 3] = [
        (
            &["hosts", "command", "h-9999", "health"],
            "no host with id h-9999",
        ),
        (
            &["hosts", "command", &id, "format"],
            "\"format\" is not a command: health, reboot or reset",
        ),
        (
            &["hosts", "command", &id, "health", "--wait", "soon"],
            "not a duration",
        ),
    ];
    for (args, why) in cases {
        let out = seed_cli(&seed, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(listed(&seed, &id).len(), 4);
}
