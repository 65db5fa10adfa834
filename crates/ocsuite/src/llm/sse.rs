//! Line framing for a Server-Sent Events body that arrives in arbitrary network chunks.
//!
//! A chunk boundary can fall inside a multi-byte UTF-8 character ("é", "€", an emoji),
//! so chunks are kept as bytes and only whole lines are decoded: decoding each chunk on
//! its own would turn both halves of a split character into U+FFFD in the answer.

/// Bytes received but not yet split into lines.
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Where the next search for `\n` starts: bytes before it hold no newline.
    scanned: usize,
}

impl Lines {
    /// Appends one network chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line without its `\n` / `\r\n` ending, decoded as UTF-8 (a
    /// byte sequence that is invalid within a whole line becomes U+FFFD). `None` until
    /// a line is complete.
    pub fn next_line(&mut self) -> Option<String> {
        let nl = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
        let Some(offset) = nl else {
            self.scanned = self.buf.len();
            return None;
        };
        let end = self.scanned + offset;
        let mut line = &self.buf[..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let text = String::from_utf8_lossy(line).into_owned();
        self.buf.drain(..=end);
        self.scanned = 0;
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    fn all(lines: &mut Lines) -> Vec<String> {
        std::iter::from_fn(|| lines.next_line()).collect()
    }

    #[test]
    fn a_character_split_across_chunks_is_joined_before_decoding() {
        let text = "data: Grüße € 🚀\r\n\n";
        let bytes = text.as_bytes();
        // Every split point, including those inside "ü", "ß", "€" and the emoji.
        for cut in 0..bytes.len() {
            let mut lines = Lines::default();
            lines.push(&bytes[..cut]);
            let mut got = all(&mut lines);
            lines.push(&bytes[cut..]);
            got.extend(all(&mut lines));
            assert_eq!(got, vec!["data: Grüße € 🚀".to_string(), String::new()]);
        }
    }

    #[test]
    fn byte_by_byte_delivery_yields_the_same_lines() {
        let bytes = "a\nbé\r\n\nc".as_bytes();
        let mut lines = Lines::default();
        let mut got = Vec::new();
        for b in bytes {
            lines.push(std::slice::from_ref(b));
            got.extend(all(&mut lines));
        }
        assert_eq!(got, vec!["a", "bé", ""]);
        // An unterminated last line stays buffered.
        assert_eq!(lines.next_line(), None);
    }
}
