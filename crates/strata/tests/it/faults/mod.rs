//! Fault scenarios under load. Each test starts servers of its own on loopback ports (a
//! `redis-server`, a PostgreSQL cluster made with `initdb` and run with `pg_ctl` in a
//! temporary directory), never the machine's shared ones, drives strata with a bounded client
//! loop, breaks a dependency, and prints what the clients saw: requests sent, succeeded,
//! failed, and the worst latency.

mod crash;
mod disk;
mod postgres;
mod redis;
mod slow;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_port(port: u16, up: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() != up {
        assert!(
            Instant::now() < deadline,
            "{what} did not come {}",
            if up { "up" } else { "down" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` of the test's own, keeping nothing on disk.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> Self {
        let mut r = Self {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package)");
        self.child = Some(child);
        wait_for_port(self.port, true, "redis-server");
    }

    /// SIGKILL: no shutdown, connections cut.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_for_port(self.port, false, "redis-server");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL cluster of the test's own in a temporary directory, run as the `postgres`
/// user when the tests run as root (PostgreSQL refuses to run as root).
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found under /usr/lib/postgresql/*/bin"))
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args...`, as the `postgres` user when this is root.
fn pg_command(program: &Path) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl OwnPostgres {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strata-pg-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        if as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster directory to postgres");
        }
        let out = pg_command(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            dir,
            port: free_port(),
            running: false,
        };
        pg.restart();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, args: &[&str]) {
        let out = pg_command(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-l"])
            .arg(self.dir.path().join("log"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the cluster (again) on its port, waiting until it accepts connections.
    pub fn restart(&mut self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        self.ctl(&["-w", "-t", "60", "-o", &opts, "start"]);
        self.running = true;
        wait_for_port(self.port, true, "postgres");
    }

    /// A fast shutdown: sessions are ended, the server exits cleanly.
    pub fn stop(&mut self) {
        self.ctl(&["-w", "-m", "fast", "stop"]);
        self.running = false;
        wait_for_port(self.port, false, "postgres");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = pg_command(&pg_bin("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "stop"])
                .output();
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Ok,
    /// It was refused the way the scenario allows (a 503 with `Retry-After` during an outage,
    /// a connection refused by a stopped server).
    Refused,
    /// Anything else: an error the client should never see.
    Failed,
}

/// One request's record.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub took: Duration,
    pub outcome: Outcome,
}

/// A request a load task sends: given its task and sequence number, returns how it ended.
pub type Request =
    Arc<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// A bounded client loop: `tasks` tasks, each sending one request after another (with a
/// short pause) until stopped, every request recorded.
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(tasks: usize, pause: Duration, request: Request) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..tasks)
            .map(|t| {
                let (stop, samples, request) = (stop.clone(), samples.clone(), request.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    // Bounded in count as well as time.
                    while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
                        let at = Instant::now();
                        let outcome = request(t, n).await;
                        let took = at.elapsed();
                        samples.lock().unwrap().push(Sample { at, took, outcome });
                        n += 1;
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            samples,
            tasks,
        }
    }

    /// Stops the tasks and returns every request's record.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

/// Counts and the worst latency of some samples, printed for the record.
pub fn report(what: &str, samples: &[Sample]) -> (usize, usize, usize, Duration) {
    let ok = samples.iter().filter(|s| s.outcome == Outcome::Ok).count();
    let refused = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Refused)
        .count();
    let failed = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Failed)
        .count();
    let worst = samples.iter().map(|s| s.took).max().unwrap_or_default();
    eprintln!(
        "[fault] {what}: sent {}, succeeded {ok}, refused {refused}, failed {failed}, worst {:.1} ms",
        samples.len(),
        worst.as_secs_f64() * 1e3
    );
    (ok, refused, failed, worst)
}

/// The median of some durations.
pub fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}
