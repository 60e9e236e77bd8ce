//! Cutting byte streams into events. Pure logic, fed in chunks as bytes arrive.
//!
//! Line framing: an event ends at LF; a CR right before the LF belongs to the
//! terminator (the Loghub files, Windows senders and syslog over TCP use CRLF),
//! so the event's bytes are everything before it, untouched otherwise. A last
//! line without a terminator is an event too. Empty lines are reported as such
//! so callers can count them; they carry no event.
//!
//! Octet counting (RFC 6587): `MSG-LEN SP MSG`, where MSG-LEN is a decimal
//! without leading zeros; exactly MSG-LEN bytes follow.

use bytes::{Buf, Bytes, BytesMut};

/// One framed piece of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An event's bytes and the terminator that followed it (`\n`, `\r\n`, or
    /// empty for a last line without one), which multiline joining keeps.
    Event {
        bytes: Bytes,
        terminator: &'static [u8],
    },
    /// A line with nothing in it.
    Empty,
    /// An event longer than the limit, skipped whole; `len` bytes were dropped.
    TooLarge { len: usize },
}

/// Incremental line framing with a size limit per event.
#[derive(Debug)]
pub struct LineSplitter {
    buf: BytesMut,
    max: usize,
    /// Bytes of an oversize line already dropped, while skipping to its end.
    skipping: Option<usize>,
}

impl LineSplitter {
    pub fn new(max_event_bytes: usize) -> Self {
        LineSplitter {
            buf: BytesMut::new(),
            max: max_event_bytes,
            skipping: None,
        }
    }

    /// Adds bytes and returns the frames they complete.
    pub fn push(&mut self, data: &[u8]) -> Vec<Frame> {
        self.buf.extend_from_slice(data);
        let mut frames = Vec::new();
        loop {
            match memchr(b'\n', &self.buf) {
                Some(i) => {
                    let mut line = self.buf.split_to(i + 1).freeze();
                    line.truncate(i);
                    let crlf = line.last() == Some(&b'\r');
                    if crlf {
                        line.truncate(i - 1);
                    }
                    let terminator: &'static [u8] = if crlf { b"\r\n" } else { b"\n" };
                    if let Some(dropped) = self.skipping.take() {
                        frames.push(Frame::TooLarge {
                            len: dropped + line.len(),
                        });
                    } else {
                        frames.push(classify(line, terminator, self.max));
                    }
                }
                None => {
                    // Keep at most `max + 1` bytes of an unfinished line (the
                    // extra one may be the CR of a CRLF); drop the rest now so
                    // memory stays bounded.
                    if self.buf.len() > self.max + 1 {
                        let n = self.buf.len();
                        self.buf.clear();
                        *self.skipping.get_or_insert(0) += n;
                    }
                    return frames;
                }
            }
        }
    }

    /// Ends the stream: the unterminated rest, if any, is the last frame.
    pub fn finish(&mut self) -> Option<Frame> {
        let rest = self.buf.split().freeze();
        if let Some(dropped) = self.skipping.take() {
            return Some(Frame::TooLarge {
                len: dropped + rest.len(),
            });
        }
        (!rest.is_empty()).then(|| classify(rest, b"", self.max))
    }
}

fn classify(bytes: Bytes, terminator: &'static [u8], max: usize) -> Frame {
    if bytes.is_empty() {
        Frame::Empty
    } else if bytes.len() > max {
        Frame::TooLarge { len: bytes.len() }
    } else {
        Frame::Event { bytes, terminator }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Why an octet-counted stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("octet counting: expected a message length, found byte 0x{0:02x}")]
    NotALength(u8),
    #[error("octet counting: message length has more than 10 digits")]
    LengthTooLong,
}

/// Incremental RFC 6587 octet-counting decoder.
#[derive(Debug)]
pub struct OctetCounting {
    buf: BytesMut,
    max: usize,
    /// Length of the frame being read, once its header is complete.
    expecting: Option<usize>,
    /// Bytes of an oversize frame still to skip.
    skip: usize,
    skipped_len: usize,
}

impl OctetCounting {
    pub fn new(max_event_bytes: usize) -> Self {
        OctetCounting {
            buf: BytesMut::new(),
            max: max_event_bytes,
            expecting: None,
            skip: 0,
            skipped_len: 0,
        }
    }

    /// Adds bytes and appends the frames they complete to `frames`. An error
    /// means the stream cannot be framed any more (close the connection); the
    /// frames completed before it are in `frames` all the same.
    pub fn push(&mut self, data: &[u8], frames: &mut Vec<Frame>) -> Result<(), FramingError> {
        self.buf.extend_from_slice(data);
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(());
                }
                frames.push(Frame::TooLarge {
                    len: self.skipped_len,
                });
            }
            match self.expecting {
                None => {
                    // Senders may separate frames with stray newlines; skip them.
                    while matches!(self.buf.first(), Some(b'\n' | b'\r')) {
                        self.buf.advance(1);
                    }
                    let Some(space) = self.buf.iter().position(|&b| b == b' ') else {
                        if let Some(&bad) = self.buf.iter().find(|b| !b.is_ascii_digit()) {
                            return Err(FramingError::NotALength(bad));
                        }
                        if self.buf.len() > 10 {
                            return Err(FramingError::LengthTooLong);
                        }
                        return Ok(());
                    };
                    let digits = &self.buf[..space];
                    if let Some(&bad) = digits.iter().find(|b| !b.is_ascii_digit()) {
                        return Err(FramingError::NotALength(bad));
                    }
                    if digits.is_empty() || digits[0] == b'0' {
                        return Err(FramingError::NotALength(*digits.first().unwrap_or(&b' ')));
                    }
                    if digits.len() > 10 {
                        return Err(FramingError::LengthTooLong);
                    }
                    let len: usize = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse().ok())
                        .ok_or(FramingError::LengthTooLong)?;
                    self.buf.advance(space + 1);
                    if len > self.max {
                        self.skip = len;
                        self.skipped_len = len;
                        continue;
                    }
                    self.expecting = Some(len);
                }
                Some(len) => {
                    if self.buf.len() < len {
                        return Ok(());
                    }
                    let bytes = self.buf.split_to(len).freeze();
                    self.expecting = None;
                    frames.push(Frame::Event {
                        bytes,
                        terminator: b"",
                    });
                }
            }
        }
    }

    /// True when the stream ended in the middle of a frame.
    pub fn is_mid_frame(&self) -> bool {
        self.expecting.is_some() || self.skip > 0 || !self.buf.is_empty()
    }
}

/// RFC 6587 detection: an octet-counted stream starts with a non-zero digit,
/// a syslog message in newline framing with `<` (or anything else).
pub fn starts_octet_counted(first: u8) -> bool {
    matches!(first, b'1'..=b'9')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(frames: &[Frame]) -> Vec<&[u8]> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Event { bytes, .. } => Some(bytes.as_ref()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lines_split_on_lf_and_crlf_whatever_the_chunking() {
        let input = b"a b \r\nsecond\n\n\xff\xfe raw\r\nlast";
        for chunk in 1..input.len() {
            let mut s = LineSplitter::new(100);
            let mut frames = Vec::new();
            for part in input.chunks(chunk) {
                frames.extend(s.push(part));
            }
            frames.extend(s.finish());
            assert_eq!(
                events(&frames),
                vec![&b"a b "[..], b"second", b"\xff\xfe raw", b"last"],
                "chunk size {chunk}"
            );
            assert!(frames.contains(&Frame::Empty));
        }
    }

    #[test]
    fn an_oversize_line_is_dropped_whole_and_memory_stays_bounded() {
        let mut s = LineSplitter::new(10);
        let mut frames = s.push(b"ok\n");
        for _ in 0..1000 {
            frames.extend(s.push(&[b'x'; 100]));
            assert!(s.buf.len() <= 11);
        }
        frames.extend(s.push(b"\nafter\n"));
        assert_eq!(events(&frames), vec![&b"ok"[..], b"after"]);
        assert!(frames.contains(&Frame::TooLarge { len: 100_000 }));
    }

    #[test]
    fn octet_counting_reads_exact_lengths_across_chunks() {
        let input = b"11 <34>hello\r\n5 a\nb c12 with\nnewline";
        for chunk in 1..input.len() {
            let mut d = OctetCounting::new(100);
            let mut frames = Vec::new();
            for part in input.chunks(chunk) {
                d.push(part, &mut frames).unwrap();
            }
            assert_eq!(
                events(&frames),
                vec![&b"<34>hello\r\n"[..], b"a\nb c", b"with\nnewline"],
                "chunk size {chunk}"
            );
            assert!(!d.is_mid_frame());
        }
    }

    #[test]
    fn octet_counting_skips_oversize_frames_and_refuses_garbage() {
        let mut d = OctetCounting::new(4);
        let mut frames = Vec::new();
        d.push(b"6 abcdef3 xyz", &mut frames).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::TooLarge { len: 6 },
                Frame::Event {
                    bytes: Bytes::from_static(b"xyz"),
                    terminator: b""
                }
            ]
        );
        let push = |input: &[u8]| {
            let mut frames = Vec::new();
            let result = OctetCounting::new(9).push(input, &mut frames);
            (
                events(&frames)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>(),
                result,
            )
        };
        // Frames before the garbage are kept.
        assert_eq!(
            push(b"5 good!12x <34>"),
            (vec![b"good!".to_vec()], Err(FramingError::NotALength(b'x')))
        );
        assert_eq!(
            push(b"012 abc"),
            (vec![], Err(FramingError::NotALength(b'0')))
        );
        assert_eq!(
            push(b"123456789012"),
            (vec![], Err(FramingError::LengthTooLong))
        );
        assert!(starts_octet_counted(b'7') && !starts_octet_counted(b'<'));
    }
}
