//! The Python seed stack (FastAPI + uvicorn + Redis + asyncpg) under `bench/seed`, started
//! and stopped for the HTTP comparison.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The Python seed stack (FastAPI + uvicorn + Redis + asyncpg) under `bench/seed`.
pub struct Seed {
    /// The venv's python with the pinned packages.
    pub python: std::path::PathBuf,
    /// `bench/seed`.
    pub dir: std::path::PathBuf,
    /// PostgreSQL for its source of truth.
    pub database_url: String,
    /// Redis for its cache.
    pub redis_url: String,
    /// uvicorn workers.
    pub workers: usize,
}

/// A running seed server, killed on drop.
pub(super) struct SeedProc {
    child: std::process::Child,
    pub(super) port: u16,
}

impl Drop for SeedProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Seed {
    pub(super) fn load(&self, answers: &Path) -> anyhow::Result<()> {
        let status = Command::new(&self.python)
            .arg(self.dir.join("load.py"))
            .arg(&self.database_url)
            .arg(answers)
            .arg(&self.redis_url)
            .current_dir(&self.dir)
            .status()
            .context("running bench/seed/load.py")?;
        if !status.success() {
            bail!("bench/seed/load.py failed");
        }
        Ok(())
    }

    pub(super) fn start(&self, nodelay_fix: bool) -> anyhow::Result<SeedProc> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.dir.join("serve.py"))
            .arg(port.to_string())
            .arg(self.workers.to_string())
            .current_dir(&self.dir)
            .env("SEED_REDIS_URL", &self.redis_url)
            .env("SEED_DATABASE_URL", &self.database_url)
            .stdout(std::process::Stdio::null());
        if nodelay_fix {
            cmd.arg("--nodelay-fix");
        }
        let mut proc = SeedProc {
            child: cmd.spawn().context("starting the seed stack")?,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = proc.child.try_wait()? {
                bail!("the seed stack exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("the seed stack did not start listening within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The workers start after the listener: give them a moment to import the app.
        std::thread::sleep(Duration::from_secs(2));
        Ok(proc)
    }
}
