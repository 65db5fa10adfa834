//! From a file's bytes to its text, in sections that know where they are: a PDF's
//! pages, a Word document's or web page's headings, a spreadsheet's rows.
//!
//! The type is decided by the content, not the name: a "report.pdf" that is really a
//! PNG is refused, naming what it is. Extraction runs on a blocking thread inside the
//! ingestion job (never in a request); PDF parsing of hostile files may panic inside the
//! parser, which the caller catches and reports as a corrupt file.

use serde::{Deserialize, Serialize};

use markup::{docx, html};

mod markup;

/// The formats we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Pdf,
    Docx,
    Markdown,
    Text,
    Html,
    Csv,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Docx => "docx",
            Self::Markdown => "markdown",
            Self::Text => "text",
            Self::Html => "html",
            Self::Csv => "csv",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pdf" => Self::Pdf,
            "docx" => Self::Docx,
            "markdown" => Self::Markdown,
            "text" => Self::Text,
            "html" => Self::Html,
            "csv" => Self::Csv,
            _ => return None,
        })
    }
}

/// A run of text and where it sits in its document.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// "page 3", "Pricing › Enterprise", "rows 2–21", or empty for a plain text.
    pub location: String,
    pub text: String,
}

/// A document's text.
#[derive(Debug, Default)]
pub struct Extracted {
    /// The title the document gives itself (an HTML `<title>`), if any.
    pub title: Option<String>,
    pub sections: Vec<Section>,
    /// Something the reader should know (text that was not UTF-8, say).
    pub warning: Option<String>,
}

/// Decides the type of an upload from its content, using the name and declared
/// content type only to tell text formats apart. `Err` names what the content is.
pub fn detect(filename: &str, declared: Option<&str>, bytes: &[u8]) -> Result<MediaType, String> {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let declared = declared
        .map(|d| {
            d.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if bytes.starts_with(b"%PDF-") {
        return Ok(MediaType::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return if is_docx(bytes) {
            Ok(MediaType::Docx)
        } else {
            Err("a ZIP archive that is not a Word (.docx) document".into())
        };
    }
    if let Some(what) = known_binary(bytes) {
        return Err(what.into());
    }
    let claims_binary = matches!(ext.as_str(), "pdf" | "docx" | "doc")
        || declared == "application/pdf"
        || declared.contains("officedocument")
        || declared == "application/msword";
    if bytes.contains(&0) {
        return Err("binary data (not text, PDF or DOCX)".into());
    }
    if claims_binary {
        return Err(format!(
            "plain text, although it is named or declared as {}",
            if ext.is_empty() { &declared } else { &ext }
        ));
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
    let head = head.trim_start_matches('\u{feff}').trim_start();
    Ok(
        if matches!(ext.as_str(), "html" | "htm")
            || declared == "text/html"
            || head.starts_with("<!doctype html")
            || head.starts_with("<html")
        {
            MediaType::Html
        } else if matches!(ext.as_str(), "md" | "markdown") || declared == "text/markdown" {
            MediaType::Markdown
        } else if ext == "csv" || declared == "text/csv" {
            MediaType::Csv
        } else {
            MediaType::Text
        },
    )
}

fn is_docx(bytes: &[u8]) -> bool {
    zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map(|mut z| z.by_name("word/document.xml").is_ok())
        .unwrap_or(false)
}

/// Common binary formats, by their first bytes.
fn known_binary(b: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"RIFF", "a RIFF media file (WebP, WAV or AVI)"),
        (b"MZ", "a Windows executable"),
        (b"\x7fELF", "an ELF executable"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"Rar!", "a RAR archive"),
        (b"7z\xbc\xaf", "a 7-Zip archive"),
        (
            b"\xd0\xcf\x11\xe0",
            "an old Office document (.doc/.xls); save it as .docx or PDF",
        ),
        (b"ID3", "an MP3 audio file"),
    ];
    MAGIC
        .iter()
        .find(|(m, _)| b.starts_with(m))
        .map(|(_, what)| *what)
}

/// Text of a text-family file; bytes that are not UTF-8 are replaced (and said so).
fn text_of(bytes: &[u8], warning: &mut Option<String>) -> String {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            *warning = Some(
                "the file is not valid UTF-8; unreadable characters were replaced (save it as UTF-8 and upload it again)"
                    .into(),
            );
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// Extracts `bytes` of `media` type. `Err` is a reason a person can act on.
pub fn extract(media: MediaType, bytes: &[u8]) -> Result<Extracted, String> {
    let mut out = Extracted::default();
    match media {
        MediaType::Pdf => out.sections = pdf(bytes)?,
        MediaType::Docx => out.sections = docx(bytes)?,
        MediaType::Markdown => {
            let text = text_of(bytes, &mut out.warning);
            out.sections = markdown(&text);
        }
        MediaType::Text => {
            let text = text_of(bytes, &mut out.warning);
            out.sections = vec![Section {
                location: String::new(),
                text,
            }];
        }
        MediaType::Html => {
            let text = text_of(bytes, &mut out.warning);
            let (title, sections) = html(&text);
            out.title = title;
            out.sections = sections;
        }
        MediaType::Csv => {
            let text = text_of(bytes, &mut out.warning);
            out.sections = csv_rows(&text)?;
        }
    }
    out.sections.retain(|s| !s.text.trim().is_empty());
    Ok(out)
}

fn pdf(bytes: &[u8]) -> Result<Vec<Section>, String> {
    let doc = lopdf::Document::load_mem(bytes)
        .map_err(|e| format!("the PDF cannot be read (damaged or not a PDF): {e}"))?;
    let encrypted = doc.is_encrypted();
    drop(doc);
    let pages = pdf_extract::extract_text_from_mem_by_pages(bytes).map_err(|e| {
        let e = e.to_string();
        // pdf-extract opens encrypted documents with an empty user password; anything
        // else is locked to us.
        if encrypted || e.to_ascii_lowercase().contains("crypt") {
            "the PDF is encrypted with a password; upload an unlocked copy".to_owned()
        } else {
            format!("the PDF's text cannot be read: {e}")
        }
    })?;
    Ok(pages
        .into_iter()
        .enumerate()
        .map(|(i, text)| Section {
            location: format!("page {}", i + 1),
            text: tidy(&text),
        })
        .collect())
}

/// Collapses runs of blank lines and trailing spaces (PDF text is full of both).
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

/// Heading path → sections, shared by the structured formats.
#[derive(Default)]
struct Outline {
    headings: Vec<(u8, String)>,
    sections: Vec<Section>,
    current: String,
}

impl Outline {
    fn location(&self) -> String {
        self.headings
            .iter()
            .map(|(_, h)| h.as_str())
            .collect::<Vec<_>>()
            .join(" › ")
    }
    fn flush(&mut self) {
        let text = std::mem::take(&mut self.current);
        if !text.trim().is_empty() {
            self.sections.push(Section {
                location: self.location(),
                text: text.trim().to_owned(),
            });
        }
    }
    fn heading(&mut self, level: u8, text: &str) {
        self.flush();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return;
        }
        self.headings.retain(|(l, _)| *l < level);
        self.headings.push((level, text));
    }
    fn paragraph_break(&mut self) {
        if !self.current.is_empty() && !self.current.ends_with("\n\n") {
            self.current.push_str("\n\n");
        }
    }
    fn finish(mut self) -> Vec<Section> {
        self.flush();
        self.sections
    }
}

fn markdown(text: &str) -> Vec<Section> {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut o = Outline::default();
    let mut heading: Option<(u8, String)> = None;
    for ev in Parser::new(text) {
        match ev {
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((level as u8, String::new()))
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, h)) = heading.take() {
                    o.heading(level, &h);
                }
            }
            Event::Text(t) | Event::Code(t) => match &mut heading {
                Some((_, h)) => h.push_str(&t),
                None => o.current.push_str(&t),
            },
            Event::SoftBreak | Event::HardBreak => match &mut heading {
                Some((_, h)) => h.push(' '),
                None => o.current.push('\n'),
            },
            Event::End(TagEnd::Paragraph | TagEnd::CodeBlock | TagEnd::BlockQuote(_)) => {
                o.paragraph_break()
            }
            Event::End(TagEnd::Item) | Event::End(TagEnd::TableRow) => o.current.push('\n'),
            Event::End(TagEnd::TableCell) => o.current.push_str(" | "),
            Event::Start(Tag::Item) => o.current.push_str("- "),
            _ => {}
        }
    }
    o.finish()
}

/// Rows per CSV section: small enough to cite, big enough to carry context.
const CSV_ROWS: usize = 20;

fn csv_rows(text: &str) -> Result<Vec<Section>, String> {
    let delimiter = crate::imports::detect_delimiter(text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the CSV cannot be read: {e}"))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut sections = Vec::new();
    let mut block = String::new();
    let mut first = 2;
    let mut line = 1;
    for row in reader.records() {
        let row = row.map_err(|e| format!("the CSV cannot be read: {e}"))?;
        line += 1;
        let fields: Vec<String> = row
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(i, v)| match headers.get(i).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h}: {}", v.trim()),
                None => v.trim().to_owned(),
            })
            .collect();
        block.push_str(&fields.join("; "));
        block.push('\n');
        if (line - first + 1) as usize >= CSV_ROWS {
            sections.push(Section {
                location: format!("rows {first}–{line}"),
                text: std::mem::take(&mut block),
            });
            first = line + 1;
        }
    }
    if !block.trim().is_empty() {
        sections.push(Section {
            location: if first == line {
                format!("row {line}")
            } else {
                format!("rows {first}–{line}")
            },
            text: block,
        });
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides_the_type() {
        assert_eq!(detect("a.pdf", None, b"%PDF-1.7 ..."), Ok(MediaType::Pdf));
        assert_eq!(detect("notes.txt", None, b"%PDF-1.4"), Ok(MediaType::Pdf));
        let e = detect("report.pdf", Some("application/pdf"), b"\x89PNG\r\n").unwrap_err();
        assert!(e.contains("PNG"), "{e}");
        let e = detect("report.pdf", None, b"just words").unwrap_err();
        assert!(e.contains("plain text"), "{e}");
        assert_eq!(detect("x.md", None, b"# Hi"), Ok(MediaType::Markdown));
        assert_eq!(
            detect("x", None, b"<!DOCTYPE html><p>x"),
            Ok(MediaType::Html)
        );
        assert_eq!(detect("x.csv", None, b"a,b\n1,2"), Ok(MediaType::Csv));
        assert_eq!(detect("x.bin", None, b"plain"), Ok(MediaType::Text));
    }

    #[test]
    fn markdown_sections_follow_headings() {
        let s = markdown("# Pricing\nIntro.\n\n## Enterprise\nCosts **more**.\n\n# FAQ\nAsk.");
        let locs: Vec<_> = s.iter().map(|s| s.location.as_str()).collect();
        assert_eq!(locs, ["Pricing", "Pricing › Enterprise", "FAQ"]);
        assert!(s[1].text.contains("Costs more."));
    }

    #[test]
    fn html_keeps_content_and_drops_furniture() {
        let (title, s) = html(
            "<html><head><title> Acme  plans </title><script>var x='secret'</script></head>\
             <body><nav>Home | About</nav><main><h1>Plans</h1><p>Gold costs <b>9</b> a month.</p>\
             <h2>Support</h2><p>Email us.</p></main><footer>©</footer></body></html>",
        );
        assert_eq!(title.as_deref(), Some("Acme plans"));
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].location, "Plans");
        assert!(
            s[0].text.contains("Gold costs 9 a month."),
            "{:?}",
            s[0].text
        );
        assert_eq!(s[1].location, "Plans › Support");
        let all: String = s.iter().map(|s| s.text.clone()).collect();
        assert!(!all.contains("secret") && !all.contains("Home"));
    }

    #[test]
    fn csv_rows_are_labelled_by_header() {
        let text = "name,price\n".to_owned()
            + &(1..=25)
                .map(|i| format!("item{i},{i}\n"))
                .collect::<String>();
        let s = csv_rows(&text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].location, "rows 2–21");
        assert!(s[0].text.starts_with("name: item1; price: 1"));
        assert_eq!(s[1].location, "rows 22–26");
    }

    #[test]
    fn tidy_collapses_blank_runs() {
        assert_eq!(tidy("a  \n\n\n\nb\nc\n\n"), "a\n\nb\nc");
    }
}
