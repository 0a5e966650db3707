//! PDF: the text layer, from poppler's `pdftotext` (see [`super::child`]) or through the
//! built-in `pdf-extract`. Scanned PDFs without a text layer yield
//! [`ExtractError::NoText`]; malformed ones an error (or, in the built-in parser, a panic,
//! which the child process or the job runner contains).

use super::{ExtractError, Extracted, split_paragraphs};

pub(super) fn extract(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let text =
        pdf_extract::extract_text_from_mem(bytes).map_err(|e| ExtractError::Pdf(e.to_string()))?;
    Ok(from_text(&text))
}

/// Blocks from a PDF's text: both readers separate pages with form feeds and paragraphs with
/// blank lines.
pub(super) fn from_text(text: &str) -> Extracted {
    let mut out = Extracted::default();
    for page in text.split('\u{c}') {
        for para in split_paragraphs(page) {
            out.push(&para, false);
        }
    }
    out
}
