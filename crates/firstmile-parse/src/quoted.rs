//! Double-quoted strings, as several formats write them.

/// Reads up to the closing `"`; returns the content and what follows it.
/// `escape` says what the character after a backslash stands for; `None`
/// keeps the backslash and the character as they are. `None` overall: no
/// closing quote.
pub(crate) fn read_quoted(
    s: &str,
    escape: impl Fn(char) -> Option<char>,
) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match escape(e) {
                    Some(x) => out.push(x),
                    None => {
                        out.push('\\');
                        out.push(e);
                    }
                }
            }
            _ => out.push(c),
        }
    }
    None
}
