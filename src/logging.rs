//! Text logs that cannot be forged: one event is one line.
//!
//! tracing-subscriber escapes terminal escape sequences inside field values, but not line
//! breaks, so a value with a newline in it (a worker's error message, a Kafka or Druid error
//! text) could start what looks like a new log line of its own. [`OneLine`] wraps the
//! writer: within one formatted event, every line break and other control character but the
//! final newline, tabs and the colour codes of a terminal is written as a visible escape
//! (`\n`, `\u{7}`). tracing-subscriber has no option for this, hence this small writer.
//! JSON logs need nothing: JSON escapes by construction.

use std::io::{self, Write};
use tracing_subscriber::fmt::MakeWriter;

/// A `MakeWriter` that keeps each event on one line (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct OneLine<M> {
    inner: M,
    /// Colours are on: ESC stays (tracing-subscriber already escapes it inside values).
    ansi: bool,
}

impl<M> OneLine<M> {
    pub fn new(inner: M, ansi: bool) -> Self {
        OneLine { inner, ansi }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter {
            inner: self.inner.make_writer(),
            ansi: self.ansi,
        }
    }
}

pub struct OneLineWriter<W> {
    inner: W,
    ansi: bool,
}

impl<W: Write> Write for OneLineWriter<W> {
    /// tracing-subscriber formats a whole event into one buffer and writes it at once, so
    /// `buf` is one event; only its last byte may be a newline.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (text.as_ref(), ""),
        };
        let mut out = String::with_capacity(buf.len() + 8);
        for c in body.chars() {
            if c.is_control() && c != '\t' && !(self.ansi && c == '\u{1b}') {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        out.push_str(end);
        self.inner.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_on_one_line() {
        let mut out = Vec::new();
        {
            let mut w = OneLineWriter {
                inner: &mut out,
                ansi: false,
            };
            w.write_all(b"WARN worker=w1\n2026-01-01 INFO forged\r\x07 x\ty\n")
                .expect("write");
        }
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "WARN worker=w1\\n2026-01-01 INFO forged\\r\\u{7} x\ty\n"
        );
    }

    #[test]
    fn colours_stay_on_a_terminal() {
        let mut out = Vec::new();
        {
            let mut w = OneLineWriter {
                inner: &mut out,
                ansi: true,
            };
            w.write_all(b"\x1b[33mWARN\x1b[0m a\nb\n").expect("write");
        }
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "\x1b[33mWARN\x1b[0m a\\nb\n"
        );
    }
}
