//! PDF: the text layer, through `pdf-extract`. Scanned PDFs without a text layer yield
//! [`ExtractError::NoText`]; malformed ones an error (or a panic, which the job runner
//! catches).

use super::{ExtractError, Extracted, split_paragraphs};

pub(super) fn extract(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let text =
        pdf_extract::extract_text_from_mem(bytes).map_err(|e| ExtractError::Pdf(e.to_string()))?;
    let mut out = Extracted::default();
    // pdf-extract separates pages with form feeds and paragraphs with blank lines.
    for page in text.split('\u{c}') {
        for para in split_paragraphs(page) {
            out.push(&para, false);
        }
    }
    Ok(out)
}
