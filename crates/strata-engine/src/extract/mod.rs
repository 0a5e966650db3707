//! Text extraction: turns an original file into [`Extracted`] blocks (paragraphs and
//! headings) for the chunker, and sniffs uploads so a file whose bytes contradict its name
//! is refused before it is stored.
//!
//! Extraction is CPU work on untrusted input: callers run it on a blocking thread under a
//! time limit with panics caught (see [`crate::jobs`]); nothing here touches the runtime.
//!
//! Must not import: the store, HTTP types.

mod html;
mod markdown;
mod pdf;

use crate::model::MediaType;

/// A unit of extracted text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The text, whitespace-normalised.
    pub text: String,
    /// Whether it is a heading (a preferred chunk boundary).
    pub heading: bool,
}

/// The text content of a document, in reading order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Paragraphs and headings.
    pub blocks: Vec<Block>,
}

impl Extracted {
    pub(crate) fn push(&mut self, text: &str, heading: bool) {
        let text = text.trim();
        if !text.is_empty() {
            self.blocks.push(Block {
                text: text.to_owned(),
                heading,
            });
        }
    }

    /// Total characters of text.
    pub fn char_len(&self) -> usize {
        self.blocks.iter().map(|b| b.text.len()).sum()
    }
}

/// Why a file could not be turned into text. Always permanent: retrying will not help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The PDF could not be parsed.
    #[error("PDF could not be read: {0}")]
    Pdf(String),
    /// The file parsed but contains no extractable text (e.g. a scanned PDF).
    #[error("no text could be extracted (a scanned PDF without a text layer?)")]
    NoText,
}

/// Extracts the text of `bytes` as `media`.
pub fn extract(media: MediaType, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let out = match media {
        MediaType::Text => plain(&decode_text(bytes)),
        MediaType::Markdown => markdown::extract(&decode_text(bytes)),
        MediaType::Html => html::extract(&decode_text(bytes)),
        MediaType::Pdf => pdf::extract(bytes)?,
    };
    if out.blocks.is_empty() {
        return Err(ExtractError::NoText);
    }
    Ok(out)
}

/// Plain text: paragraphs are separated by blank lines; lines inside one are joined.
fn plain(text: &str) -> Extracted {
    let mut out = Extracted::default();
    for para in split_paragraphs(text) {
        out.push(&para, false);
    }
    out
}

/// Splits on blank lines and folds the whitespace inside each paragraph.
pub(crate) fn split_paragraphs(text: &str) -> Vec<String> {
    let mut paras = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                paras.push(std::mem::take(&mut cur));
            }
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            fold_whitespace_into(&mut cur, line);
        }
    }
    if !cur.is_empty() {
        paras.push(cur);
    }
    paras
}

/// Appends `s` to `out` with every run of whitespace folded to one space.
pub(crate) fn fold_whitespace_into(out: &mut String, s: &str) {
    let mut last_space = out.is_empty() || out.ends_with(' ');
    for ch in s.chars() {
        if ch.is_whitespace() {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else if !ch.is_control() {
            out.push(ch);
            last_space = false;
        }
    }
}

/// Decodes text as UTF-8 (dropping a BOM); invalid sequences become U+FFFD rather than
/// failing the whole document.
fn decode_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// How many leading bytes [`sniff`] needs to decide.
pub const SNIFF_LEN: usize = 8192;

/// Decides the media type of an upload from what the client declared, the file name and the
/// first bytes. Returns `Err` with a reason when the type is unsupported or the bytes
/// contradict it (a binary file named `.pdf` or `.txt`).
pub fn sniff(
    declared: Option<&str>,
    filename: Option<&str>,
    head: &[u8],
) -> Result<MediaType, String> {
    let declared_type = declared
        .filter(|d| {
            let d = d.trim().to_ascii_lowercase();
            !d.is_empty() && !d.starts_with("application/octet-stream")
        })
        .map(|d| MediaType::from_mime(d).ok_or_else(|| format!("{d} is not supported")));
    let claimed = match declared_type {
        Some(r) => Some(r?),
        None => match filename.map(|f| (f, MediaType::from_filename(f))) {
            Some((_, Some(m))) => Some(m),
            Some((f, None)) if f.contains('.') => {
                return Err(format!(
                    "{f}: unsupported file type (supported: .txt, .md, .html, .pdf)"
                ));
            }
            _ => None,
        },
    };
    let is_pdf = head.len() >= 5
        && head[..head.len().min(1024)]
            .windows(5)
            .any(|w| w == b"%PDF-");
    match claimed {
        Some(MediaType::Pdf) if !is_pdf => Err("content is not a PDF (no %PDF- header)".to_owned()),
        Some(MediaType::Pdf) => Ok(MediaType::Pdf),
        Some(text_kind) => {
            if looks_like_text(head) {
                Ok(text_kind)
            } else {
                Err(format!("content is binary, not {}", text_kind.as_str()))
            }
        }
        None if is_pdf => Ok(MediaType::Pdf),
        None if looks_like_text(head) => {
            let lower = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
            let lower = lower.trim_start();
            if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
                Ok(MediaType::Html)
            } else {
                Ok(MediaType::Text)
            }
        }
        None => Err("content is neither text nor PDF".to_owned()),
    }
}

/// Text has no NUL bytes and is valid UTF-8, allowing a character cut at the end of `head`.
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paragraphs_fold_lines() {
        let x = plain("Hello\nworld.\n\n\n  Second   para \n");
        assert_eq!(x.blocks.len(), 2);
        assert_eq!(x.blocks[0].text, "Hello world.");
        assert_eq!(x.blocks[1].text, "Second para");
    }

    #[test]
    fn sniff_rejects_binary_named_pdf() {
        let err = sniff(None, Some("x.pdf"), &[0u8, 1, 2, 3, 255, 254]).unwrap_err();
        assert!(err.contains("not a PDF"), "{err}");
    }

    #[test]
    fn sniff_rejects_binary_named_txt() {
        assert!(sniff(None, Some("x.txt"), &[0u8, 159, 146, 150]).is_err());
    }

    #[test]
    fn sniff_accepts_utf8_cut_mid_character() {
        let s = "héllo".as_bytes();
        assert_eq!(sniff(None, Some("a.txt"), &s[..2]), Ok(MediaType::Text));
    }

    #[test]
    fn sniff_detects_without_hints() {
        assert_eq!(sniff(None, None, b"%PDF-1.7\n"), Ok(MediaType::Pdf));
        assert_eq!(
            sniff(None, None, b"<!DOCTYPE html><p>x"),
            Ok(MediaType::Html)
        );
        assert_eq!(sniff(None, None, b"just words"), Ok(MediaType::Text));
        assert!(sniff(Some("image/png"), None, b"x").is_err());
        assert!(sniff(None, Some("report.docx"), b"PK").is_err());
    }

    #[test]
    fn declared_type_wins_over_extension() {
        assert_eq!(
            sniff(
                Some("text/markdown; charset=utf-8"),
                Some("notes.txt"),
                b"# hi"
            ),
            Ok(MediaType::Markdown)
        );
    }
}
