//! Splitting sections into passages: the unit of search and of citation.
//!
//! A chunk never spans two sections, so it keeps its page or heading. Inside a section,
//! paragraphs are packed up to [`MAX_CHARS`]; a longer paragraph is cut at sentence
//! ends, then at spaces, never inside a character. About 1,200 characters (≈ 300
//! tokens) is long enough to carry a fact with its context and short enough that five
//! passages fit any model's prompt.

use super::extract::Section;

/// Most characters in one chunk.
pub const MAX_CHARS: usize = 1200;

#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub location: String,
    pub text: String,
}

/// The chunks of `sections`, in document order.
pub fn split(sections: &[Section]) -> Vec<Piece> {
    let mut out = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        let location = if s.location.is_empty() {
            if sections.len() == 1 {
                String::new()
            } else {
                format!("part {}", i + 1)
            }
        } else {
            s.location.clone()
        };
        let start = out.len();
        let mut current = String::new();
        for para in paragraphs(&s.text) {
            for piece in cut(para, MAX_CHARS) {
                if !current.is_empty() && current.len() + piece.len() + 2 > MAX_CHARS {
                    out.push(Piece {
                        location: location.clone(),
                        text: std::mem::take(&mut current),
                    });
                }
                if !current.is_empty() {
                    current.push_str("\n\n");
                }
                current.push_str(piece);
            }
        }
        if !current.trim().is_empty() {
            out.push(Piece {
                location: location.clone(),
                text: current,
            });
        }
        // A plain text's passages are numbered so each citation points somewhere.
        if location.is_empty() && out.len() - start > 1 {
            for (n, p) in out[start..].iter_mut().enumerate() {
                p.location = format!("part {}", n + 1);
            }
        }
    }
    out
}

/// Blank-line separated paragraphs, trimmed, empty ones dropped.
fn paragraphs(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n\n").map(str::trim).filter(|p| !p.is_empty())
}

/// `text` in pieces of at most `max` bytes, cut at a sentence end, else a space, else
/// a character boundary.
fn cut(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut end = max;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let window = &rest[..end];
        let at = window
            .rfind(['.', '!', '?', '。', '！', '？'])
            .filter(|&i| i > max / 3)
            .map(|i| i + window[i..].chars().next().map_or(1, char::len_utf8))
            .or_else(|| window.rfind(char::is_whitespace).filter(|&i| i > max / 3))
            .unwrap_or(end);
        let (head, tail) = rest.split_at(at);
        if !head.trim().is_empty() {
            out.push(head.trim());
        }
        rest = tail.trim_start();
    }
    if !rest.trim().is_empty() {
        out.push(rest.trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(location: &str, text: &str) -> Section {
        Section {
            location: location.into(),
            text: text.into(),
        }
    }

    #[test]
    fn chunks_keep_their_section_and_size() {
        let long = "Word ".repeat(600);
        let pieces = split(&[section("page 1", "Short intro."), section("page 2", &long)]);
        assert_eq!(pieces[0].location, "page 1");
        assert!(pieces.len() >= 4);
        for p in &pieces[1..] {
            assert_eq!(p.location, "page 2");
            assert!(p.text.len() <= MAX_CHARS, "{}", p.text.len());
        }
    }

    #[test]
    fn multibyte_text_is_never_cut_inside_a_character() {
        let text = "日本語の文章です".repeat(200);
        for p in split(&[section("", &text)]) {
            assert!(p.text.len() <= MAX_CHARS);
            assert!(p.location.starts_with("part "));
        }
    }

    #[test]
    fn small_paragraphs_are_packed_together() {
        let pieces = split(&[section("", "One.\n\nTwo.\n\nThree.")]);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].text, "One.\n\nTwo.\n\nThree.");
        assert_eq!(pieces[0].location, "");
    }
}
