//! Extraction in a child process: a file is read by `pdftotext` (poppler) or by the strata
//! executable's `extract` command in a process of its own, under an address-space limit and a
//! wall-clock limit at which it is killed. A parser that crashes, loops or allocates without
//! end on a hostile file takes down only that child: its job fails with the reason, and the
//! server, the worker slot and every other job carry on.
//!
//! Must not import: the store, the job queue, HTTP types.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{ExtractError, Extracted, MediaType, pdf};

/// Most text one file may yield; a file that decompresses past it fails rather than filling
/// the server's memory with it.
pub const MAX_TEXT_BYTES: u64 = 64 * 1024 * 1024;
/// How much of a child's stderr is kept for its failure reason.
const STDERR_KEEP: u64 = 16 * 1024;

/// How PDFs are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdfReader {
    /// Poppler's `pdftotext` at this path, in a child process.
    Poppler(PathBuf),
    /// The parser built into strata (`pdf-extract`): reads fewer real-world files (CJK
    /// character maps, damaged cross-reference tables, Type3 fonts); used when poppler is not
    /// installed.
    Builtin,
}

impl PdfReader {
    /// Poppler's `pdftotext` when it is on `PATH`, else the built-in parser.
    pub fn detect() -> Self {
        find_on_path("pdftotext").map_or(Self::Builtin, Self::Poppler)
    }

    /// `poppler (PATH)` or `builtin`, for logs and health.
    pub fn describe(&self) -> String {
        match self {
            Self::Poppler(p) => format!("poppler ({})", p.display()),
            Self::Builtin => "builtin".to_owned(),
        }
    }
}

/// Where and under which limits files are turned into text.
#[derive(Debug, Clone)]
pub struct ExtractSettings {
    /// How PDFs are read.
    pub pdf: PdfReader,
    /// The strata executable, run as `PROGRAM extract --json --pdf-reader builtin -` for
    /// every format poppler does not read; `None` runs those extractors inside this process
    /// (library users and tests), where only the time limit and panic containment apply.
    pub helper: Option<PathBuf>,
    /// Address space (`RLIMIT_AS`) of each extraction child, in bytes.
    pub memory_limit: u64,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        Self {
            pdf: PdfReader::detect(),
            helper: None,
            memory_limit: 1024 * 1024 * 1024,
        }
    }
}

/// What a child prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// `pdftotext`: text, pages separated by form feeds, blocks by blank lines.
    PdfText,
    /// `strata extract --json`: the blocks as JSON.
    Blocks,
}

/// One extraction to run in a child process.
#[derive(Debug)]
pub struct ChildExtraction {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    output: Output,
    memory_limit: u64,
}

/// Why a child extraction produced no text.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The file was read and yields nothing (or the reader refused it): permanent.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// Killed at the time limit.
    #[error("extraction took longer than the limit of {} s and was stopped", .0.as_secs_f64())]
    TimedOut(Duration),
    /// Asked to stop (shutdown); the child was killed.
    #[error("extraction was interrupted")]
    Interrupted,
    /// The program could not be started (missing, not executable): an installation problem,
    /// not the file's.
    #[error("cannot start the extractor {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's error.
        error: String,
    },
}

impl ExtractSettings {
    /// The child process that extracts a file of `media` given on its stdin, or `None` when
    /// this media type is extracted in this process.
    pub fn child_for(&self, media: MediaType) -> Option<ChildExtraction> {
        let (program, args, output) = match (media, &self.pdf, &self.helper) {
            (MediaType::Pdf, PdfReader::Poppler(pdftotext), _) => (
                pdftotext.clone(),
                // Quiet, UTF-8, Unix line ends, the file, to stdout.
                vec![
                    "-q".into(),
                    "-enc".into(),
                    "UTF-8".into(),
                    "-eol".into(),
                    "unix".into(),
                ],
                Output::PdfText,
            ),
            (_, _, Some(helper)) => (
                helper.clone(),
                vec![
                    "extract".into(),
                    "--json".into(),
                    "--pdf-reader".into(),
                    "builtin".into(),
                    "--media".into(),
                    media.as_str().into(),
                ],
                Output::Blocks,
            ),
            _ => return None,
        };
        let mut args: Vec<std::ffi::OsString> = args;
        // The file comes on stdin (over PostgreSQL it is stored in the database, not on disk).
        args.push("-".into());
        if output == Output::PdfText {
            args.push("-".into());
        }
        Some(ChildExtraction {
            program,
            args,
            output,
            memory_limit: self.memory_limit,
        })
    }
}

impl ChildExtraction {
    /// Runs the child on `input` to completion, killing it at `limit` or when `stop` fires.
    pub async fn run(
        self,
        input: Vec<u8>,
        limit: Duration,
        stop: &CancellationToken,
    ) -> Result<Extracted, ChildError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C.UTF-8")
            .kill_on_drop(true);
        limit_child(&mut cmd, self.memory_limit);
        let mut child = cmd.spawn().map_err(|e| ChildError::Spawn {
            program: self.program.display().to_string(),
            error: e.to_string(),
        })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ChildError::Spawn {
                program: self.program.display().to_string(),
                error: "no pipes to the child".into(),
            });
        };
        let work = async {
            let feed = async move {
                // A reader that stops early (a bad header) closes its end: not an error here,
                // its exit status tells.
                let _ = stdin.write_all(&input).await;
                drop(stdin);
            };
            let ((), out, err, status) = tokio::join!(
                feed,
                read_capped(stdout, MAX_TEXT_BYTES + 1),
                read_capped(stderr, STDERR_KEEP),
                child.wait()
            );
            (out, err, status)
        };
        let (out, err, status) = tokio::select! {
            r = tokio::time::timeout(limit, work) => match r {
                Ok(done) => done,
                Err(_) => return Err(ChildError::TimedOut(limit)),
            },
            () = stop.cancelled() => return Err(ChildError::Interrupted),
        };
        // `child` is dropped on the early returns above, which kills it (kill_on_drop).
        let out = out.unwrap_or_default();
        let err = String::from_utf8_lossy(&err.unwrap_or_default()).into_owned();
        let status = status.map_err(|e| ChildError::Spawn {
            program: self.program.display().to_string(),
            error: e.to_string(),
        })?;
        if out.len() as u64 > MAX_TEXT_BYTES {
            return Err(ExtractError::TooMuchText(MAX_TEXT_BYTES).into());
        }
        self.interpret(status, &out, &err)
    }

    fn interpret(
        &self,
        status: ExitStatus,
        out: &[u8],
        err: &str,
    ) -> Result<Extracted, ChildError> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            // SIGXCPU or SIGKILL from outside, SIGSEGV or SIGABRT from the parser itself (an
            // allocation refused under the memory limit aborts).
            return Err(ExtractError::Crashed(format!(
                "the extractor was stopped by signal {signal} ({}): the file is malformed or \
                 needs more than the memory limit of {} MiB{}",
                signal_name(signal),
                self.memory_limit / (1024 * 1024),
                reason_suffix(err)
            ))
            .into());
        }
        match self.output {
            Output::PdfText => {
                let text = String::from_utf8_lossy(out);
                let extracted = pdf::from_text(&text);
                // A damaged file from which poppler still recovered text is read, whatever
                // its exit status says about the rest.
                if !extracted.blocks.is_empty() || status.success() {
                    return Ok(extracted.or_no_text()?);
                }
                Err(ExtractError::Pdf(last_line(err).unwrap_or_else(|| {
                    format!(
                        "pdftotext exited with status {}",
                        status.code().unwrap_or(-1)
                    )
                }))
                .into())
            }
            Output::Blocks => {
                if status.success() {
                    return serde_json::from_slice::<Extracted>(out).map_err(|e| {
                        ExtractError::Crashed(format!("the extractor's output is not valid: {e}"))
                            .into()
                    });
                }
                // `strata extract` prints its reason as the last line; a panic prints more.
                Err(ExtractError::Crashed(last_line(err).unwrap_or_else(|| {
                    format!(
                        "the extractor exited with status {}",
                        status.code().unwrap_or(-1)
                    )
                }))
                .into())
            }
        }
    }
}

/// Reads at most `cap` bytes, then drains the rest so the child is never blocked on a full
/// pipe (it is killed at the time limit if it writes forever).
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut r).take(cap).read_to_end(&mut buf).await?;
    tokio::io::copy(&mut r, &mut tokio::io::sink()).await?;
    Ok(buf)
}

/// The child's address space is limited and it writes no core file; it gets its own process
/// group so a terminal's Ctrl-C reaches the server, which stops it, rather than the child.
#[allow(unsafe_code)]
fn limit_child(cmd: &mut tokio::process::Command, memory_limit: u64) {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let mem = Rlimit {
        current: Some(memory_limit),
        maximum: Some(memory_limit),
    };
    // SAFETY: the closure runs between fork and exec, where only async-signal-safe calls are
    // allowed: it makes two setrlimit system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(Resource::As, mem)?;
            setrlimit(
                Resource::Core,
                Rlimit {
                    current: Some(0),
                    maximum: Some(0),
                },
            )?;
            Ok(())
        });
    }
    cmd.process_group(0);
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        24 => "SIGXCPU",
        _ => "signal",
    }
}

/// The last non-empty line of a child's stderr.
fn last_line(err: &str) -> Option<String> {
    err.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect())
}

fn reason_suffix(err: &str) -> String {
    last_line(err).map_or_else(String::new, |l| format!(" ({l})"))
}

/// The first executable file called `name` in the directories of `PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
