//! Text extraction: turns an original file into [`Extracted`] blocks (paragraphs and
//! headings) for the chunker, and sniffs uploads so a file whose bytes contradict its name
//! is refused before it is stored.
//!
//! Extraction is CPU work on untrusted input. The server runs it in a child process under a
//! memory and a time limit ([`child`]: poppler's `pdftotext` for PDFs, the strata
//! executable's `extract` command for the rest); without a helper executable (library use,
//! tests) it runs on a blocking thread under the time limit with panics caught (see
//! [`crate::jobs`]). Whatever reads the file, what comes out is cleaned the same way: control
//! characters and Unicode noncharacters are dropped, and a block that is mostly unreadable
//! (replacement characters, private-use code points from fonts without a character map) is
//! not kept as text.
//!
//! Must not import: the store, HTTP types.

mod child;
mod html;
mod markdown;
mod pdf;

pub use child::{ChildError, ChildExtraction, ExtractSettings, MAX_TEXT_BYTES, PdfReader};

pub use crate::model::MediaType;

/// A unit of extracted text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    /// The text, whitespace-normalised.
    pub text: String,
    /// Whether it is a heading (a preferred chunk boundary).
    pub heading: bool,
}

/// The text content of a document, in reading order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extracted {
    /// Paragraphs and headings.
    pub blocks: Vec<Block>,
    /// Blocks left out because they were mostly unreadable characters.
    #[serde(default)]
    pub unreadable: usize,
}

impl Extracted {
    pub(crate) fn push(&mut self, text: &str, heading: bool) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let text = readable(text);
        let text = text.trim();
        if text.is_empty() || mostly_unreadable(text) {
            self.unreadable += 1;
            return;
        }
        self.blocks.push(Block {
            text: text.to_owned(),
            heading,
        });
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
    /// The file has a text layer, but none of it is readable: its fonts map glyphs to no
    /// characters.
    #[error(
        "the text layer holds no readable characters ({0} blocks of unmapped glyphs): its \
         fonts have no usable character map"
    )]
    Unreadable(usize),
    /// The file yields more text than one document may hold.
    #[error("the file yields more than {} MiB of text", .0 / (1024 * 1024))]
    TooMuchText(u64),
    /// The extractor failed on the file (crashed, was killed at its memory limit, or said why).
    #[error("{0}")]
    Crashed(String),
}

/// Extracts the text of `bytes` as `media`, in this process.
pub fn extract(media: MediaType, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let out = match media {
        MediaType::Text => plain(&decode_text(bytes)),
        MediaType::Markdown => markdown::extract(&decode_text(bytes)),
        MediaType::Html => html::extract(&decode_text(bytes)),
        MediaType::Pdf => pdf::extract(bytes)?,
    };
    out.or_no_text()
}

impl Extracted {
    /// `self`, or why it holds nothing.
    pub fn or_no_text(self) -> Result<Self, ExtractError> {
        match (self.blocks.is_empty(), self.unreadable) {
            (false, _) => Ok(self),
            (true, 0) => Err(ExtractError::NoText),
            (true, n) => Err(ExtractError::Unreadable(n)),
        }
    }
}

/// `text` without control characters (other than whitespace) and Unicode noncharacters
/// (U+FFFE, U+FFFF and their kin, which some PDF fonts map every glyph to), and with the
/// private-use code points of Adobe's expert fonts (small capitals, old-style figures) read
/// as the letters and digits they draw.
fn readable(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| (c.is_control() && !c.is_whitespace()) || is_noncharacter(c);
    if text.chars().any(|c| bad(c) || expert_glyph(c).is_some()) {
        std::borrow::Cow::Owned(
            text.chars()
                .filter(|c| !bad(*c))
                .map(|c| expert_glyph(c).unwrap_or(c))
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Adobe's Corporate Use assignments for expert fonts: U+F730-F739 old-style figures and
/// U+F761-F77A small capitals, which poppler passes through when a font maps its glyphs so.
fn expert_glyph(c: char) -> Option<char> {
    let u = c as u32;
    let base = match u {
        0xF730..=0xF739 => u - 0xF730 + u32::from(b'0'),
        0xF761..=0xF77A => u - 0xF761 + u32::from(b'a'),
        _ => return None,
    };
    char::from_u32(base)
}

fn is_noncharacter(c: char) -> bool {
    let u = c as u32;
    (0xFDD0..=0xFDEF).contains(&u) || u & 0xFFFE == 0xFFFE
}

/// More than half of the block's visible characters are U+FFFD or private-use code points:
/// glyphs the reader could not map to text.
fn mostly_unreadable(text: &str) -> bool {
    let (mut seen, mut bad) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        seen += 1;
        let u = c as u32;
        if c == '\u{FFFD}' || (0xE000..=0xF8FF).contains(&u) || (0xF0000..=0x10FFFF).contains(&u) {
            bad += 1;
        }
    }
    bad * 2 > seen
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
    fn garbage_is_dropped_and_expert_glyphs_are_read() {
        let mut x = Extracted::default();
        x.push("\u{FFFF}\u{FFFF}\u{FFFF}", false);
        x.push("\u{F8F2}\u{F8F3}", false);
        x.push("Keeps \u{FFFE}text", false);
        x.push("\u{F76F}\u{F770}\u{F765}\u{F76E} \u{F731}\u{F739}", false);
        // A block of U+FFFF only, and one of unmapped private-use glyphs.
        assert_eq!(x.unreadable, 2);
        let texts: Vec<&str> = x.blocks.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(texts, ["Keeps text", "open 19"]);
        assert!(matches!(
            Extracted {
                blocks: vec![],
                unreadable: 2
            }
            .or_no_text(),
            Err(ExtractError::Unreadable(2))
        ));
    }

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
