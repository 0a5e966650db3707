//! HTML: visible text only. Scripts, styles, templates, the head and hidden elements are
//! skipped; block elements end a paragraph; `h1`-`h6` become heading blocks.

use scraper::{ElementRef, Html, Node};

use super::{Extracted, fold_whitespace_into};

const SKIP: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object", "canvas",
    "button", "select", "textarea",
];

const BLOCK: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "aside",
    "header",
    "footer",
    "nav",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "tr",
    "table",
    "blockquote",
    "pre",
    "br",
    "hr",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "address",
    "details",
    "summary",
    "body",
    "td",
    "th",
];

pub(super) fn extract(text: &str) -> Extracted {
    let doc = Html::parse_document(text);
    let mut out = Extracted::default();
    let mut cur = String::new();
    walk(doc.root_element(), &mut out, &mut cur);
    out.push(&cur, false);
    out
}

/// A step of the walk: enter an element, or leave one (closing its block).
enum Step<'a> {
    Enter(ElementRef<'a>),
    Text(&'a str),
    Leave {
        name: &'a str,
        block: bool,
        heading: bool,
    },
}

/// Depth-first over the element tree with an explicit stack, so a deeply nested page costs
/// memory, not the thread's stack. (Parsing such a page is quadratic in html5ever, which
/// scans the open elements per tag: 100,000 levels take about a minute, which the
/// extraction time limit bounds.)
fn walk(root: ElementRef<'_>, out: &mut Extracted, cur: &mut String) {
    let mut stack = vec![Step::Enter(root)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Enter(el) => {
                let name = el.value().name();
                if SKIP.contains(&name)
                    || el.value().attr("hidden").is_some()
                    || is_display_none(el)
                {
                    continue;
                }
                let heading = matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6");
                let block = heading || BLOCK.contains(&name);
                if block {
                    out.push(&std::mem::take(cur), false);
                }
                stack.push(Step::Leave {
                    name,
                    block,
                    heading,
                });
                // Children are pushed in reverse so they pop in document order.
                let children: Vec<_> = el.children().collect();
                for child in children.into_iter().rev() {
                    match child.value() {
                        Node::Text(t) => stack.push(Step::Text(&t.text)),
                        Node::Element(_) => {
                            if let Some(child_el) = ElementRef::wrap(child) {
                                stack.push(Step::Enter(child_el));
                            }
                        }
                        _ => {}
                    }
                }
            }
            Step::Text(t) => fold_whitespace_into(cur, t),
            Step::Leave {
                name,
                block,
                heading,
            } => {
                if block {
                    out.push(&std::mem::take(cur), heading);
                } else if matches!(name, "td" | "th" | "span" | "a") {
                    fold_whitespace_into(cur, " ");
                }
            }
        }
    }
}

fn is_display_none(el: ElementRef<'_>) -> bool {
    el.value().attr("style").is_some_and(|s| {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        s.to_ascii_lowercase().contains("display:none")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_only() {
        let x = extract(
            "<html><head><title>T</title><style>p{}</style></head><body>\
             <h1>Heading</h1><p>First <b>bold</b> para.</p><script>var x=1;</script>\
             <div hidden>secret</div><p style=\"display: none\">gone</p><p>Second</p></body></html>",
        );
        let got: Vec<(&str, bool)> = x
            .blocks
            .iter()
            .map(|b| (b.text.as_str(), b.heading))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Heading", true),
                ("First bold para.", false),
                ("Second", false)
            ]
        );
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        let depth = 20_000;
        let page = format!(
            "{}deep text{}",
            "<div><span>".repeat(depth),
            "</span></div>".repeat(depth)
        );
        // On a thread with a small stack, as a blocking pool's is: a recursive walk would
        // overflow it and abort the process.
        let x = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || extract(&page))
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(x.blocks.len(), 1);
        assert_eq!(x.blocks[0].text, "deep text");
    }
}
