//! Redis as operators run it for high availability, on loopback: a master, a replica and three
//! Sentinels (`redis-server --sentinel`, what Debian's `redis-sentinel` runs), each a real
//! process that a test can `SIGKILL` and start again on the same port; and a single server
//! with AOF persistence that survives a restart.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TestDir};

/// The master name the Sentinels monitor.
pub const MASTER_NAME: &str = "cs";

/// What the data nodes of [`RedisHa`] run with besides [`server_args`].
const HA_ARGS: [&str; 4] = [
    "--min-replicas-to-write",
    "1",
    "--min-replicas-max-lag",
    "5",
];

/// One `redis-server` process that can be killed and started again with the same arguments.
#[derive(Debug)]
pub struct RedisNode {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    label: String,
}

impl RedisNode {
    fn spawn(label: &str, port: u16, args: Vec<String>) -> Self {
        let mut node = Self {
            child: None,
            port,
            args,
            label: label.to_owned(),
        };
        node.start();
        node
    }

    /// Starts the process (again) and waits until it answers `PING`.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts a node that lost its data (no persistence) again as a replica of `master`, the
    /// way Redis asks for it: a data node without persistence must not come back as a master
    /// by itself, or a Sentinel that has not finished a failover can resync the promoted
    /// replica from the empty node and every record is gone.
    pub fn start_replica_of(&mut self, master: u16) {
        self.start_with(&["--replicaof", "127.0.0.1", &master.to_string()]);
    }

    fn start_with(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "{} is already running", self.label);
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); run scripts/test-setup.sh first")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(self.port, &["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "{} did not answer PING on port {}",
                self.label,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SIGKILL`: the process dies at once, with whatever it had not yet written or replicated.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs a `redis-cli` command against it; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p PORT ARGS...` on 127.0.0.1; stdout (empty when it cannot connect).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out: Output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (installed with redis-server)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn server_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--dir",
        &dir.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A master, one replica and three Sentinels watching them (quorum 2, down after 1 s). Both data
/// nodes refuse writes while no replica is connected (`min-replicas-to-write 1`), as the README
/// asks of a Sentinel setup: a write Countersign is told failed must not be applied anyway.
#[derive(Debug)]
pub struct RedisHa {
    /// The first master.
    pub master: RedisNode,
    /// Its replica at the start.
    pub replica: RedisNode,
    /// The Sentinels.
    pub sentinels: Vec<RedisNode>,
    _dir: TestDir,
}

impl RedisHa {
    /// Starts all five processes and waits until every Sentinel knows the replica.
    pub fn start() -> Self {
        let dir = TestDir::new();
        let master_port = free_port();
        let master_dir = dir.join("master");
        std::fs::create_dir_all(&master_dir).expect("master dir");
        let mut args = server_args(master_port, &master_dir);
        args.extend(HA_ARGS.map(str::to_owned));
        let master = RedisNode::spawn("master", master_port, args);
        let replica_port = free_port();
        let replica_dir = dir.join("replica");
        std::fs::create_dir_all(&replica_dir).expect("replica dir");
        let mut args = server_args(replica_port, &replica_dir);
        args.extend(HA_ARGS.map(str::to_owned));
        args.extend(["--replicaof", "127.0.0.1", &master_port.to_string()].map(str::to_owned));
        let replica = RedisNode::spawn("replica", replica_port, args);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                // A Sentinel rewrites its config file: each gets its own, writable.
                let conf: PathBuf = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "bind 127.0.0.1\nport {port}\ndir {}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 4000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir.path().display()
                    ),
                )
                .expect("sentinel config");
                RedisNode::spawn(
                    &format!("sentinel {i}"),
                    port,
                    vec![conf.display().to_string(), "--sentinel".to_owned()],
                )
            })
            .collect::<Vec<_>>();
        let ha = Self {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ha.sentinels.iter().all(|s| {
            s.cli(&["SENTINEL", "replicas", MASTER_NAME])
                .contains(&replica_port.to_string())
                && s.cli(&["SENTINEL", "sentinels", MASTER_NAME])
                    .matches("127.0.0.1")
                    .count()
                    >= 2
        }) {
            assert!(
                Instant::now() < deadline,
                "the Sentinels never discovered the replica and each other"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ha
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/cs`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master port the first Sentinel that answers names now.
    pub fn current_master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = s.cli(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// The master port each Sentinel names now (`None` for one that does not answer).
    fn master_ports(&self) -> Vec<Option<u16>> {
        self.sentinels
            .iter()
            .map(|s| {
                let out = s.cli(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
                out.lines().nth(1)?.trim().parse().ok()
            })
            .collect()
    }

    /// Waits until every Sentinel names `port` as the master (one that lags behind could
    /// still undo the failover).
    pub fn wait_master(&self, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.master_ports().iter().all(|p| *p == Some(port)) {
            assert!(
                Instant::now() < deadline,
                "the Sentinels did not promote port {port} within {within:?} (they name {:?})",
                self.master_ports()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One `redis-server` in its own folder that a test can `SIGKILL` and start again on the same
/// port: with an append-only file fsynced on every write (it keeps everything it
/// acknowledged), or with no persistence at all (it comes back empty).
#[derive(Debug)]
pub struct RestartableRedis {
    /// The process.
    pub node: RedisNode,
    _dir: TestDir,
}

impl RestartableRedis {
    /// With `aof`: `appendonly yes`, `appendfsync always`; without: nothing is kept.
    pub fn start(aof: bool) -> Self {
        let dir = TestDir::new();
        let port = free_port();
        let mut args = server_args(port, dir.path());
        if aof {
            let n = args.len();
            args[n - 1] = "yes".to_owned();
            args.extend(["--appendfsync", "always"].map(str::to_owned));
        }
        Self {
            node: RedisNode::spawn("restartable redis", port, args),
            _dir: dir,
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.node.port())
    }
}
