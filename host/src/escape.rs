//! Guest-supplied text made safe to log: a handler must not be able to print a line that looks
//! like the host's own. Control characters (`\n`, `\r`, NUL, escape sequences, …) are written
//! as visible escapes, so one guest string is always one piece of one log line.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character escaped: `\n`, `\r`, `\t`, `\0` by name, the others as
/// `\u{..}`. Text without any is returned as is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(escape("plain text é"), "plain text é");
        assert_eq!(
            escape("a\nb\rc\0d\te\u{1b}[31m\u{7f}\u{85}"),
            "a\\nb\\rc\\0d\\te\\u{1b}[31m\\u{7f}\\u{85}"
        );
    }
}
