//! `strata extract`: the text strata reads from one file, as its ingestion jobs see it. The
//! server runs this command in a child process for every non-PDF file it ingests (and for
//! PDFs when poppler is not installed), so a parser that crashes or runs away on a hostile
//! file takes only that child with it.
//!
//! Runs before the configuration is read and starts no runtime unless poppler is asked to
//! read a PDF: a child under a memory limit should map as little as it can.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use strata_engine::extract::{
    ExtractSettings, Extracted, MediaType, PdfReader, SNIFF_LEN, extract, sniff,
};

use crate::config::PdfReaderChoice;

/// Extracts `file` (`-`: stdin) and prints its blocks: as JSON with `json`, else as text with
/// a blank line between blocks and headings marked `# `.
pub fn run(
    file: &Path,
    media: Option<&str>,
    json: bool,
    reader: Option<PdfReaderChoice>,
) -> anyhow::Result<()> {
    let bytes = read_input(file)?;
    let declared = media.map(to_mime).transpose()?;
    let name = (file != Path::new("-")).then(|| file.to_string_lossy().into_owned());
    let head = &bytes[..bytes.len().min(SNIFF_LEN)];
    let media = sniff(declared, name.as_deref(), head)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let extracted = match (media, reader.unwrap_or(PdfReaderChoice::Auto)) {
        (MediaType::Pdf, PdfReaderChoice::Builtin) => in_process(media, &bytes)?,
        (MediaType::Pdf, choice) => match PdfReader::detect() {
            PdfReader::Poppler(path) => with_poppler(path, bytes)?,
            PdfReader::Builtin if choice == PdfReaderChoice::Poppler => {
                bail!("--pdf-reader poppler: pdftotext is not on PATH (install poppler-utils)")
            }
            PdfReader::Builtin => in_process(media, &bytes)?,
        },
        _ => in_process(media, &bytes)?,
    };
    print(&extracted, json)
}

/// The extractors compiled in; a parser's panic becomes one line naming it (the reason the
/// server records for the job), instead of a backtrace note.
fn in_process(media: MediaType, bytes: &[u8]) -> anyhow::Result<Extracted> {
    std::panic::set_hook(Box::new(|_| {}));
    match std::panic::catch_unwind(|| extract(media, bytes)) {
        Ok(r) => Ok(r?),
        Err(panic) => {
            let msg = strata_engine::error::panic_message(panic.as_ref())
                .unwrap_or_else(|| "no message".into());
            bail!("the {} parser failed on this file: {msg}", media.as_str())
        }
    }
}

fn read_input(file: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(bytes)
}

/// `--media`: a MIME type (`text/html`) or a file extension (`html`, `md`).
fn to_mime(given: &str) -> anyhow::Result<&'static str> {
    MediaType::from_mime(given)
        .or_else(|| MediaType::from_filename(&format!("file.{given}")))
        .map(MediaType::as_str)
        .with_context(|| format!("--media {given}: not one of txt, md, html, pdf"))
}

/// Poppler in its own child, under the server's default limits.
fn with_poppler(pdftotext: std::path::PathBuf, bytes: Vec<u8>) -> anyhow::Result<Extracted> {
    let settings = ExtractSettings {
        pdf: PdfReader::Poppler(pdftotext),
        helper: None,
        ..ExtractSettings::default()
    };
    let child = settings
        .child_for(MediaType::Pdf)
        .context("poppler reads PDFs")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = strata_engine::jobs::JobSettings::default().extract_timeout;
    let stop = tokio_util::sync::CancellationToken::new();
    Ok(runtime.block_on(child.run(bytes, limit, &stop))?)
}

fn print(extracted: &Extracted, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        serde_json::to_writer(&mut out, extracted)?;
    } else {
        for (i, b) in extracted.blocks.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            let mark = if b.heading { "# " } else { "" };
            writeln!(out, "{sep}{mark}{}", b.text)?;
        }
    }
    out.flush()?;
    Ok(())
}
