//! Word documents and web pages: their text in sections under their headings.

use std::io::Read;

use super::{Outline, Section};

pub(super) fn docx(bytes: &[u8]) -> Result<Vec<Section>, String> {
    use quick_xml::events::Event;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("the Word document cannot be opened: {e}"))?;
    let mut xml = String::new();
    zip.by_name("word/document.xml")
        .map_err(|_| "the Word document has no body (word/document.xml)".to_owned())?
        .take(64 * 1024 * 1024)
        .read_to_string(&mut xml)
        .map_err(|e| format!("the Word document's body cannot be read: {e}"))?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut o = Outline::default();
    let mut para = String::new();
    let mut level: Option<u8> = None;
    let mut in_text = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("the Word document is damaged: {e}"))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "t" => in_text = true,
                "tab" => para.push('\t'),
                "br" | "cr" => para.push('\n'),
                "pStyle" => {
                    for a in e.attributes().flatten() {
                        if a.key.local_name().as_ref() == "val" {
                            level = heading_level(&a.value);
                        }
                    }
                }
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" => {
                    match level.take() {
                        Some(l) => o.heading(l, &para),
                        None => {
                            o.current.push_str(para.trim_end());
                            o.current.push('\n');
                        }
                    }
                    para.clear();
                }
                "tc" => para.push_str(" | "),
                _ => {}
            },
            Event::Text(t) if in_text => para.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if in_text => match r.resolve_char_ref() {
                Ok(Some(c)) => para.push(c),
                _ => para.push_str(match &*r {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                }),
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(o.finish())
}

/// "Heading2" → 2, "Title" → 1; other styles are body text.
fn heading_level(style: &str) -> Option<u8> {
    let s = style.to_ascii_lowercase();
    if s == "title" {
        return Some(1);
    }
    s.strip_prefix("heading")
        .and_then(|n| n.trim().parse::<u8>().ok())
        .map(|n| n.clamp(1, 9))
}

/// Elements whose text is page furniture, not content.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template",
    "iframe", "button", "select",
];
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "li",
    "tr",
    "pre",
    "blockquote",
    "section",
    "article",
    "dd",
    "dt",
    "table",
    "ul",
    "ol",
    "figcaption",
];

pub(super) fn html(text: &str) -> (Option<String>, Vec<Section>) {
    use scraper::{Html, Selector};
    let doc = Html::parse_document(text);
    let title = Selector::parse("title")
        .ok()
        .and_then(|s| doc.select(&s).next())
        .map(|t| {
            t.text()
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|t| !t.is_empty());
    // The readable part: <main> or <article> when the page marks it, else <body>.
    let root = ["main", "article", "body"]
        .iter()
        .filter_map(|s| Selector::parse(s).ok())
        .find_map(|s| doc.select(&s).next())
        .unwrap_or_else(|| doc.root_element());
    let mut o = Outline::default();
    walk(*root, &mut o);
    (title, o.finish())
}

fn walk(node: ego_tree::NodeRef<'_, scraper::Node>, o: &mut Outline) {
    for child in node.children() {
        match child.value() {
            scraper::Node::Text(t) => {
                let t: &str = t.text.as_ref();
                let collapsed = t.split_whitespace().collect::<Vec<_>>().join(" ");
                if !collapsed.is_empty() {
                    if !o.current.is_empty()
                        && !o.current.ends_with(['\n', ' '])
                        && t.starts_with(char::is_whitespace)
                    {
                        o.current.push(' ');
                    }
                    o.current.push_str(&collapsed);
                    if t.ends_with(char::is_whitespace) {
                        o.current.push(' ');
                    }
                }
            }
            scraper::Node::Element(e) => {
                let name = e.name();
                if SKIPPED.contains(&name) {
                    continue;
                }
                if let Some(level) = name
                    .strip_prefix('h')
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|n| (1..=6).contains(n))
                {
                    let mut h = Outline::default();
                    walk(child, &mut h);
                    o.heading(level, &h.current);
                    continue;
                }
                if name == "br" {
                    o.current.push('\n');
                    continue;
                }
                let block = BLOCKS.contains(&name);
                if block {
                    o.paragraph_break();
                }
                walk(child, o);
                if matches!(name, "td" | "th") {
                    o.current.push_str(" | ");
                }
                if block {
                    o.paragraph_break();
                }
            }
            _ => {}
        }
    }
}
