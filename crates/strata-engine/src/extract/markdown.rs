//! Markdown: headings become heading blocks; paragraphs, list items, quotes, table rows and
//! code blocks become paragraph blocks. Markup and raw HTML are dropped.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::{Extracted, fold_whitespace_into};

pub(super) fn extract(text: &str) -> Extracted {
    let mut out = Extracted::default();
    let mut cur = String::new();
    let mut in_heading = false;
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    for event in Parser::new_ext(text, opts) {
        match event {
            Event::Start(Tag::Heading { .. }) => {
                out.push(&std::mem::take(&mut cur), false);
                in_heading = true;
            }
            Event::End(TagEnd::Heading(_)) => {
                out.push(&std::mem::take(&mut cur), true);
                in_heading = false;
            }
            Event::Start(Tag::CodeBlock(_)) => {
                out.push(&std::mem::take(&mut cur), in_heading);
            }
            Event::End(TagEnd::CodeBlock) => {
                out.push(&std::mem::take(&mut cur), false);
            }
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::BlockQuote(_)
                | TagEnd::TableRow
                | TagEnd::TableHead,
            ) if !in_heading => out.push(&std::mem::take(&mut cur), false),
            Event::Text(t) | Event::Code(t) => {
                // Code keeps its words; its layout is folded like prose.
                fold_whitespace_into(&mut cur, &t);
            }
            Event::SoftBreak | Event::HardBreak => fold_whitespace_into(&mut cur, " "),
            Event::End(TagEnd::TableCell) => fold_whitespace_into(&mut cur, " "),
            _ => {}
        }
    }
    out.push(&cur, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_and_paragraphs() {
        let x = extract("# Title\n\nSome *emphasis* and `code`.\n\n- one\n- two\n\n## Next\ntext");
        let got: Vec<(&str, bool)> = x
            .blocks
            .iter()
            .map(|b| (b.text.as_str(), b.heading))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Title", true),
                ("Some emphasis and code.", false),
                ("one", false),
                ("two", false),
                ("Next", true),
                ("text", false)
            ]
        );
    }

    #[test]
    fn raw_html_is_dropped() {
        let x = extract("<script>alert(1)</script>\n\nvisible");
        assert_eq!(x.blocks.len(), 1);
        assert_eq!(x.blocks[0].text, "visible");
    }
}
