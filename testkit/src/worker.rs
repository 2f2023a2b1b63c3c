//! Test helper: the real `node-worker` binary as a child process. It captures with `--sink file:` and
//! `--stats-json` into a temporary directory, logs JSON on stderr (read by a thread, so the test can wait
//! for "tapped" events), and is stopped with SIGINT like a user would. A worker still running when its
//! guard drops (a failing test) is killed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long the worker is given after the traffic before SIGINT: the kernel hands captured packets over
/// in blocks every 20 ms and the loop polls every 100 ms, so this is generous.
const SETTLE: Duration = Duration::from_millis(700);

/// The worker binary under test, of the build profile of `cargo test` (`--release` gives a release
/// build). Cargo builds a package's binaries before its integration tests and names them to the tests
/// only (`CARGO_BIN_EXE_*` is not set for this crate), so it is found where Cargo puts both: the test
/// executable runs from `target/<profile>/deps/`, the binary is `target/<profile>/node-worker`.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable in target/<profile>/deps");
    let binary = profile_dir.join("node-worker");
    assert!(
        binary.is_file(),
        "{} is missing: run the tests of node-worker with cargo, which builds it first",
        binary.display()
    );
    binary
}

/// A running `node-worker capture ...`.
pub struct Worker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// What a stopped worker left.
pub struct Finished {
    pub status: ExitStatus,
    /// One JSON object per emitted pair, in output order.
    pub pairs: Vec<Value>,
    /// The `--stats-json` document.
    pub stats: Value,
    /// Everything the worker wrote to stderr (JSON logs, then the plain-text summary).
    pub stderr: String,
}

impl Worker {
    /// Starts `node-worker capture <source_args>` with `config` (YAML; none: the product defaults).
    pub fn start(source_args: &[&str], config: Option<&str>) -> Worker {
        Self::start_logging(source_args, config, "info")
    }

    /// [`Worker::start`] with a `RUST_LOG` filter (e.g. `info,node_worker=debug` to see vanished taps).
    pub fn start_logging(source_args: &[&str], config: Option<&str>, log: &str) -> Worker {
        Self::launch(source_args, config, log, &[])
    }

    /// [`Worker::start`] without these capabilities (e.g. `net_admin`), as a DaemonSet that does not
    /// grant them runs it (`setpriv` drops them from the bounding and inheritable sets).
    pub fn start_without(
        source_args: &[&str],
        config: Option<&str>,
        capabilities: &[&str],
    ) -> Worker {
        Self::launch(source_args, config, "info", capabilities)
    }

    fn launch(source_args: &[&str], config: Option<&str>, log: &str, drop: &[&str]) -> Worker {
        let dir = tempfile::Builder::new()
            .prefix("ilt-worker-")
            .tempdir()
            .expect("temporary directory");
        let mut command = if drop.is_empty() {
            Command::new(binary())
        } else {
            let dropped: Vec<String> = drop.iter().map(|c| format!("-{c}")).collect();
            let mut c = Command::new("setpriv");
            c.arg(format!("--bounding-set={}", dropped.join(",")))
                .arg(format!("--inh-caps={}", dropped.join(",")))
                .arg(binary());
            c
        };
        command.arg("capture").args(source_args);
        if let Some(config) = config {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, config).expect("write config");
            command.arg("--config").arg(path);
        }
        command
            .arg("--sink")
            .arg(format!("file:{}", dir.path().join("pairs.jsonl").display()))
            .arg("--stats-json")
            .arg(dir.path().join("stats.json"))
            .args(["--log-format", "json", "--node-name", "e2e-node"])
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start node-worker");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr piped");
        let lines = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("stderr lock").push(line);
            }
        });
        Worker {
            child: Some(child),
            dir,
            stderr,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| i32::try_from(c.id()).expect("pid"))
            .unwrap_or(0)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// The JSON log events so far whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.stderr_lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .collect()
    }

    /// Whether the worker has exited already (it should not have).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until the worker logs `message` for `interface` in the namespace labelled `netns` (its
    /// inode for discovered namespaces), counting `count` such events in all. Panics with the log if
    /// it does not, or if the worker exits.
    pub fn wait_event(&mut self, message: &str, interface: &str, netns: &str, count: usize) {
        let quoted = format!("\"{netns}\"");
        let start = Instant::now();
        loop {
            let seen = self
                .events(message)
                .iter()
                .filter(|e| {
                    e["fields"]["interface"] == interface
                        && e["fields"]["netns"]
                            .as_str()
                            .is_some_and(|n| n.contains(&quoted))
                })
                .count();
            if seen >= count {
                return;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "node-worker exited ({status}) before '{message}' {interface} in {netns}:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "node-worker did not log '{message}' {interface} in {netns} {count} times:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the worker says it captures (the single interface of `--interface` is open then).
    pub fn wait_capturing(&mut self) {
        let start = Instant::now();
        while self
            .events("capturing; stop with Ctrl-C (SIGINT) or SIGTERM")
            .is_empty()
        {
            if let Some(status) = self.exited() {
                panic!(
                    "node-worker exited ({status}):\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "node-worker did not start capturing:\n{}",
                self.stderr_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the worker.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal node-worker");
    }

    /// Lets the last packets through ([`SETTLE`]), stops the worker with SIGINT and collects its output.
    pub fn stop(mut self) -> Finished {
        std::thread::sleep(SETTLE);
        self.signal(Signal::SIGINT);
        let mut child = self.child.take().expect("worker running");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for node-worker") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node-worker did not stop within 30 s of SIGINT:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let stderr = self.stderr_lines().join("\n");
        assert!(status.success(), "node-worker failed ({status}):\n{stderr}");
        let pairs = std::fs::read_to_string(self.dir.path().join("pairs.jsonl"))
            .expect("pairs file")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad pair line {l:?}: {e}")))
            .collect();
        let stats = serde_json::from_str(
            &std::fs::read_to_string(self.dir.path().join("stats.json")).expect("stats file"),
        )
        .expect("stats JSON");
        Finished {
            status,
            pairs,
            stats,
            stderr,
        }
    }

    /// Resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident memory so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Open file descriptors now.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// CPU time used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        // USER_HZ is 100 on Linux (the ABI fixes it for /proc).
        Duration::from_millis(ticks * 10)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn proc_status_kib(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

impl Finished {
    /// A drop counter from the stats JSON (0 when absent).
    pub fn drops(&self, reason: &str) -> u64 {
        self.stats["drops"][reason].as_u64().unwrap_or(0)
    }

    /// The sum of all drop counters.
    pub fn total_drops(&self) -> u64 {
        self.stats["drops"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.stats["counters"][name].as_u64().unwrap_or(0)
    }

    pub fn capture(&self, name: &str) -> u64 {
        self.stats["capture"][name].as_u64().unwrap_or(0)
    }

    /// Pairs captured in the namespace labelled `netns`.
    pub fn pairs_in(&self, netns: &str) -> Vec<&Value> {
        self.pairs
            .iter()
            .filter(|p| p["interface"]["netns"] == netns)
            .collect()
    }

    /// The interfaces tapped at the end in the namespace labelled `netns`, as (name, mode).
    pub fn tapped_in(&self, netns: &str) -> Vec<(String, String)> {
        let mut tapped: Vec<(String, String)> = self.stats["capture"]["tapped"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| t["netns"] == netns)
                    .map(|t| {
                        (
                            t["name"].as_str().unwrap_or("").to_string(),
                            t["mode"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        tapped.sort();
        tapped
    }

    /// Packets the summary reports for the open tap `interface` in `netns` (from the stderr summary).
    pub fn tap_packets(&self, interface: &str, netns: &str) -> Option<u64> {
        self.stderr.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5 && f[0] == interface && f[1] == netns && f[4] == "packets")
                .then(|| f[3].parse().ok())
                .flatten()
        })
    }
}
